"""The paper's training recipes as config builders; each file in `configs/` calls one of them.

Recipes (the paper's, as far as it states them; our choices where it is silent are marked):
* CIFAR-10: SGD Nesterov 0.9, wd 5e-4, LR 0.1 halved when the validation loss plateaus
  (patience 10 epochs: our choice), batch 128, 200 epochs, crop+flip+cutout 16x16; validation is
  the last 5,000 training images (500 per class).
* SVHN: as CIFAR but 100 epochs, no augmentation, dropout 0.2 after each convolution; train+extra
  for training, the test split for validation (as DenseNet's SVHN protocol).
* ImageNet: same optimiser, batch 256, 90 epochs, DenseNet augmentation.
* Super-resolution x4: Adam, L1, LR 1e-4 dropped to 1e-5 at 50% of training, batch 16, 96 px HR
  patches from T91 + BSD200 (our choice of patch size and length: 300 epochs of 16,000 patches).
* Denoising: Adam, MSE on the noise, LR 1e-3 divided by 5 at 10/25/75/90% of training, batch 32,
  40 px patches of Train400 (DnCNN's 128x1,600 patches per epoch, 50 epochs).
"""

import ml_collections

from dxnet_jax.train.defaults import base_config, optim_config

CLASSIFICATION_DATASETS = ('cifar10', 'svhn_cropped', 'imagenet2012')


def classification(dataset: str, model: str) -> ml_collections.ConfigDict:
  if dataset not in CLASSIFICATION_DATASETS:
    raise ValueError(f'dataset must be one of {CLASSIFICATION_DATASETS}, got {dataset!r}')
  size = 224 if dataset == 'imagenet2012' else 32
  config = base_config('classification', model, (size, size, 3), name=dataset)
  config.optim = optim_config(
      'sgd',
      learning_rate=0.1,
      momentum=0.9,
      nesterov=True,
      weight_decay=5e-4,
      schedule='plateau',
      plateau_factor=0.5,
      plateau_patience=10,
  )
  if dataset == 'cifar10':
    config.batch_size, config.num_epochs = 128, 200
  elif dataset == 'svhn_cropped':
    config.batch_size, config.num_epochs = 128, 100
    config.model.dropout_rate = 0.2
  else:
    config.batch_size, config.num_epochs = 256, 90
    config.model.remat = True  # DenseNet-121 at batch 256 needs memory-efficient blocks
    config.log_every_steps = 100
    config.checkpoint_every_steps = 2000
  return config


def super_resolution(model: str) -> ml_collections.ConfigDict:
  config = base_config('super_resolution', model, (24, 24, 3), name='super_resolution')
  config.optim = optim_config(
      'adam', learning_rate=1e-4, schedule='piecewise', decay_at=(0.5,), decay_factor=0.1
  )
  config.batch_size = 16
  config.num_epochs = 300
  config.checkpoint_every_steps = 5000
  return config


def denoising(model: str, sigma: float = 50.0) -> ml_collections.ConfigDict:
  channels = 3 if model.endswith('_rgb') else 1
  config = base_config(
      'denoising', model, (40, 40, channels), name='denoising', sigma=sigma, channels=channels
  )
  config.optim = optim_config(
      'adam',
      learning_rate=1e-3,
      schedule='piecewise',
      decay_at=(0.1, 0.25, 0.75, 0.9),
      decay_factor=0.2,
  )
  config.batch_size = 32
  config.num_epochs = 50
  config.checkpoint_every_steps = 5000
  return config


def parse_sigma(arg: str, default: float = 50.0) -> float:
  """Config-string argument: `configs/denoise_X.py:25` gives sigma 25 (the paper: 15, 25, 50)."""
  if not arg:
    return default
  sigma = float(arg)
  if not 0 < sigma <= 255:
    raise ValueError(f'sigma must be in (0, 255], got {arg!r}')
  return sigma
