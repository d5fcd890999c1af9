"""Gaussian denoising (the DnCNN protocol): DxNet and DenseNet denoisers, and DnCNN.

Recipe (the paper's where it says; DnCNN's where it does not):
  data       Train400, 40x40 patches, 128 x 1,600 per epoch, flips and rotations; noise
             N(0, sigma/255) added without clipping, sigma 50 (the paper: 15, 25 and 50)
  optimiser  Adam, lr 1e-3, mean squared error on the residual, batch 32
  schedule   lr / 5 at 10, 25, 75 and 90% of training
  length     50 epochs (320,000 steps)
  evaluation BSD68 and Set12, whole images, outputs clipped and rounded to 8 bits; Set12 crops
             validate

Argument: MODEL[,sigma=S][,budget|gpu]
  MODEL    dxnet_444 (140K parameters), dxnet_666 (227K), densenet_444 (111K),
           densenet_555 (147K, about dxnet_444's size), densenet_666 (188K), dncnn (556K),
           dxnet_444_rgb (colour images)
  budget   a 2-core CPU's budget: batch 16, 120 steps, lr / 5 at 80%
  gpu      an accelerator's settings: batch 64 (32 leaves most of a GPU idle), the loss checked
           for NaN every 100 steps (each check waits for the device), logs every 500 steps

  python -m dxnet_jax.main --config configs/denoise.py:dxnet_444 --workdir runs/denoise_dxnet_444
  python -m dxnet_jax.main --config configs/denoise.py:densenet_555,sigma=25 --workdir runs/dn25
"""

from configs import common

MODELS = {
    'dxnet_444': 'dxnet_denoise_444',
    'dxnet_666': 'dxnet_denoise_666',
    'densenet_444': 'densenet_denoise_444',
    'densenet_555': 'densenet_denoise_555',
    'densenet_666': 'densenet_denoise_666',
    'dncnn': 'dncnn',
    'dxnet_444_rgb': 'dxnet_denoise_444_rgb',
    'xdncnn': 'xdncnn',  # configs/xunit_designs.py
}


def get_config(arg='dxnet_444'):
  arg = common.parse_arg(arg, model='dxnet_444', sigma=50.0, budget=False, gpu=False)
  model = common.choose(arg.model, MODELS, 'denoising model')
  if not 0 < arg.sigma <= 255:
    raise ValueError(f'sigma must be in (0, 255], got {arg.sigma:g}.')
  channels = 3 if arg.model.endswith('_rgb') else 1
  config = common.trainer('denoising', model, (40, 40, channels), name='denoising')
  config.data.update(
      train_dirs=('Train400',),
      channels=channels,
      patch_size=40,
      patches_per_epoch=128 * 1600,
      augment='dihedral',
      sigma=arg.sigma,
      scale=1,
      validation_set='Set12',
      validation_crop=128,
      eval_sets=('BSD68', 'Set12'),
  )
  config.optim = common.optim(
      'adam',
      learning_rate=1e-3,
      schedule='piecewise',
      decay_at=(0.1, 0.25, 0.75, 0.9),
      decay_factor=0.2,
  )
  config.batch_size = 32
  config.num_epochs = 50
  config.checkpoint_every_steps = 5000
  if arg.budget:
    config.batch_size = 16
    config.num_steps = 120
    config.optim.decay_at = (0.8,)
    config.log_every_steps = 10
    config.checkpoint_every_steps = 40
  if arg.gpu:
    config.batch_size = 64
    config.nan_check_every_steps = 100
    config.log_every_steps = 500
  return config
