"""Estimates the level of additive white Gaussian noise in an image, for blind denoising.

Two classical steps, in numpy:
- Chen, Zhu & Heng, "An Efficient Statistical Method for Image Noise Level Estimation" (ICCV
  2015): the patches of a clean natural image span a low-dimensional subspace, so the
  covariance of the noisy image's patches has a tail of eigenvalues that are the noise variance
  alone. The eigenvalues of a sample covariance of pure noise spread about their mean as about
  their median, so the noise eigenvalues are the largest set of smallest eigenvalues with as
  many above their mean as below it, and sigma^2 is their mean (`noise_variance`).
- For gray images, Liu, Tanaka & Okutomi, "Single-Image Noise Level Estimation for Blind
  Denoising" (IEEE TIP 2013): the estimate is refined on weak-texture patches only, those whose
  sum of squared horizontal and vertical differences stays below what noise of the current
  level alone gives in 99% of patches (a chi-square quantile), three times over. On the first
  12 BSD68 images at sigma 5, Chen's rule alone was 3.3 too high on average (texture leaks into
  the 64 eigenvalues of a gray 8x8 patch), with the refinement 0.35 off (mean absolute error).
- Colour images: Chen's rule on the 192-dimensional patches of all three channels (within 0.3
  on the first 12 CBSD68 images at sigma 5-50; the refinement made it 1.2-1.5 too low, since
  choosing patches by their difference energy also picks those whose noise happened to be
  weak), unless it falls below half the mean of the three channels' gray estimates, which is
  then used. Camera noise is correlated across channels (demosaicing, colour conversion), so
  some mixtures of the channels hold almost none of it and the joint covariance's smallest
  eigenvalues see none: on RNI15's Dog and Bears photos the joint rule gave 0.5, the channels
  16.3 and 8.2. White noise of one level in every channel, as in the benchmarks, keeps the two
  close, and the joint rule is the sharper one there (mean absolute error 0.03-0.13 on those 12
  images against 0.39-0.67 for the channels' mean, which texture inflates at low levels: with
  80% as the bound, one CBSD68 image at sigma 5 took the channels' 8.1).
- Both assume noise independent from pixel to pixel. Noise that is spatially correlated too
  (demosaiced, denoised in camera or JPEG-compressed photos) is underestimated: give such photos
  a level by hand (`dxnet-denoise --sigma S`).

8x8 patches, all channels of a colour patch in one vector (one level per image: the channels'
common level), leaving out patches holding a pixel at exactly 0 or 1 (clipped, as in 8-bit
photos: in a 96x96 crop of Set12's cameraman, 61% dark, at sigma 20 they pulled the estimate
to 15.2; without them it is 17.8, still low, since the dark patches left are those whose noise
stayed above 0), at every pixel of small images and spaced so that at most MAX_PATCHES are used
on larger ones (Chen's code takes every third: on a 96x96 patch of pure noise at sigma 10 that
gave 8.6, too few patches for the eigenvalues of the noise to spread symmetrically; every pixel
gives 9.6). Measured on CBSD68 and BSD68 in docs/results.md (`python -m
benchmarks.noise_level`). Chosen over a learned estimator: no training, a few tenths of a second
per photo, and a documented behaviour.
"""

from __future__ import annotations

import numpy as np

PATCH = 8
MAX_PATCHES = 50_000
ITERATIONS = 3
# The joint colour estimate is kept while at least this fraction of the channels' mean.
CROSS_CHANNEL_RATIO = 0.5
_Z99 = 2.3263478740408408  # the standard normal's 99% quantile
_CHUNK = 8192  # patches per product when accumulating the covariance


def estimate_sigma(image: np.ndarray) -> float:
  """The noise level of `image` on the 0-255 scale.

  `image`: [H, W] or [H, W, C] (at least 8x8 px); float values on [0, 1] (the models' scale),
  or integers (uint8, uint16) scaled by their type's maximum.
  """
  pixels = np.asarray(image)
  if pixels.ndim == 2:
    pixels = pixels[..., None]
  if pixels.ndim != 3:
    raise ValueError(f'estimate_sigma takes an [H, W] or [H, W, C] image, got shape {pixels.shape}')
  if min(pixels.shape[:2]) < PATCH:
    raise ValueError(
        f'estimate_sigma needs an image of at least {PATCH}x{PATCH} px, got '
        f'{pixels.shape[1]}x{pixels.shape[0]}'
    )
  if pixels.shape[-1] > 1 and np.array_equal(
      pixels, np.broadcast_to(pixels[..., :1], pixels.shape)
  ):
    pixels = pixels[..., :1]  # a gray picture stored as colour: its channels' noise is one
  if np.issubdtype(pixels.dtype, np.integer):
    pixels = pixels.astype(np.float32) / np.float32(np.iinfo(pixels.dtype).max)
  pixels = pixels.astype(np.float32)
  if pixels.shape[-1] == 1:
    return float(_chen(pixels, refine=True) * 255)
  joint = _chen(pixels, refine=False)
  channels = np.mean([_chen(pixels[..., c : c + 1], refine=True) for c in range(pixels.shape[-1])])
  return float((joint if joint >= CROSS_CHANNEL_RATIO * channels else channels) * 255)


def _chen(pixels: np.ndarray, refine: bool) -> float:
  """Sigma (0-1 scale) of float [H, W, C] pixels by Chen's rule, refined on weak-texture patches
  (Liu et al.) if `refine`."""
  vectors, texture = patches(pixels)
  unclipped = np.all((vectors != 0) & (vectors != 1), axis=1)
  if unclipped.sum() >= 4 * vectors.shape[1]:  # clipped pixels carry less noise: leave them out
    vectors, texture = vectors[unclipped], texture[unclipped]
  differences = pixels.shape[-1] * 2 * PATCH * (PATCH - 1)
  sigma = np.sqrt(noise_variance(np.linalg.eigvalsh(covariance(vectors))))
  for _ in range(ITERATIONS if refine else 0):
    weak = texture < 2 * sigma**2 * chi_square_quantile(differences)
    if weak.sum() < 4 * vectors.shape[1]:  # too few patches for a covariance: keep the level
      break
    sigma = np.sqrt(noise_variance(np.linalg.eigvalsh(covariance(vectors[weak]))))
  return float(sigma)


def patch_stride(height: int, width: int) -> int:
  """The spacing of patches: 1, or more on large images so that at most about MAX_PATCHES
  patches are used."""
  count = (height - PATCH + 1) * (width - PATCH + 1)
  return max(1, int(np.ceil(np.sqrt(count / MAX_PATCHES))))


def patches(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(vectors [n, C*64], texture [n]) of the 8x8 patches of [H, W, C] pixels: each patch's
  values, and its sum of squared horizontal and vertical neighbour differences."""
  stride = patch_stride(*pixels.shape[:2])
  windows = np.lib.stride_tricks.sliding_window_view(pixels, (PATCH, PATCH), axis=(0, 1))
  windows = windows[::stride, ::stride]  # [rows, cols, C, 8, 8], a view
  windows = windows.reshape(-1, *windows.shape[2:])
  texture = np.square(np.diff(windows, axis=-1)).sum(axis=(1, 2, 3))
  texture += np.square(np.diff(windows, axis=-2)).sum(axis=(1, 2, 3))
  return windows.reshape(len(windows), -1), texture


def covariance(vectors: np.ndarray) -> np.ndarray:
  """The (biased) covariance of the rows of `vectors`, accumulated in float64."""
  total = np.zeros(vectors.shape[1])
  outer = np.zeros((vectors.shape[1],) * 2)
  for start in range(0, len(vectors), _CHUNK):
    chunk = vectors[start : start + _CHUNK].astype(np.float64)
    total += chunk.sum(axis=0)
    outer += chunk.T @ chunk
  mean = total / len(vectors)
  return outer / len(vectors) - np.outer(mean, mean)


def noise_variance(eigenvalues: np.ndarray) -> float:
  """Chen et al.'s noise variance: the mean of the largest set of smallest eigenvalues with as
  many above their mean as below it (0 if none is positive)."""
  values = np.sort(np.asarray(eigenvalues, np.float64))
  for size in range(len(values), 0, -1):
    subset = values[:size]
    mean = subset.mean()
    if np.sum(subset > mean) == np.sum(subset < mean):
      return float(max(mean, 0.0))
  return float(max(values[0], 0.0))


def chi_square_quantile(degrees: int) -> float:
  """The 99% quantile of chi-square with `degrees` degrees of freedom (Wilson-Hilferty: within
  0.1% of the exact value for the 112 or more degrees used here)."""
  h = 2.0 / (9.0 * degrees)
  return degrees * (1.0 - h + _Z99 * np.sqrt(h)) ** 3
