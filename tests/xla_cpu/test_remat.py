"""ordered_remat / tied_checkpoint: same values and gradients as no remat, and less memory."""

import functools
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dxnet_jax import xla_cpu
from dxnet_jax.models.densenet import DenseLayer
from dxnet_jax.xla_cpu import dense_block
from dxnet_jax.xla_cpu.remat import ordered_remat, tied_checkpoint


def _block(num_layers, growth_rate, remat=False, axis_name=None):
  """The CPU's dense block of plain DenseNet-BC layers."""
  parts = xla_cpu.make_parts(axis_name=axis_name)
  layer = functools.partial(DenseLayer, growth_rate, parts)
  return dense_block.DenseBlock(num_layers, layer, parts, remat, axis_name=axis_name)


def _assert_trees_close(a, b, rtol=1e-5):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    scale = float(jnp.max(jnp.abs(x))) + 1e-6
    assert float(jnp.max(jnp.abs(x - y))) <= rtol * scale


def test_tied_checkpoint_matches_plain_function_with_static_and_integer_arguments():
  def f(w, x, key, square):
    noise = jax.random.normal(key, (x.shape[0], w.shape[1]))
    y = jnp.tanh(x @ w) + 0.1 * noise
    return y**2 if square else y

  w = jax.random.normal(jax.random.key(0), (5, 3))
  x = jax.random.normal(jax.random.key(1), (4, 5))
  key = jax.random.key(2)
  checkpointed = tied_checkpoint(f, static_argnums=3)
  for square in (True, False):
    loss = lambda fn, w, x: jnp.sum(jnp.sin(fn(w, x, key, square)))
    plain = jax.jit(jax.value_and_grad(lambda w, x: loss(f, w, x), argnums=(0, 1)))(w, x)
    tied = jax.jit(jax.value_and_grad(lambda w, x: loss(checkpointed, w, x), argnums=(0, 1)))(w, x)
    _assert_trees_close(plain, tied)


class _Layer(nn.Module):
  """BatchNorm, dropout and a convolution: state, randomness and parameters."""

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.BatchNorm(use_running_average=not train)(x)
    x = nn.Dropout(0.3, deterministic=not train)(x)
    return nn.Conv(4, (3, 3))(nn.relu(x))


def test_ordered_remat_module_keeps_variables_updates_and_gradients():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  plain, remat = _Layer(), ordered_remat(_Layer, static_argnums=2)()
  # Jitted: an eager init compiled each of its ops on its own.
  variables = jax.jit(plain.init, static_argnums=2)(jax.random.key(1), x, False)
  assert jax.tree.structure(
      jax.eval_shape(lambda key, x: remat.init(key, x, False), jax.random.key(1), x)
  ) == jax.tree.structure(variables)

  def loss(params, model):
    y, updates = model.apply(
        {**variables, 'params': params},
        x,
        True,
        mutable=['batch_stats'],
        rngs={'dropout': jax.random.key(7)},
    )
    return jnp.mean(jnp.square(y)), updates

  grad = jax.jit(jax.grad(loss, has_aux=True), static_argnums=1)
  g_plain, upd_plain = grad(variables['params'], plain)
  g_remat, upd_remat = grad(variables['params'], remat)
  _assert_trees_close(g_plain, g_remat)
  _assert_trees_close(upd_plain, upd_remat)


# What wraps each dense layer in the memory comparisons, in `ordered_remat`'s place.
REMAT_FORMS = {
    'none': lambda cls, static_argnums, sync=None: cls,
    'nn.remat': lambda cls, static_argnums, sync: nn.remat(cls, static_argnums=static_argnums),
    'ordered_remat': ordered_remat,
    'barrier': lambda cls, static_argnums, sync: ordered_remat(cls, static_argnums, sync='barrier'),
}
# The tests that compare compiled memory run in one xdist worker, where each (form, mode) is
# compiled once for all of them.
MEMORY = pytest.mark.xdist_group('remat_memory')


@functools.lru_cache(maxsize=None)
def _block_step_temp_bytes(form, remat=True):
  """Temporary memory of a compiled forward+backward pass through an 8-layer dense block whose
  layers `REMAT_FORMS[form]` wraps. Lowered from the variables' shapes: nothing is initialised
  (a jitted init compiled the whole block once more)."""
  with mock.patch.object(dense_block, 'ordered_remat', REMAT_FORMS[form]):
    block = _block(8, 12, remat)
    x = jnp.ones((16, 16, 16, 24))
    variables = jax.eval_shape(lambda: block.init(jax.random.key(0), x, False))

    def loss(params, batch_stats):
      y, _ = block.apply(
          {'params': params, 'batch_stats': batch_stats}, x, True, mutable=['batch_stats']
      )
      return jnp.mean(jnp.square(y))

    lowered = jax.jit(jax.grad(loss)).lower(variables['params'], variables['batch_stats'])
  return lowered.compile().memory_analysis().temp_size_in_bytes


@pytest.mark.slow
@MEMORY
@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='measured on XLA:CPU')
def test_ordered_remat_lowers_peak_memory_where_nn_remat_does_not():
  plain = _block_step_temp_bytes('none')
  flax_remat = _block_step_temp_bytes('nn.remat')
  ordered = _block_step_temp_bytes('ordered_remat')
  print(
      f'temp MiB: no remat {plain / 2**20:.1f}, nn.remat {flax_remat / 2**20:.1f}, '
      f'ordered_remat {ordered / 2**20:.1f}'
  )
  assert ordered < 0.6 * plain
  assert ordered < 0.6 * flax_remat


@pytest.mark.slow
def test_ordered_remat_under_pmap_with_synchronised_batch_norm():
  """The pmap trainer path: BatchNorm statistics averaged over the device axis inside remat."""
  x = jax.random.normal(jax.random.key(0), (1, 2, 8, 8, 6))  # [devices, batch, H, W, C]
  plain, remat = _block(3, 4, axis_name='batch'), _block(3, 4, True, axis_name='batch')
  variables = jax.pmap(lambda x: plain.init(jax.random.key(1), x, False), axis_name='batch')(x)

  def grads(model):
    def loss(params, batch_stats, x):
      y, _ = model.apply(
          {'params': params, 'batch_stats': batch_stats}, x, True, mutable=['batch_stats']
      )
      return jnp.mean(jnp.square(y))

    step = lambda v, x: jax.lax.pmean(jax.grad(loss)(v['params'], v['batch_stats'], x), 'batch')
    return jax.pmap(step, axis_name='batch')(variables, x)

  _assert_trees_close(grads(plain), grads(remat))


def test_barrier_sync_matches_plain_function():
  def f(w, x):
    return jnp.tanh(x @ w) ** 2

  w = jax.random.normal(jax.random.key(0), (5, 3))
  x = jax.random.normal(jax.random.key(1), (4, 5))
  loss = lambda fn, w, x: jnp.sum(jnp.sin(fn(w, x)))
  plain = jax.jit(jax.value_and_grad(lambda w, x: loss(f, w, x), argnums=(0, 1)))(w, x)
  barrier = tied_checkpoint(f, sync='barrier')
  tied = jax.jit(jax.value_and_grad(lambda w, x: loss(barrier, w, x), argnums=(0, 1)))(w, x)
  _assert_trees_close(plain, tied)


@pytest.mark.slow
@MEMORY
@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='measured on XLA:CPU')
def test_barrier_sync_also_lowers_peak_memory():
  plain = _block_step_temp_bytes('none')
  barrier = _block_step_temp_bytes('barrier')
  print(f'temp MiB: no remat {plain / 2**20:.1f}, barrier {barrier / 2**20:.1f}')
  assert barrier < 0.8 * plain


@pytest.mark.slow
@MEMORY
@pytest.mark.skipif(jax.default_backend() != 'cpu', reason='measured on XLA:CPU')
def test_speed_mode_keeps_less_than_no_remat_and_more_than_memory_mode():
  plain = _block_step_temp_bytes('ordered_remat', remat=False)
  speed = _block_step_temp_bytes('ordered_remat', remat='speed')
  memory = _block_step_temp_bytes('ordered_remat', remat='memory')
  print(
      f'temp MiB: no remat {plain / 2**20:.1f}, speed {speed / 2**20:.1f}, '
      f'memory {memory / 2**20:.1f}'
  )
  assert speed < 0.7 * plain
  assert memory < speed


@functools.lru_cache(maxsize=None)
def _small_block_grads(mode):
  """Parameter gradients of a 3-layer block's training-mode loss, remat `mode`: the modes'
  tests (one xdist group) share the plain block's, and the variables, made once."""
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 6))
  variables = _small_block_variables()
  model = _block(3, 4, mode)

  def loss(params):
    y, _ = model.apply({**variables, 'params': params}, x, True, mutable=['batch_stats'])
    return jnp.mean(jnp.square(y))

  return jax.jit(jax.grad(loss))(variables['params'])


@functools.lru_cache(maxsize=None)
def _small_block_variables():
  # Jitted: an eager init compiled each of its ops on its own.
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 6))
  return jax.jit(_block(3, 4).init, static_argnums=2)(jax.random.key(1), x, False)


@pytest.mark.xdist_group('remat_small_block')
@pytest.mark.parametrize('mode', [True, 'memory', 'speed'])
def test_dense_block_remat_modes_give_the_same_gradients(mode):
  _assert_trees_close(_small_block_grads(False), _small_block_grads(mode))


def test_unknown_sync_mode_is_a_clear_error():
  with pytest.raises(ValueError, match='sync must be one of'):
    tied_checkpoint(lambda x: x, sync='eager')
