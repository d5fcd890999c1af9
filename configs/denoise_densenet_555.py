"""Gray Gaussian denoising, DenseNet 5-5-5 k=16 (147K, about DxNet 4-4-4's size) on Train400.

Run: python -m dxnet_jax.main --config configs/denoise_densenet_555.py
       --workdir runs/denoise_densenet_555
Other noise levels: --config configs/denoise_densenet_555.py:25 (sigma 15, 25 or 50; default 50).
"""

from dxnet_jax import experiments


def get_config(sigma=''):
  return experiments.denoising('densenet_denoise_555', experiments.parse_sigma(sigma))
