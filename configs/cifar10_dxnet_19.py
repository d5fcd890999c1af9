"""CIFAR-10, DxNet k=12 19-19-19 (1.09M parameters).

Run: python -m dxnet_jax.main --config configs/cifar10_dxnet_19.py --workdir runs/cifar10_dxnet_19
"""

from dxnet_jax import experiments


def get_config():
  return experiments.classification('cifar10', 'dxnet_k12_19')
