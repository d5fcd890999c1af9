"""`train_and_evaluate(config, workdir)`: the one training loop for every experiment.

steps -> metrics -> validation (plateau rule, best checkpoint) -> latest checkpoint, resumable at
any step. The loop knows a task only through `dxnet_jax.train.tasks`.
"""

import dataclasses
import json
import math
import os
from typing import Any, Dict, Optional

import jax
from absl import logging

from dxnet_jax import data as data_lib
from dxnet_jax import evaluate
from dxnet_jax import models
from dxnet_jax import sharding
from dxnet_jax.train import checkpoint as ckpt_lib
from dxnet_jax.train import optim as optim_lib
from dxnet_jax.train import tasks as tasks_lib
from dxnet_jax.train import checks
from dxnet_jax.train import writer as writer_lib
from dxnet_jax.train.state import create_train_state
from dxnet_jax.train.steps import PMAP_AXIS, Runner


class Preempted(Exception):
  """A preemption notice (SIGTERM) arrived; the state was saved and the run can be resumed."""


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


@dataclasses.dataclass
class _Run:
  """What the loop's helpers share: the run's parts, built once by `train_and_evaluate`."""

  config: Any
  data: Any
  task: tasks_lib.Task
  runner: Runner
  writer: writer_lib.MetricWriter
  plateau: optim_lib.Plateau
  is_main: bool


def train_and_evaluate(config, workdir: str) -> Dict[str, Any]:
  """Trains `config` in `workdir` (resuming from its latest checkpoint); returns the results."""
  try:
    model = models.create(_model_config(config))
  except ValueError as e:
    raise checks.ConfigError(f'config.model: {e}') from None
  checks.validate_config(config, model=model)
  is_main = jax.process_index() == 0
  task = tasks_lib.get(config.task)
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
      workdir, task, keep=config.checkpoint_keep, async_save=config.async_checkpoints
  )
  checkpoints.check_compatible(fingerprint, workdir)
  target = ckpt_lib.abstract_like(state, runner.state_sharding(state))
  checkpoints.adopt_legacy_best(target)

  meta: Dict[str, Any] = {'epoch': 0}
  if checkpoints.latest_step() is not None:
    state, meta = checkpoints.restore(target)
    logging.info('Resumed %s from step %d (epoch %d).', workdir, int(state.step), meta['epoch'])
  plateau = optim_lib.Plateau.from_config(config.optim, meta.get('plateau'))
  if is_main:
    _save_config(config, workdir)
    logging.info(
        '%s: %s, %s parameters, %d steps (%d epochs of %d), global batch %d on %d devices (%s).',
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
  run = _Run(config, data, task, runner, writer, plateau, is_main)
  progress = writer_lib.Progress(total_steps, steps_per_epoch, config.batch_size, is_main)

  def save(epoch, metrics=None):
    if checkpoints.latest_step() == step:
      return
    meta = {
        'step': step,
        'epoch': epoch,
        'plateau': plateau.state_dict(),
        'fingerprint': fingerprint,
        'task': config.task,
    }
    checkpoints.save(step, runner.get_state(state), meta, metrics)

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
        scalars = {k: float(v) for k, v in sharding.fetch(metrics).items()}
        _check_finite(scalars, step, steps_per_epoch, checkpoints)
        train_means.add(scalars)
      if logged:
        means = train_means.pop()
        means['images_per_second'] = progress.report(step, means)
        writer.write(step, 'train', means)
      values = None
      if epoch_end and (epoch % config.eval_every_epochs == 0 or step == total_steps):
        values = _validate_epoch(run, state, step, epoch)
        state = state.replace(lr_scale=runner.put_scalar(plateau.scale))
      if epoch_end or periodic:
        save(epoch, values)
      if checkpoints.reached_preemption(step):
        save(epoch, values)
        checkpoints.wait()
        raise Preempted(
            f'Preempted (SIGTERM) at step {step}: saved the state to {checkpoints.directory}; '
            'rerun the same command to resume.'
        )
    checkpoints.wait()
  finally:
    writer.close()

  results = _final_results(config, workdir, checkpoints.best(), step, steps_per_epoch)
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
      f'{checkpoints.directory}. Lower config.optim.learning_rate (or check '
      'the data) and rerun with the same --workdir to resume from it.'
  )


def _validate_epoch(run: _Run, state, step: int, epoch: int) -> Optional[Dict[str, float]]:
  """Validation metrics and the plateau rule at one epoch end; None without validation data."""
  batches = run.data.validation()
  sums = run.runner.evaluate(state, batches) if batches is not None else {}
  if not sums:
    return None
  values = tasks_lib.finalize(sums)
  if run.config.optim.schedule == 'plateau' and run.plateau.update(values['loss']) and run.is_main:
    logging.info('Validation loss plateaued: LR scale now %g.', run.plateau.scale)
  run.writer.write(step, 'validation', {**values, 'lr_scale': run.plateau.scale})
  if run.is_main:
    logging.info(
        'epoch %d validation: %s', epoch, ' '.join(f'{k} {v:.4g}' for k, v in values.items())
    )
  return values


def _final_results(config, workdir: str, best, step: int, steps_per_epoch: int) -> Dict[str, Any]:
  """results.json: best validation metric and, for restoration, the benchmark protocol scores."""
  task = tasks_lib.get(config.task)
  best_validation = None
  if best is not None:
    best_validation = {
        'metric': task.best_metric,
        'value': best['metrics'][task.best_metric],
        'step': best['step'],
        'epoch': math.ceil(best['step'] / steps_per_epoch),
    }
  results: Dict[str, Any] = {
      'model': config.model.name,
      'task': config.task,
      'steps': step,
      'best_validation': best_validation,
      'parameters': models.parameter_count(config.model.to_dict()),
  }
  if config.task != 'classification' and config.final_eval and config.data.eval_sets:
    rows, caption = evaluate.evaluate_run(workdir, config)
    results['protocol'] = caption
    results['evaluation'] = [{k: v for k, v in r.items() if k != 'images'} for r in rows]
    if jax.process_index() == 0:
      logging.info('\n%s', evaluate.format_table(rows, caption))
  if jax.process_index() == 0:
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump(results, f, indent=1)
  return results
