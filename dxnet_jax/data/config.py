"""`config.data` defaults per task and dataset; the fields are documented in `dxnet_jax.data`."""

from __future__ import annotations

import ml_collections

TASKS = ('classification', 'denoising', 'super_resolution')

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_COMMON = dict(
    source='folder',
    name='',
    data_dir=None,
    manual_dir=None,
    download=False,
    train_split='train',
    prefetch=2,
    eval_batch_size=None,
)

_CLASSIFICATION = dict(
    _COMMON,
    name='cifar10',
    root='cifar10',
    validation_split='holdout',
    holdout=5000,
    image_size=32,
    augment='cifar',
    crop_padding=4,
    cutout=16,
    normalize=True,
    mean=None,
    std=None,
    shuffle_buffer=16384,
    resize_size=256,
)

_CLASSIFICATION_PRESETS = {
    'cifar10': dict(),
    'svhn_cropped': dict(
        source='tfds',
        root=None,
        train_split='train+extra',
        validation_split='test',
        holdout=0,
        augment='none',
        cutout=0,
        normalize=False,
    ),
    'imagenet2012': dict(
        source='tfds',
        root=None,
        validation_split='validation',
        holdout=0,
        image_size=224,
        augment='imagenet',
        cutout=0,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    ),
}

_RESTORATION = dict(
    _COMMON,
    train_dirs=(),
    channels=3,
    patch_size=96,
    patches_per_epoch=16000,
    augment='dihedral',
    sigma=None,
    eval_sigma=None,
    level_map=False,
    scale=4,
    holdout=0,
    validation_set=None,
    validation_crop=128,
    eval_sets=(),
    noise_seed=0,
)

_RESTORATION_PRESETS = {
    'denoising': dict(
        name='train400',
        train_dirs=('Train400',),
        channels=1,
        patch_size=40,
        patches_per_epoch=128 * 1600,
        sigma=50.0,
        scale=1,
        validation_set='Set12',
        eval_sets=('BSD68', 'Set12'),
    ),
    'super_resolution': dict(
        name='t91_bsd200',
        train_dirs=('T91', 'BSD200'),
        validation_set='Set5',
        eval_sets=('Set5', 'Set14', 'BSD100'),
    ),
}

_DIV2K = dict(source='tfds', name='div2k/bicubic_x4', train_dirs=(), validation_set='validation')


def fields(task: str) -> frozenset[str]:
  """The `config.data` field names that `build` accepts for `task`."""
  _check_task(task)
  return frozenset(_CLASSIFICATION if task == 'classification' else _RESTORATION)


def default_config(task: str, **overrides) -> ml_collections.ConfigDict:
  """`config.data` for `task`, starting from the preset that `name` (and `source`) select.

  Classification presets: name 'cifar10' (folder source, 5,000 held out; with source='tfds' it
  validates on 'test' instead), 'svhn_cropped', 'imagenet2012'. Restoration presets: denoising
  on Train400, super-resolution on T91 + BSD200, or name='div2k/bicubic_x4' (tfds).
  The ConfigDict is not type-safe so that e.g. `sigma` may become a (lo, hi) range.
  """
  _check_task(task)
  name = overrides.get('name')
  if task == 'classification':
    values = dict(_CLASSIFICATION)
    preset = _CLASSIFICATION_PRESETS.get(name or 'cifar10')
    if preset is None:
      preset = dict(source='tfds', root=None, validation_split='test', holdout=0)
    values.update(preset)
    if name in (None, 'cifar10') and overrides.get('source') == 'tfds':
      values.update(root=None, validation_split='test', holdout=0)
  else:
    values = dict(_RESTORATION)
    values.update(_RESTORATION_PRESETS[task])
    if name and name.startswith('div2k'):
      values.update(_DIV2K)
  unknown = set(overrides) - set(values)
  if unknown:
    raise KeyError(
        f'unknown config.data fields for {task}: {sorted(unknown)}; ' f'known: {sorted(values)}'
    )
  values.update(overrides)
  return ml_collections.ConfigDict(values, type_safe=False)


def _check_task(task: str):
  if task not in TASKS:
    raise ValueError(f'config.task must be one of {TASKS}, got {task!r}')
