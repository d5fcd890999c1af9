"""x4 super-resolution, DxNet32 (k=32, 4-6-8, 1.23M parameters) on T91 + BSD200.

Run: python -m dxnet_jax.main --config configs/sr_dxnet32.py --workdir runs/sr_dxnet32
"""

from dxnet_jax import experiments


def get_config():
  return experiments.super_resolution('dxnet32_sr')
