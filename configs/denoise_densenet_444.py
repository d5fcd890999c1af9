"""Gray Gaussian denoising, DenseNet 4-4-4 k=16 (111K parameters) on Train400.

Run: python -m dxnet_jax.main --config configs/denoise_densenet_444.py
       --workdir runs/denoise_densenet_444
Other noise levels: --config configs/denoise_densenet_444.py:25 (sigma 15, 25 or 50; default 50).
"""

from dxnet_jax import experiments


def get_config(sigma=''):
  return experiments.denoising('densenet_denoise_444', experiments.parse_sigma(sigma))
