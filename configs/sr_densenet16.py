"""x4 super-resolution, DenseNet counterpart of DxNet16 (ReLU, 0.78M parameters).

Run: python -m dxnet_jax.main --config configs/sr_densenet16.py --workdir runs/sr_densenet16
"""

from dxnet_jax import experiments


def get_config():
  return experiments.super_resolution('densenet16_sr')
