"""ImageNet, DxNet-105 (6-12-20-12, k=32, 6.48M parameters). Needs --config.data.data_dir.

Run: python -m dxnet_jax.main --config configs/imagenet_dxnet105.py --workdir runs/imagenet_dxnet105
"""

from dxnet_jax import experiments


def get_config():
  return experiments.classification('imagenet2012', 'dxnet105')
