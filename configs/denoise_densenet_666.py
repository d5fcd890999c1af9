"""Gray Gaussian denoising, DenseNet 6-6-6 k=16 (188K parameters) on Train400.

Run: python -m dxnet_jax.main --config configs/denoise_densenet_666.py
       --workdir runs/denoise_densenet_666
Other noise levels: --config configs/denoise_densenet_666.py:25 (sigma 15, 25 or 50; default 50).
"""

from dxnet_jax import experiments


def get_config(sigma=''):
  return experiments.denoising('densenet_denoise_666', experiments.parse_sigma(sigma))
