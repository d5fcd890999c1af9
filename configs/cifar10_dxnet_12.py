"""CIFAR-10, DxNet k=12 12-12-12 (0.53M parameters).

Run: python -m dxnet_jax.main --config configs/cifar10_dxnet_12.py --workdir runs/cifar10_dxnet_12
"""

from dxnet_jax import experiments


def get_config():
  return experiments.classification('cifar10', 'dxnet_k12_12')
