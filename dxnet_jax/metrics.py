"""Metrics and the exact evaluation protocols of the benchmarks.

Per-batch training metrics (`accuracy`, `psnr_per_example`, `mse_per_example`) take numpy or jax
arrays (also under `jit`) and return the same kind. The protocol functions (`denoising_scores`,
`super_resolution_scores`, `unclipped_scores`) are numpy-only and work in float64:

- Denoising (DnCNN `Demo_test_DnCNN.m`): the output is clipped to [0, 1] and rounded to 8 bits
  (`im2uint8`), PSNR and SSIM over the whole image against the uint8 clean image.
- Super-resolution: output rounded to 8 bits, converted to Y (ITU-R BT.601, MATLAB `rgb2ycbcr`,
  16-235, rounded), `scale` pixels removed at each border, PSNR and SSIM on Y. A gray reference
  image is used as it is: the output is reduced to gray (ITU-R 601 luma without offset, so
  R=G=B=v gives v) and compared on the 0-255 gray values, not on Y.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# ITU-R BT.601 Y from RGB in [0, 255], as MATLAB's rgb2ycbcr (offset 16, range 16-235).
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])  # no offset: R=G=B=v gives v


def _xp(*arrays):
  return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


# ---------------------------------------------------------------------------------------------
# Training metrics (numpy or jax).


def accuracy(logits, labels, mask=None):
  """Fraction of rows whose arg-max equals the label; `mask` (0/1 per row) drops padding."""
  xp = _xp(logits, labels, mask)
  correct = (xp.argmax(logits, axis=-1) == labels).astype(xp.float32)
  if mask is None:
    return correct.mean()
  return (correct * mask).sum() / xp.maximum(mask.sum(), 1.0)


def mse_per_example(x, y):
  """Mean squared error of each row of a batch, over all other axes."""
  xp = _xp(x, y)
  if xp is jnp:
    diff = jnp.asarray(x, jnp.float32) - jnp.asarray(y, jnp.float32)
  else:
    diff = np.asarray(x, np.float64) - np.asarray(y, np.float64)
  return (diff**2).reshape(diff.shape[0], -1).mean(axis=1)


def psnr_per_example(x, y, max_value: float = 1.0):
  """PSNR in dB of each row of a batch (images in [0, max_value]); averaging rows is the
  convention for batches of patches."""
  xp = _xp(x, y)
  return 10.0 * xp.log10(max_value**2 / mse_per_example(x, y))


# ---------------------------------------------------------------------------------------------
# Evaluation (numpy, float64).


def psnr(x, y, max_value: float = 255.0, rows: int = 256) -> float:
  """PSNR in dB of two whole images; inf when they are equal. Computed in strips of `rows`
  rows, so a large image needs no whole-image float64 copy."""
  x, y = np.broadcast_arrays(np.atleast_1d(x), np.atleast_1d(y))
  squared = 0.0
  for start in range(0, len(y), rows):
    diff = x[start : start + rows].astype(np.float64) - y[start : start + rows]
    squared += float(np.sum(diff * diff))
  mse = squared / y.size
  return float('inf') if mse == 0 else float(10.0 * np.log10(max_value**2 / mse))


def to_uint8(x) -> np.ndarray:
  """MATLAB im2uint8: clip [0, 1], scale to 255 and round half away from zero."""
  return np.floor(np.clip(np.asarray(x, np.float64), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def rgb_to_y(rgb) -> np.ndarray:
  """Luma Y in [16, 235] (float64, not rounded) of RGB values in [0, 255]; [..., 3] -> [...]."""
  return 16.0 + np.asarray(rgb, np.float64) @ _Y_WEIGHTS


def rgb_to_gray(rgb) -> np.ndarray:
  """ITU-R 601 luma without offset (float64) of RGB in [0, 255]; [..., 3] -> [...]."""
  return np.asarray(rgb, np.float64) @ _LUMA_WEIGHTS


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
  offsets = np.arange(size) - (size - 1) / 2.0
  g = np.exp(-(offsets**2) / (2.0 * sigma**2))
  return g / g.sum()


def _filter_valid(image: np.ndarray, window: np.ndarray) -> np.ndarray:
  """Separable 'valid' correlation of a 2-D image with a symmetric 1-D window."""
  n = len(window)
  rows = np.lib.stride_tricks.sliding_window_view(image, n, axis=0) @ window
  return np.lib.stride_tricks.sliding_window_view(rows, n, axis=1) @ window


def ssim(x, y, data_range: float = 255.0) -> float:
  """SSIM (Wang et al. 2004): Gaussian 11x11 window, sigma 1.5, K1=0.01, K2=0.03, mean over the
  'valid' region; images [H, W] or [H, W, C] (the mean over channels)."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  if x.shape != y.shape:
    raise ValueError(f'ssim: shapes differ {x.shape} vs {y.shape}')
  if x.ndim == 3:
    return float(np.mean([ssim(x[..., c], y[..., c], data_range) for c in range(x.shape[-1])]))
  window = _gaussian_window()
  if min(x.shape) < len(window):
    raise ValueError(f'ssim needs images of at least {len(window)} px per side, got {x.shape}')
  c1 = (0.01 * data_range) ** 2
  c2 = (0.03 * data_range) ** 2
  mu_x = _filter_valid(x, window)
  mu_y = _filter_valid(y, window)
  var_x = _filter_valid(x * x, window) - mu_x**2
  var_y = _filter_valid(y * y, window) - mu_y**2
  cov = _filter_valid(x * y, window) - mu_x * mu_y
  s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
  return float(s.mean())


def denoising_scores(output, clean) -> dict[str, float]:
  """DnCNN protocol: output in [0, 1] (any float) vs the uint8 clean image, whole image."""
  output = to_uint8(output)
  clean = np.asarray(clean)
  _check_shapes(output, clean)
  return {'psnr': psnr(output, clean), 'ssim': ssim(output, clean)}


def unclipped_scores(output, clean) -> dict[str, float]:
  """Scores of a float image as it is (no clipping, no rounding), e.g. the raw noisy input."""
  output = np.asarray(output, np.float64) * 255.0
  clean = np.asarray(clean)
  _check_shapes(output, clean)
  return {'psnr': psnr(output, clean), 'ssim': ssim(output, clean)}


def super_resolution_scores(output, hr, scale: int = 4) -> dict[str, float]:
  """SR protocol: output in [0, 1] [H, W, C] vs uint8 HR [H, W, 1 or 3]; Y channel, 8-bit
  rounding, `scale` pixels shaved at every border; a gray HR image is compared as gray."""
  output = to_uint8(output).astype(np.float64)
  hr = np.asarray(hr)
  if output.shape[:2] != hr.shape[:2]:
    raise ValueError(f'output {output.shape} and HR {hr.shape} differ in size')
  if hr.shape[-1] == 1:
    ref = hr[..., 0].astype(np.float64)
    out = output[..., 0] if output.shape[-1] == 1 else np.round(rgb_to_gray(output))
  else:
    ref = np.round(rgb_to_y(hr))
    out = np.round(rgb_to_y(output))
  if scale:
    ref = ref[scale:-scale, scale:-scale]
    out = out[scale:-scale, scale:-scale]
  return {'psnr': psnr(out, ref), 'ssim': ssim(out, ref)}


def _check_shapes(output, clean):
  if output.shape != clean.shape:
    raise ValueError(f'output {output.shape} and reference {clean.shape} differ in shape')
