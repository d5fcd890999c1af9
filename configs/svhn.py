"""SVHN classification (tfds `svhn_cropped`): DenseNet-BC and DxNet, the paper's recipe.

Recipe (the paper's where it says; DenseNet's SVHN protocol where it does not):
  data       train + extra for training, test for validation; no augmentation; pixels in [0, 1]
  model      dropout 0.2 after each convolution
  optimiser  SGD, Nesterov momentum 0.9, weight decay 5e-4, lr 0.1, batch 128
  schedule   lr halved when the validation loss plateaus (patience 10 epochs: ours)
  length     100 epochs

Argument: MODEL, one of densenet_bc_16, densenet_bc_26, dxnet_12, dxnet_19.
  python -m dxnet_jax.main --config configs/svhn.py:dxnet_12 --workdir runs/svhn_dxnet_12 \
    --config.data.data_dir=TFDS_DATA_DIR
"""

from configs import cifar10
from configs import common


def get_config(arg='dxnet_12'):
  arg = common.parse_arg(arg, model='dxnet_12')
  model = common.choose(arg.model, cifar10.MODELS, 'SVHN model')
  config = common.trainer('classification', model, (32, 32, 3), name='svhn_cropped')
  config.data.update(
      source='tfds',
      train_split='train+extra',
      validation_split='test',
      augment='none',
      normalize=False,
  )
  config.model.dropout_rate = 0.2
  config.optim = common.sgd_on_plateau()
  config.batch_size = 128
  config.num_epochs = 100
  return config
