"""Matplotlib for the analysis figures: imported on use (the `plots` extra), and PNG writing."""

from __future__ import annotations

import os

from dxnet_jax import _optional


def pyplot():
  """matplotlib.pyplot. No backend is forced: notebooks keep their inline backend, and the
  command-line tools select Agg."""
  return _optional.require('matplotlib.pyplot', 'plots', 'plotting')


def save(fig, path: str, dpi: int) -> str:
  """Writes `fig` to the PNG `path` (its folder created) and closes it; returns `path`."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=dpi)
  pyplot().close(fig)
  return path
