"""Gray Gaussian denoising, DxNet 4-4-4 k=16 (140K parameters) on Train400.

Run: python -m dxnet_jax.main --config configs/denoise_dxnet_444.py --workdir runs/denoise_dxnet_444
Other noise levels: --config configs/denoise_dxnet_444.py:25 (sigma 15, 25 or 50; default 50).
"""

from dxnet_jax import experiments


def get_config(sigma=''):
  return experiments.denoising('dxnet_denoise_444', experiments.parse_sigma(sigma))
