"""ImageNet classification (tfds `imagenet2012`): DenseNet-121 and DxNet-105.

Recipe (the paper's where it says; DenseNet's ImageNet protocol where it does not):
  data       random-resized 224 crops and flips for training, 256-resize + centre crop for
             validation; ImageNet mean/std normalisation
  model      memory-efficient dense blocks (remat: whole layers recomputed)
  optimiser  SGD, Nesterov momentum 0.9, weight decay 5e-4, lr 0.1, batch 256
  schedule   lr halved when the validation loss plateaus (patience 10 epochs: ours)
  length     90 epochs

Argument: MODEL, densenet121 (7.98M parameters) or dxnet105 (6-12-20-12, k=32, 6.48M).
  python -m dxnet_jax.main --config configs/imagenet.py:dxnet105 --workdir runs/imagenet_dxnet105 \
    --config.data.data_dir=TFDS_DATA_DIR
"""

from configs import common

MODELS = {'densenet121': 'densenet121', 'dxnet105': 'dxnet105'}


def get_config(arg='dxnet105'):
  arg = common.parse_arg(arg, model='dxnet105')
  model = common.choose(arg.model, MODELS, 'ImageNet model')
  config = common.trainer('classification', model, (224, 224, 3), name='imagenet2012')
  config.data.update(source='tfds', validation_split='validation', augment='imagenet')
  config.model.remat = True
  config.optim = common.sgd_on_plateau()
  config.batch_size = 256
  config.num_epochs = 90
  config.log_every_steps = 100
  config.checkpoint_every_steps = 2000
  return config
