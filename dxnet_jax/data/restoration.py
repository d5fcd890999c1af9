"""Patch pipelines for denoising and 4x super-resolution, with images decoded into memory.

A training batch is a set of random patches: each row picks an image with probability
proportional to its number of patch positions (so every patch position of the training set is
equally likely), a uniform position, and one of the 8 flips/rotations. SR patches are aligned
crops of the HR image and of its PIL-bicubic LR image, which is made once per whole image (as
the benchmark LR images are), so the training degradation is exactly the evaluation one.
Denoising adds N(0, (sigma/255)^2) to the clean patch without clipping; sigma is fixed or
drawn per patch from U[lo, hi]; with `level_map` the inputs carry each patch's sigma/255 as an
extra last channel (validation: eval_sigma's). The global batch's draws come from (seed, step)
and each row's noise from (seed, step, row), so hosts assemble disjoint rows of one global batch.

Validation (`Data.validation()`): centre crops (`validation_crop`, HR pixels) of the held-out
training images or of `validation_set`, with the evaluation degradation of `eval_sets`.
"""

from __future__ import annotations

import numpy as np

from dxnet_jax.data import augment
from dxnet_jax.data import degrade
from dxnet_jax.data import eval_sets
from dxnet_jax.data import images as images_lib
from dxnet_jax.data import pipeline
from dxnet_jax.data import sources


class PatchSampler:
  """Draws aligned (inputs, targets) patches from uint8 images held in memory."""

  def __init__(
      self,
      targets: list[np.ndarray],
      lr_images: list[np.ndarray] | None,
      patch_size: int,
      scale: int,
  ):
    self.targets = targets
    self.lr_images = lr_images
    self.patch = patch_size
    self.scale = scale
    grid = patch_size // scale  # patch side on the position grid (LR pixels for SR)
    sizes = np.array([t.shape[:2] for t in targets]) // scale
    self.positions = sizes - grid + 1  # [n, 2] valid top-left positions per axis
    counts = self.positions.prod(axis=1).astype(np.float64)
    self.weights = counts / counts.sum()

  def crops(self, index: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Patches of images `index` at relative positions `u` in [0, 1)^2."""
    grid = self.patch // self.scale
    ys = (u[:, 0] * self.positions[index, 0]).astype(np.int64)
    xs = (u[:, 1] * self.positions[index, 1]).astype(np.int64)
    p, s = self.patch, self.scale
    targets = np.stack(
        [self.targets[i][y * s : y * s + p, x * s : x * s + p] for i, y, x in zip(index, ys, xs)]
    )
    if self.lr_images is None:
      return targets, None
    inputs = np.stack(
        [self.lr_images[i][y : y + grid, x : x + grid] for i, y, x in zip(index, ys, xs)]
    )
    return targets, inputs


def with_level_map(noisy: np.ndarray, sigma: np.ndarray) -> np.ndarray:
  """[N, H, W, C] noisy patches with their noise-level maps (sigma[n] / 255) as channel C+1."""
  level = np.broadcast_to(
      (np.asarray(sigma, np.float32) / np.float32(255))[:, None, None, None],
      noisy.shape[:-1] + (1,),
  )
  return np.concatenate([noisy, level.astype(noisy.dtype)], axis=-1)


def _sigma_range(sigma) -> tuple[float, float]:
  if sigma is None:
    raise ValueError('denoising needs config.data.sigma (a number or [lo, hi])')
  if np.ndim(sigma) == 0:
    return float(sigma), float(sigma)
  lo, hi = map(float, sigma)
  if not 0 <= lo <= hi:
    raise ValueError(f'sigma range must satisfy 0 <= lo <= hi, got {sigma!r}')
  return lo, hi


def training_images(config) -> list[images_lib.LoadedImage]:
  """Clean / HR training images from `train_dirs` or the tfds `train_split` (HR only)."""
  data = config.data
  channels = data.channels
  if data.source == 'folder':
    if not data.train_dirs:
      raise ValueError('config.data.train_dirs is empty: name the training image folders')
    loaded = []
    for folder in data.train_dirs:
      loaded += images_lib.load_folder(folder, channels, strict=False, what='training folder')
    return loaded
  if data.source == 'tfds':
    builder = sources.tfds_builder(data.name, data.data_dir, data.manual_dir, data.download)
    return tfds_images(builder, data.train_split, channels)
  raise ValueError(f"config.data.source must be 'tfds' or 'folder', got {data.source!r}")


def tfds_images(builder, split: str, channels: int) -> list[images_lib.LoadedImage]:
  """HR images of a tfds split (DIV2K train: about 6.6 GB of uint8 in memory). The dataset's own
  LR images are not used: LR is remade with PIL bicubic, as for every other source."""
  tfds = sources.tfds_module()
  key = 'hr' if 'hr' in builder.info.features else 'image'
  loaded = []
  for i, example in enumerate(tfds.as_numpy(builder.as_dataset(split=split))):
    pixels = example[key]
    if channels == 1 and pixels.shape[-1] == 3:
      pixels = np.round(pixels.astype(np.float64) @ [0.299, 0.587, 0.114])[..., None]
      pixels = pixels.astype(np.uint8)
    loaded.append(images_lib.LoadedImage(f'{split}[{i}]', pixels, pixels.shape[-1] == 1))
  return loaded


def _drop_small(loaded, size: int, scale: int, where: str):
  """Images whose (scale-cropped) side is below `size` are skipped with a counted warning."""
  issues = images_lib.Issues(where)
  kept = []
  for image in loaded:
    h, w = image.pixels.shape[:2]
    if min(h - h % scale, w - w % scale) < size:
      issues.add('too_small', f'{image.name} ({w}x{h} < {size})')
    else:
      kept.append(image)
  issues.report()
  if not kept:
    raise ValueError(f'{where}: no image is at least {size}x{size} px')
  return kept


def build(
    config, *, global_batch_size: int, seed: int, process_index: int = 0, process_count: int = 1
) -> pipeline.Data:
  data = config.data
  task = config.task
  scale = data.scale if task == 'super_resolution' else 1
  if data.patch_size % scale:
    raise ValueError(f'patch_size {data.patch_size} must be a multiple of scale {scale}')
  if data.augment not in ('dihedral', 'none'):
    raise ValueError(f"restoration augment must be 'dihedral' or 'none', got {data.augment!r}")
  sigma_lo, sigma_hi = _sigma_range(data.sigma) if task == 'denoising' else (0.0, 0.0)

  loaded = training_images(config)
  held = []
  if data.holdout:
    if data.holdout >= len(loaded):
      raise ValueError(f'holdout {data.holdout} leaves no training images of {len(loaded)}')
    loaded, held = loaded[: -data.holdout], loaded[-data.holdout :]
  loaded = _drop_small(loaded, data.patch_size, scale, 'training images')
  targets = [degrade.modcrop(image.pixels, scale) for image in loaded]
  lr_images = [degrade.downscale(t, scale) for t in targets] if scale > 1 else None
  sampler = PatchSampler(targets, lr_images, data.patch_size, scale)

  steps_per_epoch = data.patches_per_epoch // global_batch_size
  if steps_per_epoch == 0:
    raise ValueError(
        f'patches_per_epoch {data.patches_per_epoch} < global batch ' f'{global_batch_size}'
    )
  rows = pipeline.host_rows(global_batch_size, process_index, process_count)
  row_ids = np.arange(global_batch_size)[rows]

  def batch_fn(step: int) -> pipeline.Batch:
    draw = pipeline.rng(seed, pipeline.AUGMENT, step)
    index = draw.choice(len(targets), size=global_batch_size, p=sampler.weights)[rows]
    u = draw.random((global_batch_size, 2))[rows]
    ops = draw.integers(0, 8, global_batch_size)[rows]
    sigma = draw.uniform(sigma_lo, sigma_hi, global_batch_size)[rows]
    clean, lr = sampler.crops(index, u)
    if data.augment == 'dihedral':
      clean = augment.dihedral(clean, ops)
      lr = None if lr is None else augment.dihedral(lr, ops)
    clean = clean.astype(np.float32) * np.float32(1 / 255)
    if task == 'super_resolution':
      return {'inputs': lr.astype(np.float32) * np.float32(1 / 255), 'targets': clean}
    noisy = np.stack(
        [
            degrade.add_noise(patch, s, pipeline.rng(seed, pipeline.NOISE, step, r))
            for patch, s, r in zip(clean, sigma, row_ids)
        ]
    )
    if data.level_map:
      noisy = with_level_map(noisy, sigma)
    return {'inputs': noisy, 'targets': clean}

  eval_sigma = (
      data.eval_sigma
      if data.eval_sigma is not None
      else (sigma_lo if sigma_lo == sigma_hi else None)
  )
  if task == 'denoising' and eval_sigma is None:
    raise ValueError('a sigma range needs config.data.eval_sigma for validation and evaluation')
  if data.level_map and task != 'denoising':
    raise ValueError('config.data.level_map is a denoising option (the noise-level map)')
  validation_fn = _validation(
      config, held, eval_sigma, scale, global_batch_size, process_index, process_count
  )
  info = {
      'task': task,
      'channels': data.channels,
      'scale': scale,
      'patch_size': data.patch_size,
      'sigma': (sigma_lo, sigma_hi) if task == 'denoising' else None,
      'eval_sigma': eval_sigma if task == 'denoising' else None,
      'level_map': bool(data.level_map),
      'num_train': len(targets),
      'eval_sets': tuple(data.eval_sets),
      'noise_seed': data.noise_seed,
  }
  train_stream = pipeline.from_batch_fn(batch_fn, steps_per_epoch, data.prefetch)
  return pipeline.Data(train_stream, validation_fn, info)


def _validation(config, held, eval_sigma, scale, global_batch_size, process_index, process_count):
  """Padded batches of centre crops of the validation images, or None."""
  data = config.data
  if held:
    loaded = held
  elif data.validation_set is None:
    return None
  elif data.source == 'tfds':
    builder = sources.tfds_builder(data.name, data.data_dir, data.manual_dir, data.download)
    loaded = tfds_images(builder, data.validation_set, data.channels)
  else:
    loaded = images_lib.load_folder(
        data.validation_set, data.channels, strict=True, what='validation set'
    )
  crop = data.validation_crop
  if crop % scale:
    raise ValueError(f'validation_crop {crop} must be a multiple of scale {scale}')
  loaded = _drop_small(loaded, crop, scale, 'validation images')
  pairs = eval_sets.degrade_images(
      loaded,
      task=config.task,
      sigma=eval_sigma,
      scale=scale,
      channels=data.channels,
      seed=data.noise_seed,
  )
  inputs, targets = [], []
  for pair in pairs:
    h, w = pair.targets.shape[:2]
    top = (h - crop) // 2 // scale * scale
    left = (w - crop) // 2 // scale * scale
    target = pair.targets[top : top + crop, left : left + crop]
    if target.shape[-1] != data.channels:
      target = np.repeat(target, data.channels, axis=-1)
    targets.append(target.astype(np.float32) / 255.0)
    inputs.append(
        pair.inputs[top // scale : (top + crop) // scale, left // scale : (left + crop) // scale]
    )
  inputs, targets = np.stack(inputs), np.stack(targets)
  if data.level_map:
    inputs = with_level_map(inputs, np.full(len(inputs), eval_sigma))
  eval_batch = data.eval_batch_size or global_batch_size

  def rows_fn(index):
    return {'inputs': inputs[index], 'targets': targets[index]}

  return lambda: pipeline.padded_batches(
      len(inputs), eval_batch, process_index, process_count, rows_fn
  )
