"""Gray Gaussian denoising, DnCNN-S (17 layers, 556K parameters) on Train400: the reference.

Run: python -m dxnet_jax.main --config configs/denoise_dncnn.py --workdir runs/denoise_dncnn
Other noise levels: --config configs/denoise_dncnn.py:25 (sigma 15, 25 or 50; default 50).
"""

from dxnet_jax import experiments


def get_config(sigma=''):
  return experiments.denoising('dncnn', experiments.parse_sigma(sigma))
