"""Where a run reports: the console, `metrics.jsonl` and TensorBoard events (process 0 only)."""

import json
import os
import sys
import time
import types
from typing import Dict, Optional

from absl import logging

from dxnet_jax import _optional


class MetricWriter:
  """Appends scalars to `workdir/metrics.jsonl` and TensorBoard; silent on other processes."""

  def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True):
    self.enabled = enabled
    self._tb = None
    self._jsonl = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')
    if tensorboard:
      self._tb = _tensorboard_writer(os.path.join(workdir, 'tensorboard'))

  def write(self, step: int, split: str, scalars: Dict[str, float]):
    if not self.enabled:
      return
    record = {
        'step': int(step),
        'split': split,
        'time': time.time(),
        **{k: float(v) for k, v in scalars.items()},
    }
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(f'{split}/{k}', float(v), int(step), wall_time=record['time'])
      self._tb.flush()

  def close(self):
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


def _tensorboard_writer(logdir: str):
  """TensorBoard's own event writer (no TensorFlow needed), or None with one warning.

  The `tensorboard` extra installs it; a run must not fail for want of a viewer when
  `metrics.jsonl` has the same numbers.
  """
  if '://' not in logdir and 'tensorflow' not in sys.modules:
    _write_without_tensorflow()
  try:
    summary = _optional.require('tensorboard.summary', 'tensorboard', 'TensorBoard event files')
  except ImportError as error:
    logging.warning('TensorBoard events are off; metrics go to metrics.jsonl only. %s', error)
    return None
  writer = summary.Writer(logdir)
  _keep_tensorflow_off_accelerators()
  return writer


def _write_without_tensorflow():
  """Makes TensorBoard write local files through its own stub of TensorFlow's file system.

  TensorBoard imports TensorFlow for its file system whenever it is installed, which cost the
  quick start seconds of every start (docs/performance.md, start-up); the stub writes the same
  event files. TensorBoard's documented switch is the module `tensorboard.compat.notf`, which
  its `no_tensorflow` build target provides; a URL logdir (gs://) keeps TensorFlow's.
  """
  sys.modules.setdefault('tensorboard.compat.notf', types.ModuleType('tensorboard.compat.notf'))


def _keep_tensorflow_off_accelerators():
  """Where TensorFlow is installed, TensorBoard writes through its file system (importing it);
  TensorFlow must never take accelerator memory from JAX."""
  tf = sys.modules.get('tensorflow')
  if tf is None:
    return
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TensorFlow was initialised elsewhere first; its choice stands
    pass


def duration(seconds: float) -> str:
  """A wall time as progress lines print it: '1h05m' or '4m09s'."""
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m' if h else f'{m}m{s:02d}s'


class Progress:
  """Console progress: epoch, step, loss, metric, LR, images/s and ETA."""

  def __init__(
      self, total_steps: int, steps_per_epoch: int, global_batch: int, enabled: bool = True
  ):
    self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch
    self.global_batch, self.enabled = global_batch, enabled
    self._last_time: Optional[float] = None
    self._last_step = 0

  def start(self, step: int):
    self._last_time, self._last_step = time.time(), step

  def report(self, step: int, scalars: Dict[str, float]) -> float:
    now = time.time()
    steps = max(step - self._last_step, 1)
    rate = steps * self.global_batch / max(now - self._last_time, 1e-9)
    self._last_time, self._last_step = now, step
    if self.enabled:
      eta = (self.total_steps - step) * self.global_batch / max(rate, 1e-9)
      epoch = step / self.steps_per_epoch
      values = ' '.join(f'{k} {v:.4g}' for k, v in scalars.items())
      logging.info(
          'epoch %.2f step %d/%d %s | %.1f img/s | ETA %s',
          epoch,
          step,
          self.total_steps,
          values,
          rate,
          duration(eta),
      )
    return rate
