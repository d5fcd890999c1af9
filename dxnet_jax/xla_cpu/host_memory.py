"""Keep freed host memory in the process, so XLA:CPU steps stop page-faulting.

Why: an XLA:CPU executable allocates its temporary buffer (2.4 GB for a DxNet 12-12-12 step at
batch 64) with `malloc` on every run. glibc serves allocations above 32 MB with a fresh `mmap`
and returns them to the kernel on `free`, so every step touches every page of it anew: 620,000
minor page faults and about 1.1 s of kernel time per step on a 2-core machine, 18% of the step's
wall time (docs/performance.md). Telling glibc to serve large blocks from its heap (no `mmap`),
never to trim that heap, and to use one arena makes the second step reuse the first step's pages:
zero faults per step.

The costs: the process keeps its peak heap (it does not shrink after a big step), which is what a
training process wants anyway, and the one arena makes multi-threaded compilation contend for
it: on 2 CPU cores compiling takes 1.1-1.3x longer, and on a 16-core GPU host (one H200) compiling
a DxNet step took over 200 s instead of 61 s. So by default (``auto``) the settings are made only
when JAX will run on the CPU, the one backend whose step buffers live in host memory.

Only glibc (Linux) is touched; elsewhere this does nothing. The settings must be made before JAX
starts its worker threads (each thread keeps the arena it got first), so call
:func:`keep_freed_memory` before the first JAX computation. The training and evaluation entry
points and the benchmarks do. ``DXNET_HOST_MALLOC=keep`` applies them whatever the backend,
``system`` never.
"""

import ctypes
import ctypes.util
import importlib.metadata
import importlib.util
import os
import pkgutil
import platform
import sys
from typing import Optional

from absl import logging

ENV_VAR = 'DXNET_HOST_MALLOC'

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_state = {'applied': None}


def _glibc():
  if platform.system() != 'Linux':
    return None
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    libc.gnu_get_libc_version()
  except (OSError, AttributeError):  # musl, or no libc found: not glibc.
    return None
  return libc


def expected_accelerator() -> Optional[str]:
  """The accelerator platform JAX is going to use ('cuda', 'tpu', ...), None for the CPU.

  Decided without starting JAX (which would fix its threads' arenas): the platforms pinned by
  ``JAX_PLATFORMS`` or ``jax.config.jax_platforms`` if any, else any installed PJRT plugin
  (``jax_plugins.*`` modules or entry points, ``libtpu``), which JAX prefers to the CPU when it
  finds a device. A plugin installed on a machine without its device counts as an accelerator:
  set ``DXNET_HOST_MALLOC=keep`` there.
  """
  platforms = os.environ.get('JAX_PLATFORMS', '')
  jax = sys.modules.get('jax')
  if jax is not None and getattr(jax.config, 'jax_platforms', None):
    platforms = jax.config.jax_platforms
  if platforms.strip():
    first = platforms.split(',')[0].strip().lower()
    return None if first == 'cpu' else first
  plugins = []
  if importlib.util.find_spec('jax_plugins') is not None:
    import jax_plugins  # pylint: disable=g-import-not-at-top

    plugins += [m.name for m in pkgutil.iter_modules(jax_plugins.__path__)]
  plugins += [e.name for e in importlib.metadata.entry_points(group='jax_plugins')]
  if importlib.util.find_spec('libtpu') is not None:
    plugins.append('tpu')
  return plugins[0] if plugins else None


def keep_freed_memory(cpu_expected: Optional[bool] = None) -> bool:
  """Makes glibc keep and reuse freed memory (see module docstring); True if applied.

  Idempotent. ``DXNET_HOST_MALLOC``: ``auto`` (the default) applies it only when JAX will run on
  the CPU (`cpu_expected`, or if None :func:`expected_accelerator` is None), ``keep`` always,
  ``system`` never; any other value is an error. Does nothing (False) off glibc.
  """
  choice = os.environ.get(ENV_VAR, 'auto').strip().lower()
  if choice not in ('auto', 'keep', 'system'):
    raise ValueError(
        f'{ENV_VAR}={choice!r}: use "auto" (the default: reuse freed host memory '
        'when JAX runs on the CPU), "keep" (always) or "system" (never; leave the '
        'C allocator as it is).'
    )
  if choice == 'system':
    return False
  if _state['applied'] is not None:
    return _state['applied']
  if choice == 'auto' and not cpu_expected:
    accelerator = expected_accelerator()
    if accelerator is not None:
      logging.info(
          'Host allocator left as it is: JAX is expected to run on %r ' '(%s=keep overrides).',
          accelerator,
          ENV_VAR,
      )
      return False
  libc = _glibc()
  applied = False
  if libc is not None:
    # -1 is SIZE_MAX once glibc converts it: never give the heap top back to the kernel.
    applied = all(
        libc.mallopt(param, value) == 1
        for param, value in ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1), (_M_ARENA_MAX, 1))
    )
    if not applied:
      logging.warning('glibc mallopt refused a setting; host memory is allocated as usual.')
  _state['applied'] = applied
  return applied
