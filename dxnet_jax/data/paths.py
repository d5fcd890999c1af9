"""Where data lives: one resolver for config paths, tests and the evaluate CLI.

Relative paths in `config.data` resolve against `$DXNET_DATA_DIR` when it is set, else against
`<repo root>/../shared/data` (the repo root is the parent of the `dxnet_jax` package). Absolute
paths and URLs (`gs://...`) are used as they are.
"""

from __future__ import annotations

import os
import pathlib

ENV_VAR = 'DXNET_DATA_DIR'


def data_root() -> pathlib.Path:
  """The folder that relative data paths resolve against."""
  env = os.environ.get(ENV_VAR)
  if env:
    return pathlib.Path(env).expanduser()
  repo_root = pathlib.Path(__file__).resolve().parents[2]
  return repo_root.parent / 'shared' / 'data'


def is_url(path: str | os.PathLike) -> bool:
  return '://' in str(path)


def resolve(path: str | os.PathLike | None) -> str | pathlib.Path | None:
  """Resolves a config path; URLs stay strings (tfds and tf.io read them)."""
  if path is None or is_url(path):
    return path
  path = pathlib.Path(path).expanduser()
  return path if path.is_absolute() else data_root() / path


def require_dir(path: str | os.PathLike, what: str = 'data folder') -> pathlib.Path:
  """Resolves `path` and fails with a message that names the path and the fix."""
  resolved = resolve(path)
  if is_url(resolved):
    raise ValueError(f'{what} {resolved!r}: local folders only (URLs are for tfds data_dir).')
  if not resolved.is_dir():
    raise FileNotFoundError(
        f'{what} not found: {resolved} (from {str(path)!r}). Relative paths resolve against '
        f'{data_root()}; set ${ENV_VAR} to the folder that holds the data, or give an absolute '
        'path in config.data.'
    )
  return resolved
