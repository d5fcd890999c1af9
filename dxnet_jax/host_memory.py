"""Keep freed host memory in the process, so XLA:CPU steps stop page-faulting.

Why: an XLA:CPU executable allocates its temporary buffer (2.4 GB for a DxNet 12-12-12 step at
batch 64) with `malloc` on every run. glibc serves allocations above 32 MB with a fresh `mmap`
and returns them to the kernel on `free`, so every step touches every page of it anew: 620,000
minor page faults and about 1.1 s of kernel time per step on a 2-core machine, 18% of the step's
wall time (docs/performance.md). Telling glibc to serve large blocks from its heap (no `mmap`),
never to trim that heap, and to use one arena makes the second step reuse the first step's pages:
zero faults per step.

The cost: the process keeps its peak heap (it does not shrink after a big step), which is what a
training process wants anyway. Only glibc (Linux) is touched; elsewhere this does nothing. The
settings must be made before JAX starts its worker threads (each thread keeps the arena it got
first), so call :func:`keep_freed_memory` before the first JAX computation. The training and
evaluation entry points and the benchmarks do; ``DXNET_HOST_MALLOC=system`` switches it off.
"""
import ctypes
import ctypes.util
import logging
import os
import platform

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


def keep_freed_memory() -> bool:
  """Makes glibc keep and reuse freed memory (see module docstring); True if applied.

  Idempotent. Does nothing (False) off glibc or with ``DXNET_HOST_MALLOC=system``; any other
  value than ``keep`` (the default) or ``system`` is an error.
  """
  choice = os.environ.get(ENV_VAR, 'keep').strip().lower()
  if choice not in ('keep', 'system'):
    raise ValueError(f'{ENV_VAR}={choice!r}: use "keep" (reuse freed host memory, the default) '
                     'or "system" (leave the C allocator as it is).')
  if choice == 'system':
    return False
  if _state['applied'] is not None:
    return _state['applied']
  libc = _glibc()
  applied = False
  if libc is not None:
    # -1 is SIZE_MAX once glibc converts it: never give the heap top back to the kernel.
    applied = all(libc.mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1), (_M_ARENA_MAX, 1)))
    if not applied:
      logging.warning('glibc mallopt refused a setting; host memory is allocated as usual.')
  _state['applied'] = applied
  return applied
