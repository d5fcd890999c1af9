"""The trainer's config fields with their defaults; experiment configs start from `base_config`.

Fields
  seed                 parameter init, data order, augmentation, dropout and noise all derive
                       from it.
  task                 'classification' | 'denoising' | 'super_resolution'.
  model                ConfigDict with `name` (see `python -m dxnet_jax.models`), `kernels`
                       ('auto' | 'xla' | 'gpu' | 'cpu', see `dxnet_jax.kernels`) and overrides,
                       e.g. dtype='bfloat16', remat=True, xunit_kernel=7.
  data                 `dxnet_jax.data.default_config(task, ...)` (fields in dxnet_jax.data).
  input_shape          one example's input (H, W, C) used to initialise the model.
  batch_size           global batch over all devices and hosts.
  num_epochs / num_steps   length of training; num_steps > 0 wins.
  optim                name ('sgd' | 'adam'), learning_rate, momentum, nesterov, weight_decay,
                       b1, b2, eps, schedule ('constant' | 'plateau' | 'piecewise' | 'cosine'),
                       decay_at (fractions of training), decay_factor, plateau_* (factor,
                       patience, threshold, cooldown, min_scale).
  parallelism          'jit' (global arrays over a mesh) or 'pmap'.
  log_every_steps      console / metrics.jsonl / TensorBoard interval.
  checkpoint_every_steps   periodic save interval (0: only at epoch ends); epoch ends always save.
  checkpoint_keep      how many latest checkpoints to keep (the best validated one stays besides).
  eval_every_epochs    validation interval (the plateau rule and the best checkpoint use it).
  final_eval           restoration: score eval_sets with the benchmark protocol at the end.
  async_checkpoints    write checkpoints in the background.
  nan_check_every_steps    how often the loss is checked for NaN/Inf (1: every step).
"""

import ml_collections

from dxnet_jax import data as data_lib


def optim_config(name: str = 'sgd', **overrides) -> ml_collections.ConfigDict:
  optim = ml_collections.ConfigDict(
      dict(
          name=name,
          learning_rate=0.1,
          momentum=0.9,
          nesterov=True,
          weight_decay=0.0,
          b1=0.9,
          b2=0.999,
          eps=1e-8,
          schedule='constant',
          decay_at=(0.5,),
          decay_factor=0.1,
          plateau_factor=0.5,
          plateau_patience=10,
          plateau_threshold=1e-4,
          plateau_cooldown=0,
          plateau_min_scale=0.0,
      )
  )
  optim.update(overrides)
  return optim


def base_config(task: str, model: str, input_shape, **data_overrides) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.task = task
  config.model = ml_collections.ConfigDict({'name': model, 'kernels': 'auto'})
  config.data = data_lib.default_config(task, **data_overrides)
  config.input_shape = tuple(input_shape)
  config.batch_size = 64
  config.num_epochs = 1
  config.num_steps = 0
  config.optim = optim_config()
  config.parallelism = 'jit'
  config.log_every_steps = 50
  config.checkpoint_every_steps = 0
  config.checkpoint_keep = 3
  config.eval_every_epochs = 1
  config.final_eval = True
  config.async_checkpoints = True
  config.nan_check_every_steps = 1
  return config
