"""x4 super-resolution, DenseNet counterpart of DxNet32 (ReLU, 1.15M parameters).

Run: python -m dxnet_jax.main --config configs/sr_densenet32.py --workdir runs/sr_densenet32
"""

from dxnet_jax import experiments


def get_config():
  return experiments.super_resolution('densenet32_sr')
