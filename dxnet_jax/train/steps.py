"""Pure train and eval steps, and the two ways of running them data-parallel.

* 'jit' (default): the state is replicated and the batch is a global `jax.Array` sharded on the
  mesh's `data` axis; XLA inserts the gradient and BatchNorm reductions, so the step body is the
  single-device one. Works unchanged from one CPU to a pod.
* 'pmap': the same step body under `jax.pmap` with an explicit `batch` axis: gradients and
  metrics are averaged with `pmean`, and the model's BatchNorm layers need `axis_name='batch'`.
"""

import functools
from typing import Callable, Dict, Optional, Tuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from dxnet_jax import sharding
from dxnet_jax.train.state import TrainState
from dxnet_jax.train.tasks import Task

PMAP_AXIS = 'batch'


def train_step(
    state: TrainState, batch, *, task: Task, lr_fn: Callable, axis_name: Optional[str] = None
) -> Tuple[TrainState, Dict[str, jax.Array]]:
  """One optimisation step on `batch`; returns the new state and batch-mean metrics."""
  has_bn = bool(state.batch_stats)

  def loss_fn(params):
    outputs, updates = state.apply_fn(
        state.variables(params),
        batch['inputs'],
        train=True,
        mutable=['batch_stats'] if has_bn else [],
        rngs={'dropout': state.step_key()},
    )
    return task.loss(outputs, batch['targets']), (outputs, updates)

  (loss, (outputs, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  metrics = {'loss': loss, **task.train_metrics(outputs, batch['targets'])}
  if axis_name is not None:
    grads = jax.lax.pmean(grads, axis_name)
    metrics = jax.lax.pmean(metrics, axis_name)
  step_updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
  step_updates = jax.tree.map(lambda u: u * state.lr_scale.astype(u.dtype), step_updates)
  params = optax.apply_updates(state.params, step_updates)
  metrics['learning_rate'] = lr_fn(state.step) * state.lr_scale
  # The loss only shows a bad update one step later; this flags it before the state is saved.
  metrics['update_norm'] = optax.tree.norm(step_updates)
  new_state = state.replace(
      step=state.step + 1,
      params=params,
      opt_state=opt_state,
      batch_stats=updates['batch_stats'] if has_bn else state.batch_stats,
  )
  return new_state, metrics


def eval_step(
    state: TrainState, batch, *, task: Task, axis_name: Optional[str] = None
) -> Dict[str, jax.Array]:
  """Masked metric sums of one evaluation batch (BatchNorm in inference mode)."""
  outputs = state.apply_fn(state.variables(), batch['inputs'], train=False)
  sums = task.eval_sums(outputs, batch['targets'], batch['mask'].astype(jnp.float32))
  if axis_name is not None:
    sums = jax.lax.psum(sums, axis_name)
  return sums


class Runner:
  """Compiles the steps for one parallelism mode and moves state and batches to devices."""

  def __init__(self, mode: str, task: Task, lr_fn: Callable, mesh=None):
    if mode not in ('jit', 'pmap'):
      raise ValueError(f"parallelism must be 'jit' or 'pmap', got {mode!r}.")
    self.mode = mode
    if mode == 'jit':
      self.mesh = mesh if mesh is not None else sharding.data_mesh()
      self.replicated = NamedSharding(self.mesh, P())
      self.batch_sharding = NamedSharding(self.mesh, P('data'))
      self._train = jax.jit(functools.partial(train_step, task=task, lr_fn=lr_fn), donate_argnums=0)
      self._eval = jax.jit(functools.partial(eval_step, task=task))
    else:
      self._train = jax.pmap(
          functools.partial(train_step, task=task, lr_fn=lr_fn, axis_name=PMAP_AXIS),
          axis_name=PMAP_AXIS,
          donate_argnums=0,
      )
      self._eval = jax.pmap(
          functools.partial(eval_step, task=task, axis_name=PMAP_AXIS), axis_name=PMAP_AXIS
      )

  # State placement ------------------------------------------------------------------------
  def put_state(self, state: TrainState) -> TrainState:
    if self.mode == 'jit':
      return jax.device_put(state, self.replicated)
    return flax.jax_utils.replicate(state)

  def get_state(self, state: TrainState) -> TrainState:
    """A single-copy state (for checkpoints and evaluation outside the steps)."""
    if self.mode == 'jit':
      return state
    return flax.jax_utils.unreplicate(state)

  def put_scalar(self, value):
    """A float32 scalar placed like the state (for `lr_scale`)."""
    x = jnp.asarray(value, jnp.float32)
    if self.mode == 'jit':
      return jax.device_put(x, self.replicated)
    return flax.jax_utils.replicate(x)

  def state_sharding(self, abstract_state):
    return jax.tree.map(lambda _: self.replicated, abstract_state) if self.mode == 'jit' else None

  # Batches ----------------------------------------------------------------------------------
  def put_batch(self, batch):
    if self.mode == 'jit':
      return sharding.global_batch_from_local(batch, self.mesh)
    n = jax.local_device_count()

    def shard(x):
      x = np.asarray(x)
      if x.shape[0] % n:
        raise ValueError(
            f'per-host batch of {x.shape[0]} rows does not split over the {n} '
            'local devices; choose a batch size divisible by the device count.'
        )
      return x.reshape((n, x.shape[0] // n) + x.shape[1:])

    return jax.tree.map(shard, batch)

  # Steps ------------------------------------------------------------------------------------
  def train(self, state, batch):
    state, metrics = self._train(state, self.put_batch(batch))
    if self.mode == 'pmap':
      metrics = jax.tree.map(lambda m: m[0], metrics)
    return state, metrics

  def evaluate(self, state, batches) -> Dict[str, float]:
    totals = None
    for batch in batches:
      sums = self._eval(state, self.put_batch(batch))
      if self.mode == 'pmap':
        sums = jax.tree.map(lambda m: m[0], sums)
      totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    if totals is None:
      return {}
    return {k: float(v) for k, v in sharding.fetch(totals).items()}
