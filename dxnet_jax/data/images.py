"""Reading image folders into memory, with one defined behaviour for every kind of bad input.

- missing folder: FileNotFoundError naming the path and the fix (both uses);
- folder without images: ValueError naming the folder (both);
- file without an image extension: ignored, counted warning (both);
- corrupt / undecodable image file: training folders skip it with a counted warning
  (`strict=False`); evaluation sets raise BadImageError naming the file (`strict=True`), since a
  skipped image would change the benchmark number;
- gray image where RGB is wanted: replicated to 3 channels, counted warning (`gray=True` kept);
- colour image where gray is wanted: converted with PIL 'L' (ITU-R 601 luma), counted warning.

Hidden files (names starting with '.') are ignored silently. Warnings are `DataWarning`s, one per
kind and folder, with the count and the first few file names.
"""

from __future__ import annotations

import concurrent.futures
import pathlib
import warnings
from typing import NamedTuple

import numpy as np
from PIL import Image

from dxnet_jax.data import embedded
from dxnet_jax.data import paths

IMAGE_EXTENSIONS = frozenset(
    {'.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.ppm', '.pgm', '.webp'}
)
_GRAY_MODES = frozenset({'1', 'L', 'LA', 'I', 'I;16', 'F'})
_DECODE_THREADS = 8  # PIL releases the GIL while decoding; helps most on network file systems.


class DataWarning(UserWarning):
  """A counted warning about input data that was skipped or converted."""


class BadImageError(ValueError):
  """An image file that cannot be decoded."""


class LoadedImage(NamedTuple):
  name: str  # file name relative to its folder
  pixels: np.ndarray  # uint8 [H, W, channels]
  gray: bool  # the file itself was single-channel


class Issues:
  """Collects bad-input events so each kind is reported once, with a count."""

  MESSAGES = {
      'not_image': 'files without an image extension were ignored',
      'corrupt': 'corrupt or undecodable image files were skipped',
      'gray_to_rgb': 'gray images were replicated to 3 channels',
      'rgb_to_gray': 'colour images were converted to gray (ITU-R 601 luma)',
      'too_small': 'images smaller than the patch were skipped',
  }

  def __init__(self, where: str):
    self.where = where
    self.events: dict[str, list[str]] = {}

  def add(self, kind: str, name: str):
    self.events.setdefault(kind, []).append(name)

  def count(self, kind: str) -> int:
    return len(self.events.get(kind, ()))

  def report(self):
    for kind, names in self.events.items():
      shown = ', '.join(names[:5]) + (', ...' if len(names) > 5 else '')
      warnings.warn(
          f'{self.where}: {len(names)} {self.MESSAGES[kind]}: {shown}', DataWarning, stacklevel=3
      )


def list_images(folder: pathlib.Path, issues: Issues) -> list[pathlib.Path]:
  """Image files directly inside `folder`, sorted by name."""
  files = []
  for path in sorted(folder.iterdir()):
    if path.name.startswith('.') or path.is_dir():
      continue
    if path.suffix.lower() in IMAGE_EXTENSIONS:
      files.append(path)
    else:
      issues.add('not_image', path.name)
  return files


def read_image(path: pathlib.Path, channels: int) -> tuple[np.ndarray, bool]:
  """Decodes one file to uint8 [H, W, channels]; returns (pixels, file_was_gray)."""
  try:
    with Image.open(path) as image:
      image.load()
      gray = image.mode in _GRAY_MODES
      if gray and image.mode not in ('L', '1'):
        image = _to_8bit_gray(image)
      image = image.convert('L' if channels == 1 or gray else 'RGB')
      pixels = np.asarray(image, dtype=np.uint8)
  except (OSError, ValueError, Image.DecompressionBombError) as e:
    raise BadImageError(f'cannot decode image {path}: {e}') from e
  if pixels.ndim == 2:
    pixels = pixels[..., None]
  if channels == 3 and gray:
    pixels = np.repeat(pixels, 3, axis=-1)
  return pixels, gray


def _to_8bit_gray(image: Image.Image) -> Image.Image:
  """16-bit / float gray images scaled to 8 bits by their nominal range."""
  if image.mode == 'LA':
    return image.convert('L')
  array = np.asarray(image, dtype=np.float64)
  peak = 1.0 if image.mode == 'F' else (65535.0 if array.max() > 255 else 255.0)
  return Image.fromarray(np.clip(np.round(array / peak * 255), 0, 255).astype(np.uint8))


def load_folder(
    folder: str | pathlib.Path, channels: int, *, strict: bool, what: str = 'image folder'
) -> list[LoadedImage]:
  """Loads every image of a folder; `strict` turns a corrupt file into an error.

  Relative folders resolve against the data root (`paths.resolve`); `skimage:train` and
  `skimage:test` name the photos bundled with scikit-image (`dxnet_jax.data.embedded`).
  """
  if channels not in (1, 3):
    raise ValueError(f'channels must be 1 or 3, got {channels}')
  if embedded.is_embedded(folder):
    return [LoadedImage(*image) for image in embedded.load(str(folder), channels)]
  folder = paths.require_dir(folder, what)
  issues = Issues(str(folder))
  files = list_images(folder, issues)
  if not files:
    raise ValueError(
        f'{what} {folder} holds no image files '
        f'(extensions: {", ".join(sorted(IMAGE_EXTENSIONS))}).'
    )

  def decode(path):
    try:
      return read_image(path, channels)
    except BadImageError:
      if strict:
        raise
      return None

  with concurrent.futures.ThreadPoolExecutor(_DECODE_THREADS) as pool:
    decoded = list(pool.map(decode, files))
  loaded = []
  for path, result in zip(files, decoded):
    if result is None:
      issues.add('corrupt', path.name)
      continue
    pixels, gray = result
    if gray and channels == 3:
      issues.add('gray_to_rgb', path.name)
    elif not gray and channels == 1:
      issues.add('rgb_to_gray', path.name)
    loaded.append(LoadedImage(path.name, pixels, gray))
  issues.report()
  if not loaded:
    raise ValueError(f'{what} {folder}: none of its {len(files)} image files could be decoded.')
  return loaded
