"""What every pipeline shares: the `Data` handle, seeding, host slicing, padding and prefetch.

Determinism: every random draw comes from `rng(seed, stream, ...)`, a numpy Generator seeded by a
tuple, so a batch is a pure function of (seed, step) and of the rows this process owns. The
in-memory pipelines draw the parameters of the whole global batch and keep this process's rows;
the host batches of all processes therefore concatenate to the batch of a single-process run.
"""

from __future__ import annotations

import dataclasses
import itertools
import queue
import threading
from typing import Any, Callable, Iterable, Iterator

import numpy as np

Batch = dict[str, np.ndarray]

# Stream tags keep the seeds of different random draws apart.
PERMUTATION, AUGMENT, NOISE, EVAL_NOISE = range(4)


def rng(seed: int, *keys: int) -> np.random.Generator:
  return np.random.default_rng([int(seed), *map(int, keys)])


@dataclasses.dataclass(frozen=True)
class Train:
  """The training stream: `iterate(start_step)` yields this process's batches from that step."""

  iterate_fn: Callable[[int], Iterator[Batch]]
  steps_per_epoch: int

  def iterate(self, start_step: int = 0) -> Iterator[Batch]:
    return self.iterate_fn(start_step)


@dataclasses.dataclass(frozen=True)
class Data:
  train: Train
  validation_fn: Callable[[], Iterable[Batch]] | None
  info: dict[str, Any]

  def validation(self) -> Iterable[Batch] | None:
    """A fresh finite iterable of padded per-host batches (each with `mask`), or None."""
    return None if self.validation_fn is None else self.validation_fn()


def host_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(
        f'global batch size {global_batch_size} must be a positive multiple of the '
        f'process count {process_count}'
    )
  return global_batch_size // process_count


def host_rows(global_batch_size: int, process_index: int, process_count: int) -> slice:
  """The rows of a global batch that belong to `process_index` (contiguous, equal parts)."""
  size = host_batch_size(global_batch_size, process_count)
  return slice(process_index * size, (process_index + 1) * size)


def from_batch_fn(
    batch_fn: Callable[[int], Batch], steps_per_epoch: int, prefetch_size: int
) -> Train:
  """A `Train` over a pure `batch_fn(step)`, prefetched in a background thread."""

  def iterate(start_step: int) -> Iterator[Batch]:
    batches = map(batch_fn, itertools.count(int(start_step)))
    return prefetch(batches, prefetch_size) if prefetch_size > 0 else batches

  return Train(iterate, steps_per_epoch)


class _Failure:

  def __init__(self, error: BaseException):
    self.error = error


_DONE = object()


def prefetch(iterator: Iterator[Any], size: int) -> Iterator[Any]:
  """Runs `iterator` in a daemon thread, `size` items ahead; stops when the consumer does.

  numpy releases the GIL in its large copies, so batch assembly overlaps the training step.
  Errors in the producer are raised in the consumer.
  """
  items: queue.Queue = queue.Queue(maxsize=size)
  stop = threading.Event()

  def put(item) -> bool:
    while not stop.is_set():
      try:
        items.put(item, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def produce():
    try:
      for item in iterator:
        if not put(item):
          return
    except BaseException as e:  # pylint: disable=broad-except
      put(_Failure(e))
      return
    put(_DONE)

  def consume():
    thread = threading.Thread(target=produce, daemon=True, name='dxnet-prefetch')
    thread.start()
    try:
      while True:
        item = items.get()
        if item is _DONE:
          return
        if isinstance(item, _Failure):
          raise item.error
        yield item
    finally:
      stop.set()

  return consume()


def pad_rows(batch: Batch, size: int) -> Batch:
  """Pads every array of `batch` with zero rows to `size` rows and adds `mask`."""
  n = len(next(iter(batch.values())))
  out = {}
  for key, value in batch.items():
    padded = np.zeros((size,) + value.shape[1:], value.dtype)
    padded[:n] = value
    out[key] = padded
  mask = np.zeros(size, np.float32)
  mask[:n] = 1.0
  out['mask'] = mask
  return out


def padded_batches(
    num_examples: int,
    global_batch_size: int,
    process_index: int,
    process_count: int,
    rows_fn: Callable[[np.ndarray], Batch],
) -> Iterator[Batch]:
  """Evaluation batches over examples 0..num_examples-1; every host gets the same number.

  Global batch k holds examples [k*B, (k+1)*B); this host takes its contiguous part, and rows past
  the end are zero padding with mask 0. `rows_fn(indices)` assembles the rows (indices non-empty).
  """
  size = host_batch_size(global_batch_size, process_count)
  rows = host_rows(global_batch_size, process_index, process_count)
  template = None
  for start in range(0, num_examples, global_batch_size):
    index = np.arange(start, start + global_batch_size)[rows]
    index = index[index < num_examples]
    if len(index):
      batch = rows_fn(index)
      template = template or {k: v[:0] for k, v in batch.items()}
    else:
      batch = template or {k: v[:0] for k, v in rows_fn(np.arange(1)).items()}
    yield pad_rows(batch, size)
