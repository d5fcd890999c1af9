"""CIFAR-10 classification: DenseNet-BC and DxNet, the paper's recipe.

Recipe (the paper's where it says; ours where marked):
  data       the CIFAR-10 training images, less the last 500 of each class, which validate
             (ours); random crop of the 4-px padded image, horizontal flip, 16x16 cutout;
             per-channel mean/std normalisation
  optimiser  SGD, Nesterov momentum 0.9, weight decay 5e-4, lr 0.1, batch 128
  schedule   lr halved when the validation loss plateaus (patience 10 epochs: ours)
  length     200 epochs

Argument: MODEL[,budget]
  MODEL    densenet_bc_16 (0.77M parameters), densenet_bc_26 (1.74M), dxnet_12 (0.53M),
           dxnet_19 (1.09M)
  budget   a 2-core CPU's budget: the nets cut to about 0.12M parameters (DenseNet-BC 4-5-5,
           DxNet 4-4-4), batch 64, 150 steps, lr 0.1 cosine to 0, no cutout

  python -m dxnet_jax.main --config configs/cifar10.py:dxnet_12 --workdir runs/cifar10_dxnet_12
With tfds's cifar10 instead of the image folder: --config.data.source=tfds (validates on 'test').
"""

from configs import common

MODELS = {
    'densenet_bc_16': 'densenet_bc_k12_16',
    'densenet_bc_26': 'densenet_bc_k12_26',
    'dxnet_12': 'dxnet_k12_12',
    'dxnet_19': 'dxnet_k12_19',
}
BUDGET_BLOCKS = {'densenet_bc_16': (4, 5, 5), 'dxnet_12': (4, 4, 4)}


def get_config(arg='dxnet_12'):
  arg = common.parse_arg(arg, model='dxnet_12', budget=False)
  model = common.choose(arg.model, MODELS, 'CIFAR-10 model')
  config = common.trainer('classification', model, (32, 32, 3), name='cifar10')
  config.data.update(
      root='cifar10',
      validation_split='holdout',
      holdout=5000,
      augment='cifar',
      crop_padding=4,
      cutout=16,
      normalize=True,
  )
  config.optim = common.sgd_on_plateau()
  config.batch_size = 128
  config.num_epochs = 200
  if arg.budget:
    config.model.blocks = common.choose(arg.model, BUDGET_BLOCKS, 'budget CIFAR-10 model')
    config.batch_size = 64
    config.num_steps = 150
    config.data.cutout = 0  # it slows short runs down
    config.optim.schedule = 'cosine'
    config.log_every_steps = 25
    config.checkpoint_every_steps = 50
  return config
