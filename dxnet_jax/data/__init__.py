"""Input pipelines: `build(config, ...) -> Data` for classification, denoising and 4x SR.

`build` reads `config.task` and `config.data`; start `config.data` from
`default_config(task, **overrides)`. Batches are dicts of numpy arrays `inputs`, `targets`
(+ `mask` in evaluation batches); see docs/DEVELOPING.md for the contract and docs/data.md for
the protocols and measured numbers.

config.data fields, all tasks
  source            'folder' (images under the data root) or 'tfds'.
  name              tfds dataset name ('cifar10', 'svhn_cropped', 'imagenet2012',
                    'div2k/bicubic_x4'); with source 'folder' only a label, which also picks the
                    preset in `default_config`.
  data_dir          tfds data_dir (None: tfds' default); a local path or gs:// URL.
  manual_dir        tfds manual_dir (ImageNet's tar files); used when `download` is True.
  download          let tfds download and prepare the dataset first (default False).
  train_split       tfds split expression of the training data ('train', 'train+extra'); for a
                    classification folder, the sub-folder holding <class>/<image>.
  prefetch          batches assembled ahead in a background thread (0: none).
  eval_batch_size   global batch size of validation batches (None: the training one).

classification
  root              folder source: root/<split>/<class>/<image>; classes are the sorted
                    sub-folder names (for the shared CIFAR-10 that is the official label order).
  validation_split  a split name ('test', 'validation'), 'holdout', or None (no validation).
  holdout           with 'holdout': the last holdout/num_classes examples of each class of the
                    training split (source order) become the validation set (CIFAR-10: 5,000).
  image_size        side of the network input (32; 224 for ImageNet). In-memory sources need
                    every image at exactly this size.
  augment           'cifar' (pad-crop + horizontal flip + cutout), 'imagenet' (streaming
                    pipeline: random-resized crop + flip; eval resize + centre crop), 'none'.
  crop_padding      zero padding of the CIFAR random crop (4).
  cutout            side of the cutout square (16; 0 turns it off); applied after normalising.
  normalize         per-channel (x - mean) / std on the [0, 1] scale; False gives x / 255.
  mean, std         per-channel constants on the [0, 1] scale; None computes them from the
                    training images (in-memory sources). The values used are in Data.info.
  shuffle_buffer    streaming (ImageNet) shuffle buffer, in images.
  resize_size       streaming evaluation: shorter side before the centre crop (256).

denoising / super_resolution
  train_dirs        folder source: training image folders, e.g. ('Train400',), ('T91', 'BSD200').
  channels          1 (gray) or 3 (RGB); images of the other kind are converted, with a counted
                    warning (gray -> replicated, colour -> ITU-R 601 luma).
  patch_size        training patch side in HR pixels (denoising 40; SR 96), a multiple of scale.
  patches_per_epoch patches that make one epoch: steps_per_epoch = patches_per_epoch // batch.
  augment           'dihedral' (random flips and 90-degree rotations) or 'none'.
  sigma             denoising noise level on the 0-255 scale: a number or a [lo, hi] range
                    (uniform per patch).
  eval_sigma        sigma of validation/evaluation (None: sigma, which must then be fixed).
  level_map         denoising: append the noise-level map (each patch's sigma/255, constant)
                    to the inputs as a last channel, for noise-level-conditioned models
                    (FFDNet's input; `models.LevelDenoiser`). Targets keep the image channels.
  scale             SR factor (4); denoising ignores it.
  holdout           the last `holdout` training images (sorted by file name) are used for
                    validation instead of training.
  validation_set    without holdout: an evaluation set name or folder for validation (default
                    Set12 / Set5, used for monitoring only); with source 'tfds', a split name.
  validation_crop   side (HR pixels) of the centre crops used as validation batches.
  eval_sets         the sets a finished run is scored on (`dxnet_jax.evaluate`).
  noise_seed        seed of the evaluation/validation noise (image i uses (noise_seed, i)).

Relative paths (root, train_dirs, validation_set folders, data_dir, manual_dir) resolve against
$DXNET_DATA_DIR, else <repo root>/../shared/data (`paths.data_root()`).
"""

from __future__ import annotations

from dxnet_jax.data.config import default_config
from dxnet_jax.data.config import fields
from dxnet_jax.data.pipeline import Batch
from dxnet_jax.data.pipeline import Data
from dxnet_jax.data.pipeline import Train

__all__ = ['Batch', 'Data', 'Train', 'build', 'default_config', 'fields']


def build(
    config, *, global_batch_size: int, seed: int, process_index: int = 0, process_count: int = 1
) -> Data:
  """The pipelines of `config.task` over `config.data`, for one process of `process_count`.

  `global_batch_size` must be a multiple of `process_count`; every batch holds this process's
  `global_batch_size // process_count` rows.
  """
  given, known = set(config.data.keys()), fields(config.task)
  if given != known:
    raise KeyError(
        f'config.data for {config.task}: unknown fields {sorted(given - known)}, '
        f'missing fields {sorted(known - given)}; start from '
        'dxnet_jax.data.default_config(task, ...)'
    )
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count})')
  kwargs = dict(
      global_batch_size=global_batch_size,
      seed=seed,
      process_index=process_index,
      process_count=process_count,
  )
  if config.task == 'classification':
    from dxnet_jax.data import classification  # pylint: disable=g-import-not-at-top

    return classification.build(config, **kwargs)
  from dxnet_jax.data import restoration  # pylint: disable=g-import-not-at-top

  return restoration.build(config, **kwargs)
