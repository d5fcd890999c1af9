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

Sharing: the size is bounded (`MAX_BYTES`, least recently used entries evicted), and JAX then
takes a file lock around every read and write, so processes sharing the folder never read a
half-written entry. A damaged entry is a warning and a recompilation, never wrong code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib
import platform

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
