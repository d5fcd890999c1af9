"""The train state: everything a step changes, so a checkpoint of it resumes a run exactly."""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from dxnet_jax import models


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  lr_scale: jax.Array  # set between epochs by the plateau rule
  rng: jax.Array  # raw uint32 key data (checkpointable); per-step keys fold in the step
  apply_fn: Any = flax.struct.field(pytree_node=False)
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  def variables(self, params=None):
    params = self.params if params is None else params
    if self.batch_stats:
      return {'params': params, 'batch_stats': self.batch_stats}
    return {'params': params}

  def step_key(self):
    return jax.random.fold_in(jax.random.wrap_key_data(self.rng), self.step)


def create_train_state(model, tx, input_shape, seed: int) -> TrainState:
  """Initialises parameters, BatchNorm statistics and optimizer state from `seed`."""
  init_key, rng = jax.random.split(jax.random.key(seed))
  variables = models.init_variables(model, input_shape, init_key)
  params = variables['params']
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=variables.get('batch_stats', {}),
      opt_state=tx.init(params),
      lr_scale=jnp.ones((), jnp.float32),
      rng=jax.random.key_data(rng),
      apply_fn=model.apply,
      tx=tx,
  )
