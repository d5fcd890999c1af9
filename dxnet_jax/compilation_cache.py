"""JAX's persistent compilation cache, on by default in a per-user folder.

Why: a fresh process otherwise compiles every program again (a DxNet step, its initialisation,
each image shape of inference), which dominates the start of every command on a CPU. Importing
`dxnet_jax` calls `enable()`, so the commands, the sweep's workers, the notebook and users' own
scripts all read and write one cache.

Where: `$DXNET_JAX_CACHE` if set (`off` disables it), else `~/.cache/dxnet_jax/jax`, beside the
native kernels' cache. Entries go into a subfolder named by this machine's CPU (`machine_key`):
JAX's cache key holds the program, the compile options, XLA flags and the jaxlib version, but on
the CPU not the instruction set XLA generated code for, so a home folder shared by different
machines must not hand one CPU's code to another. A user's own `JAX_COMPILATION_CACHE_DIR` (or
`jax_compilation_cache_dir` set before importing `dxnet_jax`) is left as it is, with its settings.

Values: `remembered(kind, key, compute)` keeps small JSON results that a process would otherwise
recompute by tracing a model (a receptive-field radius, a weight file's expected shapes) under
`values/` of the base folder, keyed by the package's sources (`code_version`): traced programs
are not cached by JAX, and a second start should not trace twice what it can read.

Sharing: the size is bounded (`MAX_BYTES`, least recently used entries evicted), and JAX then
takes a file lock around every read and write, so processes sharing the folder never read a
half-written entry. A damaged entry is a warning and a recompilation, never wrong code.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import platform
from typing import Any, Callable

ENV_VAR = 'DXNET_JAX_CACHE'
OFF = ('off', '0', 'none', 'false')
# Least recently used entries are evicted beyond this (a DxNet training step is a few MB).
MAX_BYTES = 2 * 2**30
# Programs that compile faster than this are not worth a file (JAX's default is 1 s).
MIN_COMPILE_SECS = 0.1


def default_folder() -> pathlib.Path:
  return pathlib.Path.home() / '.cache' / 'dxnet_jax' / 'jax'


def folder() -> pathlib.Path | None:
  """The cache's base folder as `$DXNET_JAX_CACHE` says; None when it is off."""
  value = os.environ.get(ENV_VAR, '').strip()
  if value.lower() in OFF:
    return None
  return pathlib.Path(value).expanduser() if value else default_folder()


def machine_key(cpuinfo: str = '/proc/cpuinfo') -> str:
  """A short name for the instruction set XLA:CPU compiles for: architecture and CPU flags."""
  features = ''
  try:
    with open(cpuinfo) as f:
      features = next((line for line in f if line.startswith(('flags', 'Features'))), '')
  except OSError:
    features = platform.processor()
  digest = hashlib.sha256(f'{platform.machine()}\0{features}'.encode()).hexdigest()[:12]
  return f'{platform.machine() or "cpu"}-{digest}'


def user_folder() -> str | None:
  """The cache folder the user chose through JAX itself, if any."""
  import jax  # pylint: disable=g-import-not-at-top

  return os.environ.get('JAX_COMPILATION_CACHE_DIR') or jax.config.jax_compilation_cache_dir


def enable() -> pathlib.Path | None:
  """Points JAX's persistent cache at this machine's folder; returns it (None: left as it was).

  Takes effect for compilations after the call, so call it before the first one (importing
  `dxnet_jax` does).
  """
  import jax  # pylint: disable=g-import-not-at-top

  base = folder()
  if base is None or user_folder():
    return None
  path = base / machine_key()
  jax.config.update('jax_compilation_cache_dir', str(path))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', MIN_COMPILE_SECS)
  # Eviction needs filelock (JAX raises without it); without it the folder grows unbounded.
  if 'JAX_COMPILATION_CACHE_MAX_SIZE' not in os.environ and importlib.util.find_spec('filelock'):
    jax.config.update('jax_compilation_cache_max_size', MAX_BYTES)
  return path


@functools.cache
def code_version() -> str:
  """A hash of the package's Python sources and the jax and flax versions: a value computed from
  a model's code is stale once any of them changes (a few milliseconds, once per process)."""
  root = pathlib.Path(__file__).parent
  digest = hashlib.sha256()
  for name in ('jax', 'jaxlib', 'flax'):
    try:
      digest.update(f'{name} {importlib.metadata.version(name)}\0'.encode())
    except importlib.metadata.PackageNotFoundError:
      pass
  for path in sorted(root.rglob('*.py')):
    digest.update(f'{path.relative_to(root)}\0'.encode())
    digest.update(path.read_bytes())
  return digest.hexdigest()[:16]


def remembered(kind: str, key: str, compute: Callable[[], Any]) -> Any:
  """`compute()`, a JSON value, read from the cache folder if an earlier process stored it under
  (`kind`, `key`, `code_version()`), else computed and stored (computed only, when the cache is
  off or its folder cannot be written)."""
  base = folder()
  if base is None:
    return compute()
  digest = hashlib.sha256(f'{kind}\0{key}\0{code_version()}'.encode()).hexdigest()[:24]
  path = base / 'values' / kind / f'{digest}.json'
  try:
    return json.loads(path.read_text())['value']
  except (OSError, ValueError, KeyError, TypeError):
    pass
  value = compute()
  try:  # written beside and renamed: a concurrent reader sees all of it or nothing
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f'.{os.getpid()}.tmp')
    partial.write_text(json.dumps({'kind': kind, 'key': key, 'value': value}))
    os.replace(partial, path)
  except OSError:
    pass
  return value
