"""CIFAR-10, DenseNet-BC k=12 26-26-26 (1.74M parameters).

Run: python -m dxnet_jax.main --config configs/cifar10_densenet_bc_26.py
       --workdir runs/cifar10_densenet_bc_26
"""

from dxnet_jax import experiments


def get_config():
  return experiments.classification('cifar10', 'densenet_bc_k12_26')
