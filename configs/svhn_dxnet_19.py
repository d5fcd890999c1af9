"""SVHN, DxNet k=12 19-19-19 with dropout 0.2.

Run: python -m dxnet_jax.main --config configs/svhn_dxnet_19.py --workdir runs/svhn_dxnet_19
"""

from dxnet_jax import experiments


def get_config():
  return experiments.classification('svhn_cropped', 'dxnet_k12_19')
