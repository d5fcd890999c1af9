"""Vectorised numpy augmentations on batches [N, H, W, C].

Random parameters are drawn separately (`draw_*`) for the rows of a whole global batch, so each
process can apply the slice of them that belongs to its rows.
"""

from __future__ import annotations

import numpy as np


def draw_cifar(rng: np.random.Generator, n: int, height: int, width: int, padding: int) -> dict:
  """Crop offsets in [0, 2*padding], flip flags and cutout centres for n rows."""
  return {
      'offset_y': rng.integers(0, 2 * padding + 1, n),
      'offset_x': rng.integers(0, 2 * padding + 1, n),
      'flip': rng.random(n) < 0.5,
      'cutout_y': rng.integers(0, height, n),
      'cutout_x': rng.integers(0, width, n),
  }


def crop_flip(
    images: np.ndarray, offset_y: np.ndarray, offset_x: np.ndarray, flip: np.ndarray, padding: int
) -> np.ndarray:
  """Random crop of the zero-padded images back to their size (torchvision RandomCrop(pad)),
  mirrored left-right where `flip`; one gather does both."""
  n, h, w, c = images.shape
  padded = np.zeros((n, h + 2 * padding, w + 2 * padding, c), images.dtype)
  padded[:, padding : padding + h, padding : padding + w] = images
  rows = offset_y[:, None] + np.arange(h)  # [n, h]
  cols = offset_x[:, None] + np.where(flip[:, None], np.arange(w)[::-1], np.arange(w))  # [n, w]
  return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def cutout(images: np.ndarray, center_y: np.ndarray, center_x: np.ndarray, size: int) -> np.ndarray:
  """Zeroes a size x size square per image, in place, centred anywhere and clipped at the border
  (DeVries & Taylor 2017; applied after normalisation, so zero is the mean)."""
  _, h, w, _ = images.shape
  top = center_y - size // 2
  left = center_x - size // 2
  inside_y = (np.arange(h) >= top[:, None]) & (np.arange(h) < top[:, None] + size)  # [n, h]
  inside_x = (np.arange(w) >= left[:, None]) & (np.arange(w) < left[:, None] + size)  # [n, w]
  images[inside_y[:, :, None] & inside_x[:, None, :]] = 0
  return images


def normalize(images: np.ndarray, mean: np.ndarray | None, std: np.ndarray | None) -> np.ndarray:
  """uint8 -> float32 in [0, 1], then per-channel (x - mean) / std when mean/std are given."""
  x = images.astype(np.float32)
  if mean is None:
    x *= np.float32(1 / 255)
  else:  # (x / 255 - mean) / std as one multiply-add, in place
    std = np.asarray(std, np.float32)
    x *= 1 / (255 * std)
    x += -np.asarray(mean, np.float32) / std
  return x


def dihedral(images: np.ndarray, ops: np.ndarray) -> np.ndarray:
  """One of the 8 flips/90-degree rotations per square image: op bit 0 flips left-right, bits 1-2
  give the number of quarter turns."""
  out = np.empty_like(images)
  for op in range(8):
    rows = np.flatnonzero(ops == op)
    if len(rows) == 0:
      continue
    x = images[rows]
    if op & 1:
      x = x[:, :, ::-1]
    out[rows] = np.rot90(x, k=op >> 1, axes=(1, 2))
  return out
