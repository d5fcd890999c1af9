"""CIFAR-10, DenseNet-BC k=12 16-16-16 (0.77M parameters).

Run: python -m dxnet_jax.main --config configs/cifar10_densenet_bc_16.py
       --workdir runs/cifar10_densenet_bc_16
"""

from dxnet_jax import experiments


def get_config():
  return experiments.classification('cifar10', 'densenet_bc_k12_16')
