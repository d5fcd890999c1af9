"""Timing helpers shared by the benchmark scripts.

The benchmark machine is shared and noisy, so candidates are timed *interleaved* (one repetition
of each in turn, repeated) and summarised by the median: a burst of load then hits every
candidate alike and the ratios measured in one run stay meaningful.
"""

import contextlib
import fcntl
import os
import platform
import time
from typing import Callable, Dict, List, Sequence

import jax
import numpy as np


def block(tree):
  """Waits for every array in `tree` (jax or torch results) to be computed."""
  return jax.block_until_ready(tree)


def time_interleaved(
    fns: Dict[str, Callable[[], object]], reps: int = 7, warmup: int = 1
) -> Dict[str, float]:
  """Median seconds per call of each zero-argument function, calls interleaved round-robin.

  Every function is called `warmup` times first (compilation, caches), and must return its
  result so that asynchronous dispatch can be waited for. See `timing_lock` for running several
  benchmark processes at once.
  """
  with timing_lock():
    for fn in fns.values():
      for _ in range(warmup):
        block(fn())
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(reps):
      for name, fn in fns.items():
        start = time.perf_counter()
        block(fn())
        times[name].append(time.perf_counter() - start)
  return {name: float(np.median(t)) for name, t in times.items()}


LOCK_ENV = 'DXNET_BENCH_TIMING_LOCK'


@contextlib.contextmanager
def timing_lock():
  """Holds an exclusive lock on the file named by $DXNET_BENCH_TIMING_LOCK, if set.

  Compiling a step on a GPU host takes about a minute of CPU time and the GPU sits idle, so
  benchmark processes started together can compile side by side; with the variable set, only one
  of them times at any moment and the GPU (or the CPU cores) is theirs alone while it does.
  """
  path = os.environ.get(LOCK_ENV)
  if not path:
    yield
    return
  with open(path, 'a') as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)


def machine() -> str:
  """One line naming the machine and the JAX backend, for the header of every table."""
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  devices = ', '.join(sorted({d.device_kind for d in jax.devices()}))
  return (
      f'{cpu}, {os.cpu_count()} cores; jax {jax.__version__} on {jax.default_backend()} '
      f'({devices})'
  )


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
  """Prints a GitHub-markdown table (so it can be pasted into docs/performance.md as is)."""
  cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
  line = lambda r: '| ' + ' | '.join(c.rjust(w) for c, w in zip(r, widths)) + ' |'
  print(line(cells[0]))
  print('|' + '|'.join('-' * (w + 1) + ':' for w in widths) + '|')
  for r in cells[1:]:
    print(line(r))


def _fmt(value) -> str:
  if isinstance(value, float):
    return f'{value:.3g}' if abs(value) < 100 else f'{value:.0f}'
  return str(value)
