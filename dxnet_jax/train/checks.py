"""Checks a config before anything compiles, so mistakes cost seconds, not a compile."""

import jax

from dxnet_jax import models
from dxnet_jax.train import optim as optim_lib
from dxnet_jax.train import tasks


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field and the fix."""


def validate_config(config, device_count: int = None, model=None):
  """Raises ConfigError naming the first problem found in `config`.

  `model`: the module the caller built from `config.model`; shaping that same object lets its
  later initialisation reuse this trace.
  """
  device_count = jax.device_count() if device_count is None else device_count
  try:
    tasks.get(config.task)
  except ValueError as e:
    raise ConfigError(f'config.task: {e}') from None
  try:
    model = models.create(config.model) if model is None else model
  except ValueError as e:
    raise ConfigError(f'config.model: {e}') from None
  model_task = models.model_task(config.model)
  if model_task != config.task:
    raise ConfigError(
        f'config.model.name {config.model.name!r} is a {model_task} model but '
        f'config.task is {config.task!r}.'
    )
  shape = (1,) + tuple(config.input_shape)
  try:
    models.init_variables(model, shape, abstract=True)
  except (ValueError, TypeError) as e:
    raise ConfigError(f'config.model: {e}') from None
  if config.batch_size <= 0 or config.batch_size % device_count:
    raise ConfigError(
        f'config.batch_size {config.batch_size} must be a positive multiple of '
        f'the {device_count} devices of this run (global batch, split evenly).'
    )
  if config.parallelism not in ('jit', 'pmap'):
    raise ConfigError(
        f"config.parallelism must be 'jit' or 'pmap', got " f'{config.parallelism!r}.'
    )
  optim = config.optim
  if optim.name not in optim_lib.OPTIMIZERS:
    raise ConfigError(
        f'config.optim.name {optim.name!r}: choose one of ' f'{optim_lib.OPTIMIZERS}.'
    )
  if optim.schedule not in optim_lib.SCHEDULES:
    raise ConfigError(
        f'config.optim.schedule {optim.schedule!r}: choose one of ' f'{optim_lib.SCHEDULES}.'
    )
  if not optim.learning_rate > 0:
    raise ConfigError(f'config.optim.learning_rate must be positive, got {optim.learning_rate}.')
  if optim.schedule == 'piecewise' and not all(0 < f < 1 for f in optim.decay_at):
    raise ConfigError(
        f'config.optim.decay_at must be fractions of training in (0, 1), got '
        f'{tuple(optim.decay_at)}.'
    )
  if config.num_epochs <= 0 and config.num_steps <= 0:
    raise ConfigError('Set config.num_epochs or config.num_steps to a positive number.')
  if config.checkpoint_keep < 1:
    raise ConfigError(
        f'config.checkpoint_keep must be at least 1, got ' f'{config.checkpoint_keep}.'
    )
