"""Gray Gaussian denoising, DxNet 6-6-6 k=16 (227K parameters) on Train400.

Run: python -m dxnet_jax.main --config configs/denoise_dxnet_666.py --workdir runs/denoise_dxnet_666
Other noise levels: --config configs/denoise_dxnet_666.py:25 (sigma 15, 25 or 50; default 50).
"""

from dxnet_jax import experiments


def get_config(sigma=''):
  return experiments.denoising('dxnet_denoise_666', experiments.parse_sigma(sigma))
