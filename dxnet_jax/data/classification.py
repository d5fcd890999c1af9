"""In-memory classification pipelines (CIFAR-10, SVHN, image folders of one small size).

Every process decodes the whole dataset (150 MB for CIFAR-10) and assembles only its own rows of
each global batch. Epoch e visits the training set in the order of a permutation seeded by
(seed, e); the last partial global batch of an epoch is dropped. Augmentation parameters come
from (seed, step), so batches are a pure function of (seed, step, process rows).
"""

from __future__ import annotations

import functools

import numpy as np

from dxnet_jax.data import augment
from dxnet_jax.data import pipeline
from dxnet_jax.data import sources


def load_splits(data) -> tuple[sources.Arrays, sources.Arrays | None]:
  """(train, validation) arrays for `config.data`; validation None when there is none."""
  if data.source == 'tfds':
    builder = sources.tfds_builder(data.name, data.data_dir, data.manual_dir, data.download)
    load = lambda split: sources.load_tfds(builder, split)
  elif data.source == 'folder':
    load = lambda split: sources.load_folder(data.root, split, data.image_size)
  else:
    raise ValueError(f"config.data.source must be 'tfds' or 'folder', got {data.source!r}")
  train = load(data.train_split)
  if data.validation_split == 'holdout' and data.holdout > 0:
    keep, held = sources.split_holdout(train.labels, data.holdout, len(train.class_names))
    return (
        train._replace(images=train.images[keep], labels=train.labels[keep]),
        train._replace(images=train.images[held], labels=train.labels[held]),
    )
  if data.validation_split and data.validation_split != 'holdout':
    return train, load(data.validation_split)
  return train, None


def mean_std(data, images: np.ndarray):
  """Normalisation constants on the [0, 1] scale: config values, or the training images' own."""
  if not data.normalize:
    return None, None
  if data.mean is not None:
    return np.asarray(data.mean, np.float32), np.asarray(data.std, np.float32)
  pixels = images.reshape(-1, images.shape[-1])
  mean = np.zeros(pixels.shape[-1])
  sq = np.zeros(pixels.shape[-1])
  for chunk in np.array_split(pixels, max(1, len(pixels) // 2**22)):  # bounded float memory
    chunk = chunk.astype(np.float64) / 255.0
    mean += chunk.sum(0)
    sq += (chunk**2).sum(0)
  mean /= len(pixels)
  std = np.sqrt(sq / len(pixels) - mean**2)
  return mean.astype(np.float32), std.astype(np.float32)


def build(
    config, *, global_batch_size: int, seed: int, process_index: int = 0, process_count: int = 1
) -> pipeline.Data:
  data = config.data
  if data.augment == 'imagenet' or data.name == 'imagenet2012':
    from dxnet_jax.data import imagenet  # pylint: disable=g-import-not-at-top

    return imagenet.build(
        config,
        global_batch_size=global_batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
    )
  if data.augment not in ('cifar', 'none'):
    raise ValueError(
        f"classification augment must be 'cifar', 'imagenet' or 'none', " f'got {data.augment!r}'
    )
  train, validation = load_splits(data)
  mean, std = mean_std(data, train.images)
  num_train = len(train.labels)
  steps_per_epoch = num_train // global_batch_size
  if steps_per_epoch == 0:
    raise ValueError(
        f'{num_train} training examples do not fill one global batch of ' f'{global_batch_size}'
    )
  rows = pipeline.host_rows(global_batch_size, process_index, process_count)
  _, height, width, _ = train.images.shape

  @functools.lru_cache(maxsize=2)
  def order(epoch: int) -> np.ndarray:
    return pipeline.rng(seed, pipeline.PERMUTATION, epoch).permutation(num_train)

  def batch_fn(step: int) -> pipeline.Batch:
    epoch, position = divmod(step, steps_per_epoch)
    start = position * global_batch_size
    index = order(epoch)[start : start + global_batch_size][rows]
    images = train.images[index]
    if data.augment == 'cifar':
      p = augment.draw_cifar(
          pipeline.rng(seed, pipeline.AUGMENT, step),
          global_batch_size,
          height,
          width,
          data.crop_padding,
      )
      p = {k: v[rows] for k, v in p.items()}
      images = augment.crop_flip(images, p['offset_y'], p['offset_x'], p['flip'], data.crop_padding)
      images = augment.normalize(images, mean, std)
      if data.cutout:
        images = augment.cutout(images, p['cutout_y'], p['cutout_x'], data.cutout)
    else:
      images = augment.normalize(images, mean, std)
    return {'inputs': images, 'targets': train.labels[index]}

  validation_fn = None
  if validation is not None:
    validation_fn = functools.partial(
        _validation_batches,
        validation,
        mean,
        std,
        data.eval_batch_size or global_batch_size,
        process_index,
        process_count,
    )

  info = {
      'task': 'classification',
      'num_classes': len(train.class_names),
      'class_names': train.class_names,
      'channels': train.images.shape[-1],
      'image_size': height,
      'num_train': num_train,
      'num_validation': 0 if validation is None else len(validation.labels),
      'mean': None if mean is None else tuple(map(float, mean)),
      'std': None if std is None else tuple(map(float, std)),
  }
  train_stream = pipeline.from_batch_fn(batch_fn, steps_per_epoch, data.prefetch)
  return pipeline.Data(train_stream, validation_fn, info)


def _validation_batches(
    validation: sources.Arrays,
    mean,
    std,
    global_batch_size: int,
    process_index: int,
    process_count: int,
):
  """Padded, normalised, un-augmented batches over the validation arrays."""

  def rows_fn(index):
    return {
        'inputs': augment.normalize(validation.images[index], mean, std),
        'targets': validation.labels[index],
    }

  return pipeline.padded_batches(
      len(validation.labels), global_batch_size, process_index, process_count, rows_fn
  )
