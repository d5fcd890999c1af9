"""Timing helpers shared by the benchmark scripts.

The benchmark machine is shared and noisy, so candidates are timed *interleaved* (one repetition
of each in turn, repeated) and summarised by the median: a burst of load then hits every
candidate alike and the ratios measured in one run stay meaningful.
"""
import platform
import time
from typing import Callable, Dict, List, Sequence

import jax
import numpy as np


def block(tree):
  """Waits for every array in `tree` (jax or torch results) to be computed."""
  return jax.block_until_ready(tree)


def time_interleaved(fns: Dict[str, Callable[[], object]], reps: int = 7,
                     warmup: int = 1) -> Dict[str, float]:
  """Median seconds per call of each zero-argument function, calls interleaved round-robin.

  Every function is called `warmup` times first (compilation, caches), and must return its
  result so that asynchronous dispatch can be waited for.
  """
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


def machine() -> str:
  """One line naming the machine and the JAX backend, for the header of every table."""
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  import os
  devices = ', '.join(sorted({d.device_kind for d in jax.devices()}))
  return (f'{cpu}, {os.cpu_count()} cores; jax {jax.__version__} on {jax.default_backend()} '
          f'({devices})')


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
