"""x4 super-resolution, DxNet16 (k=16, 4-4-4-6-8-8, 0.84M parameters) on T91 + BSD200.

Run: python -m dxnet_jax.main --config configs/sr_dxnet16.py --workdir runs/sr_dxnet16
"""

from dxnet_jax import experiments


def get_config():
  return experiments.super_resolution('dxnet16_sr')
