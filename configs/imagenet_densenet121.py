"""ImageNet, DenseNet-121 (7.98M parameters). Needs TFDS_DATA_DIR / --config.data.data_dir.

Run: python -m dxnet_jax.main --config configs/imagenet_densenet121.py
       --workdir runs/imagenet_densenet121
"""

from dxnet_jax import experiments


def get_config():
  return experiments.classification('imagenet2012', 'densenet121')
