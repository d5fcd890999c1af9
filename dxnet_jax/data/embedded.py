"""Image sets that ship with a dependency (scikit-image's bundled photos): data with no download.

They let the quick start train and evaluate a real denoiser on any machine. Names usable wherever
a folder is accepted (`train_dirs`, `validation_set`, `eval_sets`, `--set`):

  skimage:train   11 natural photos (astronaut, rocket, chelsea, coffee-free...), gray or RGB
  skimage:test    2 held-out photos (camera, coffee) never used for training

scikit-image comes with the `quickstart` extra: `pip install "dxnet_jax[quickstart]"`.
"""

from __future__ import annotations

import numpy as np

from dxnet_jax import _optional

PREFIX = 'skimage:'
SETS = {
    'skimage:train': (
        'astronaut',
        'rocket',
        'chelsea',
        'brick',
        'grass',
        'gravel',
        'moon',
        'coins',
        'clock',
        'hubble_deep_field',
        'immunohistochemistry',
    ),
    'skimage:test': ('camera', 'coffee'),
}


def is_embedded(name) -> bool:
  return isinstance(name, str) and name.startswith(PREFIX)


def load(name: str, channels: int):
  """(file-like name, uint8 [H, W, channels], was_gray) of each photo of an embedded set."""
  if name not in SETS:
    raise ValueError(f'unknown embedded image set {name!r}; known: {sorted(SETS)}')
  photos = _optional.require('skimage.data', 'quickstart', f'the bundled photos {name!r}')
  out = []
  for photo in SETS[name]:
    pixels = np.asarray(getattr(photos, photo)())
    gray = pixels.ndim == 2
    if gray:
      pixels = pixels[..., None]
    if channels == 1 and not gray:
      pixels = np.round(pixels[..., :3].astype(np.float64) @ [0.299, 0.587, 0.114])[..., None]
    elif channels == 3 and gray:
      pixels = np.repeat(pixels, 3, axis=-1)
    out.append((f'{photo}.png', np.clip(pixels, 0, 255).astype(np.uint8), gray))
  return out
