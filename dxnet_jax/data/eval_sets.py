"""Restoration evaluation sets: whole images of any size, degraded exactly as the benchmarks do.

`load(name_or_folder, task=..., ...)` returns one `EvalImage(name, inputs, targets)` per file, in
file-name order:

- denoising: `targets` = the uint8 clean image [H, W, channels]; `inputs` = clean/255 plus
  N(0, (sigma/255)^2) noise, float32, not clipped. The noise of image i is drawn from a
  generator seeded by (seed, i), so every run and every model sees the same noisy images.
- super_resolution: `targets` = the uint8 HR image cropped to a multiple of `scale` (bottom/right
  edge); `inputs` = its PIL-bicubic LR image / 255, float32. A gray HR image keeps 1 channel in
  `targets` (the protocol scores it as gray) while `inputs` are replicated to `channels`.

The named sets (`NAMED_SETS`) are folders of the same name under the data root; any other
string is a folder path (relative ones resolve against the data root). A corrupt file in an
evaluation set is an error naming the file, since skipping it would change the benchmark number.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from dxnet_jax.data import degrade
from dxnet_jax.data import images as images_lib
from dxnet_jax.data import pipeline

NAMED_SETS = {
    'BSD68': 'denoising',
    'Set12': 'denoising',
    'Set5': 'super_resolution',
    'Set14': 'super_resolution',
    'BSD100': 'super_resolution',
}
_SSIM_WINDOW = 11  # the smallest side SSIM can score


class EvalImage(NamedTuple):
  name: str
  inputs: np.ndarray  # float32 [h, w, channels]: noisy image or LR image
  targets: np.ndarray  # uint8 [H, W, channels or 1]: clean or HR image


def task_of(name: str) -> str | None:
  """The task a named set belongs to; None for folders."""
  return NAMED_SETS.get(name)


def default_channels(task: str) -> int:
  return 1 if task == 'denoising' else 3


def load(
    name_or_folder: str,
    *,
    task: str,
    sigma: float | None = None,
    scale: int = 4,
    channels: int | None = None,
    seed: int = 0,
) -> list[EvalImage]:
  """Loads and degrades a named set or any image folder (see the module docstring)."""
  named_task = task_of(name_or_folder)
  if named_task and named_task != task:
    raise ValueError(f'{name_or_folder} is a {named_task} set, not a {task} set')
  channels = channels or default_channels(task)
  loaded = images_lib.load_folder(name_or_folder, channels, strict=True, what='evaluation set')
  pairs = degrade_images(loaded, task=task, sigma=sigma, scale=scale, channels=channels, seed=seed)
  shave = scale if task == 'super_resolution' else 0
  for pair in pairs:
    h, w = pair.targets.shape[:2]
    if min(h, w) < 2 * shave + _SSIM_WINDOW:
      raise ValueError(
          f'evaluation image {pair.name} is {w}x{h}; it needs at least '
          f'{2 * shave + _SSIM_WINDOW} px per side to be scored (SSIM window '
          f'{_SSIM_WINDOW} after a {shave}-px border shave)'
      )
  return pairs


def noise_rng(seed: int, index: int) -> np.random.Generator:
  """The generator of the noise of image `index` (float64 standard normals, row-major)."""
  return pipeline.rng(seed, pipeline.EVAL_NOISE, index)


def degrade_images(
    loaded: Sequence[images_lib.LoadedImage],
    *,
    task: str,
    sigma: float | None,
    scale: int,
    channels: int,
    seed: int,
) -> list[EvalImage]:
  """Makes the (inputs, targets) pairs of already loaded clean images."""
  if task == 'denoising':
    if sigma is None or np.ndim(sigma) != 0:
      raise ValueError(f'denoising evaluation needs one fixed sigma, got {sigma!r}')
    out = []
    for i, image in enumerate(loaded):
      clean = image.pixels.astype(np.float64) / 255.0
      noisy = degrade.add_noise(clean, sigma, noise_rng(seed, i), dtype=np.float64).astype(
          np.float32
      )
      out.append(EvalImage(image.name, noisy, image.pixels))
    return out
  if task == 'super_resolution':
    out = []
    for image in loaded:
      hr = degrade.modcrop(image.pixels[..., :1] if image.gray else image.pixels, scale)
      lr = degrade.downscale(hr, scale).astype(np.float32) / 255.0
      if lr.shape[-1] != channels:
        lr = np.repeat(lr, channels, axis=-1)
      out.append(EvalImage(image.name, lr, hr))
    return out
  raise ValueError(f"task must be 'denoising' or 'super_resolution', got {task!r}")
