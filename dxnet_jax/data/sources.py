"""Small labelled datasets decoded once into memory: tfds (cifar10, svhn_cropped) or folders."""

from __future__ import annotations

import pathlib
from typing import NamedTuple

import numpy as np

from dxnet_jax import _optional
from dxnet_jax.data import images as images_lib
from dxnet_jax.data import paths


class Arrays(NamedTuple):
  images: np.ndarray  # uint8 [N, H, W, C]
  labels: np.ndarray  # int32 [N]
  class_names: tuple[str, ...]


def tfds_module():
  """tensorflow_datasets (and the TensorFlow it reads with), or an error naming the extra."""
  feature = "config.data.source='tfds'"
  _optional.require('tensorflow', 'tfds', feature)
  return _optional.require('tensorflow_datasets', 'tfds', feature)


def tfds_builder(name: str, data_dir, manual_dir, download: bool):
  """A prepared tfds builder; `download` lets tfds fetch and prepare it first."""
  tfds = tfds_module()
  builder = tfds.builder(name, data_dir=paths.resolve(data_dir))
  if download:
    config = tfds.download.DownloadConfig(manual_dir=paths.resolve(manual_dir))
    builder.download_and_prepare(download_config=config)
  return builder


def load_tfds(builder, split: str) -> Arrays:
  """The whole split as numpy arrays (CIFAR-10: 150 MB; SVHN train+extra: 1.9 GB)."""
  data = tfds_module().as_numpy(builder.as_dataset(split=split, batch_size=-1))
  label = builder.info.features['label']
  return Arrays(
      np.asarray(data['image'], np.uint8), np.asarray(data['label'], np.int32), tuple(label.names)
  )


def load_folder(root: str | pathlib.Path, split: str, image_size: int) -> Arrays:
  """`root/<split>/<class>/*`; classes are the sorted sub-folder names (label = position).

  Bad files follow `images.load_folder(strict=False)`: skipped or converted with a counted
  warning. An image whose size is not image_size x image_size is an error naming the file.
  """
  split_dir = paths.require_dir(pathlib.Path(paths.resolve(root)) / split, 'classification split')
  class_dirs = sorted(d for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith('.'))
  if not class_dirs:
    raise ValueError(f'{split_dir} holds no class folders (expected {split_dir}/<class>/<image>)')
  all_images, all_labels = [], []
  for label, class_dir in enumerate(class_dirs):
    for image in images_lib.load_folder(class_dir, 3, strict=False, what='class folder'):
      if image.pixels.shape[:2] != (image_size, image_size):
        h, w = image.pixels.shape[:2]
        raise ValueError(
            f'{class_dir / image.name} is {w}x{h}; in-memory classification needs '
            f'{image_size}x{image_size} images (config.data.image_size)'
        )
      all_images.append(image.pixels)
      all_labels.append(label)
  return Arrays(
      np.stack(all_images), np.asarray(all_labels, np.int32), tuple(d.name for d in class_dirs)
  )


def split_holdout(labels: np.ndarray, holdout: int, num_classes: int):
  """(train_indices, holdout_indices): the last holdout/num_classes examples of every class, in
  source order, are held out, so the held-out part is class balanced whatever the file order."""
  if holdout <= 0:
    return np.arange(len(labels)), np.arange(0)
  if holdout % num_classes:
    raise ValueError(f'holdout {holdout} must be a multiple of the {num_classes} classes')
  per_class = holdout // num_classes
  held = []
  for c in range(num_classes):
    members = np.flatnonzero(labels == c)
    if len(members) <= per_class:
      raise ValueError(f'class {c} has {len(members)} examples; cannot hold out {per_class}')
    held.append(members[-per_class:])
  held = np.sort(np.concatenate(held))
  keep = np.setdiff1d(np.arange(len(labels)), held)
  return keep, held
