"""`train_and_evaluate(config, workdir)`: the one training loop for every experiment.

steps -> metrics -> validation (plateau rule, best checkpoint) -> latest checkpoint, resumable at
any step. The loop knows a task only through `dxnet_jax.train.tasks`.
"""

import json
import math
import os
import signal
import threading
from typing import Any, Dict

import jax
import numpy as np
from absl import logging

from dxnet_jax import data as data_lib
from dxnet_jax import distributed
from dxnet_jax import models
from dxnet_jax.train import checkpoint as ckpt_lib
from dxnet_jax.train import optim as optim_lib
from dxnet_jax.train import tasks as tasks_lib
from dxnet_jax.train import checks
from dxnet_jax.train import writer as writer_lib
from dxnet_jax.train.state import create_train_state
from dxnet_jax.train.steps import PMAP_AXIS, Runner


class Preempted(Exception):
  """SIGTERM arrived; the state was saved and the run can be resumed."""


class _StopFlag:
  """Set by SIGTERM (TPU preemption, `kill`); the loop saves and exits at the next step."""

  def __init__(self):
    self.event = threading.Event()
    self._previous = None

  def install(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, lambda *_: self.event.set())

  def uninstall(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def agreed(self) -> bool:
    """True when any process got the signal (all processes must stop at the same step)."""
    flag = np.int32(self.event.is_set())
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

      flag = np.max(multihost_utils.process_allgather(flag))
    return bool(flag)


def _model_config(config):
  """`config.model`, with BatchNorm synchronised over the pmap axis when running under pmap."""
  model_config = config.model.to_dict()
  if config.parallelism == 'pmap':
    model_config['bn_axis_name'] = PMAP_AXIS
  return model_config


def _save_config(config, workdir: str):
  path = os.path.join(workdir, 'config.json')
  with open(path + '.tmp', 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  os.replace(path + '.tmp', path)


class _MetricMeans:
  """Running means of the training metrics between two log lines."""

  def __init__(self):
    self.sums: Dict[str, float] = {}
    self.count = 0

  def add(self, scalars: Dict[str, float]):
    for k, v in scalars.items():
      self.sums[k] = self.sums.get(k, 0.0) + v
    self.count += 1

  def pop(self) -> Dict[str, float]:
    means = {k: v / max(self.count, 1) for k, v in self.sums.items()}
    self.sums, self.count = {}, 0
    return means


def train_and_evaluate(config, workdir: str) -> Dict[str, Any]:
  """Trains `config` in `workdir` (resuming from its latest checkpoint); returns the results."""
  checks.validate_config(config)
  is_main = jax.process_index() == 0
  task = tasks_lib.get(config.task)
  model = models.create(_model_config(config))
  data = data_lib.build(
      config,
      global_batch_size=config.batch_size,
      seed=config.seed,
      process_index=jax.process_index(),
      process_count=jax.process_count(),
  )
  steps_per_epoch = data.train.steps_per_epoch
  total_steps = config.num_steps if config.num_steps > 0 else config.num_epochs * steps_per_epoch
  num_epochs = math.ceil(total_steps / steps_per_epoch)
  tx = optim_lib.make_optimizer(config.optim, total_steps)
  schedule = optim_lib.schedule_fn(config.optim, total_steps)
  lr_fn = lambda step: config.optim.learning_rate * schedule(step)
  runner = Runner(config.parallelism, task, lr_fn)

  input_shape = (1,) + tuple(config.input_shape)
  state = jax.jit(lambda: create_train_state(model, tx, input_shape, config.seed))()
  fingerprint = ckpt_lib.model_fingerprint(config.model.name, state.params)
  if is_main:
    os.makedirs(workdir, exist_ok=True)
  checkpoints = ckpt_lib.Checkpoints(
      workdir, keep=config.checkpoint_keep, async_save=config.async_checkpoints
  )
  checkpoints.check_compatible(fingerprint, workdir)

  meta: Dict[str, Any] = {'best': None, 'epoch': 0}
  if checkpoints.latest_step() is not None:
    sharding = runner.state_sharding(state)
    state, meta = checkpoints.restore(ckpt_lib.LATEST, ckpt_lib.abstract_like(state, sharding))
    logging.info('Resumed %s from step %d (epoch %d).', workdir, int(state.step), meta['epoch'])
  plateau = optim_lib.Plateau.from_config(config.optim, meta.get('plateau'))
  if is_main:
    _save_config(config, workdir)
    logging.info(
        '%s: %s, %s parameters, %d steps (%d epochs of %d), global batch %d on %d ' 'devices (%s).',
        workdir,
        config.model.name,
        f'{models.count_params(state.params):,}',
        total_steps,
        num_epochs,
        steps_per_epoch,
        config.batch_size,
        jax.device_count(),
        config.parallelism,
    )

  step = int(jax.device_get(state.step))
  state = runner.put_state(state)
  writer = writer_lib.MetricWriter(workdir, enabled=is_main)
  progress = writer_lib.Progress(total_steps, steps_per_epoch, config.batch_size, is_main)
  stop = _StopFlag()
  stop.install()

  def make_meta(epoch):
    return {
        'step': step,
        'epoch': epoch,
        'plateau': plateau.state_dict(),
        'best': meta['best'],
        'fingerprint': fingerprint,
        'task': config.task,
    }

  def save(which, epoch):
    if checkpoints.latest_step(which) == step:
      return
    checkpoints.save(which, step, runner.get_state(state), make_meta(epoch))

  train_means = _MetricMeans()
  batches = data.train.iterate(step)
  progress.start(step)
  try:
    while step < total_steps:
      state, metrics = runner.train(state, next(batches))
      step += 1
      epoch_end = step % steps_per_epoch == 0 or step == total_steps
      epoch = math.ceil(step / steps_per_epoch)
      periodic = config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0
      logged = step % config.log_every_steps == 0
      if epoch_end or periodic or logged or step % config.nan_check_every_steps == 0:
        scalars = {k: float(v) for k, v in distributed.fetch(metrics).items()}
        _check_finite(scalars, step, steps_per_epoch, checkpoints)
        train_means.add(scalars)
      if logged:
        means = train_means.pop()
        means['images_per_second'] = progress.report(step, means)
        writer.write(step, 'train', means)
      if epoch_end and (epoch % config.eval_every_epochs == 0 or step == total_steps):
        _validate_epoch(
            config,
            data,
            runner,
            state,
            task,
            writer,
            plateau,
            meta,
            step,
            epoch,
            lambda: save(ckpt_lib.BEST, epoch),
            is_main,
        )
        state = state.replace(lr_scale=runner.put_scalar(plateau.scale))
      if epoch_end or periodic:
        save(ckpt_lib.LATEST, epoch)
      if stop.agreed():
        save(ckpt_lib.LATEST, epoch)
        checkpoints.wait()
        raise Preempted(
            f'SIGTERM at step {step}: saved the state to '
            f'{checkpoints.directories[ckpt_lib.LATEST]}; rerun the same command to '
            'resume.'
        )
    checkpoints.wait()
  finally:
    stop.uninstall()
    writer.close()

  results = _final_results(config, workdir, meta, step)
  checkpoints.close()
  return results


def _check_finite(scalars, step, steps_per_epoch, checkpoints):
  """Stops the run on a NaN/Inf loss or update, before the bad state can be saved."""
  bad = {k: v for k, v in scalars.items() if k in ('loss', 'update_norm') and not math.isfinite(v)}
  if not bad:
    return
  checkpoints.wait()
  last = checkpoints.latest_step()
  what = ', '.join(f'{k} is {v}' for k, v in bad.items())
  raise FloatingPointError(
      f'Training diverged at step {step} (epoch {step / steps_per_epoch:.2f}): {what}. Nothing '
      f'was saved after it; the last good checkpoint '
      f'({"step " + str(last) if last is not None else "none"}) is left in '
      f'{checkpoints.directories[ckpt_lib.LATEST]}. Lower config.optim.learning_rate (or check '
      'the data) and rerun with the same --workdir to resume from it.'
  )


def _validate_epoch(
    config, data, runner, state, task, writer, plateau, meta, step, epoch, save_best, is_main
):
  """Validation metrics, the plateau rule and the best checkpoint for one epoch end."""
  batches = data.validation()
  if batches is None:
    return
  sums = runner.evaluate(state, batches)
  if not sums:
    return
  values = tasks_lib.finalize(sums)
  if config.optim.schedule == 'plateau' and plateau.update(values['loss']) and is_main:
    logging.info('Validation loss plateaued: LR scale now %g.', plateau.scale)
  values['lr_scale'] = plateau.scale
  writer.write(step, 'validation', values)
  if is_main:
    logging.info(
        'epoch %d validation: %s', epoch, ' '.join(f'{k} {v:.4g}' for k, v in values.items())
    )
  metric = values[task.best_metric]
  best = meta['best']
  if best is None or (metric > best['value'] if task.higher_is_better else metric < best['value']):
    meta['best'] = {'metric': task.best_metric, 'value': metric, 'step': step, 'epoch': epoch}
    save_best()


def _final_results(config, workdir: str, meta, step: int) -> Dict[str, Any]:
  """results.json: best validation metric and, for restoration, the benchmark protocol scores."""
  results: Dict[str, Any] = {
      'model': config.model.name,
      'task': config.task,
      'steps': step,
      'best_validation': meta['best'],
      'parameters': models.parameter_count(config.model.to_dict()),
  }
  if config.task != 'classification' and config.final_eval and config.data.eval_sets:
    from dxnet_jax import evaluate  # pylint: disable=g-import-not-at-top

    rows, caption = evaluate.evaluate_run(workdir, config)
    results['protocol'] = caption
    results['evaluation'] = [{k: v for k, v in r.items() if k != 'images'} for r in rows]
    if jax.process_index() == 0:
      logging.info('\n%s', evaluate.format_table(rows, caption))
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump(results, f, indent=1)
  return results
