"""SVHN, DenseNet-BC k=12 26-26-26 with dropout 0.2.

Run: python -m dxnet_jax.main --config configs/svhn_densenet_bc_26.py
       --workdir runs/svhn_densenet_bc_26
"""

from dxnet_jax import experiments


def get_config():
  return experiments.classification('svhn_cropped', 'densenet_bc_k12_26')
