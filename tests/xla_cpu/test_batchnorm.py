"""The fused BatchNorm+ReLU equals flax's BatchNorm followed by ReLU: values, gradients, stats."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dxnet_jax.xla_cpu.batchnorm import (
    BatchNormReLU,
    batch_norm_relu,
    batch_norm_relu_given_stats,
    channel_stats,
)


class _Reference(nn.Module):
  use_running_average: bool = False

  @nn.compact
  def __call__(self, x):
    return nn.relu(
        nn.BatchNorm(
            use_running_average=self.use_running_average, momentum=0.9, epsilon=1e-5, name='bn'
        )(x)
    )


class _Fused(nn.Module):
  use_running_average: bool = False

  @nn.compact
  def __call__(self, x):
    return BatchNormReLU(
        use_running_average=self.use_running_average, momentum=0.9, epsilon=1e-5, name='bn'
    )(x)


def _inputs(shape=(4, 6, 5, 7), seed=0):
  k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(seed), 4)
  x = 2.0 * jax.random.normal(k1, shape) + 0.5
  scale = 1.0 + 0.3 * jax.random.normal(k2, shape[-1:])
  bias = 0.2 * jax.random.normal(k3, shape[-1:])
  upstream = jax.random.normal(k4, shape)
  return x, scale, bias, upstream


def _variables(x, scale, bias):
  # Jitted: applied eagerly, each op of the init compiled on its own.
  variables = jax.jit(_Reference().init)(jax.random.PRNGKey(0), x)
  variables = jax.tree.map(lambda v: v, variables)
  variables['params']['bn'] = {'scale': scale, 'bias': bias}
  return variables


def test_same_variable_tree_as_flax_batchnorm():
  x = jnp.ones((2, 3, 3, 5))
  ref = jax.eval_shape(_Reference().init, jax.random.PRNGKey(0), x)
  fused = jax.eval_shape(_Fused().init, jax.random.PRNGKey(0), x)
  assert ref == fused


@pytest.mark.parametrize('shape', [(4, 6, 5, 7), (3, 2, 2, 1)])
def test_training_values_gradients_and_running_stats_match(shape):
  x, scale, bias, upstream = _inputs(shape)
  variables = _variables(x, scale, bias)

  def loss(module, params, x):
    y, updates = module.apply(
        {'params': params, 'batch_stats': variables['batch_stats']}, x, mutable=['batch_stats']
    )
    return jnp.sum(y * upstream), (y, updates['batch_stats'])

  results = {}
  for name, module in (('ref', _Reference()), ('fused', _Fused())):
    # Jitted (one program each): eagerly, each op was compiled on its own.
    (_, aux), grads = jax.jit(
        jax.value_and_grad(functools.partial(loss, module), argnums=(0, 1), has_aux=True)
    )(variables['params'], x)
    results[name] = aux, grads
  (y_ref, stats_ref), grads_ref = results['ref']
  (y_fused, stats_fused), grads_fused = results['fused']
  np.testing.assert_allclose(y_fused, y_ref, rtol=1e-5, atol=1e-5)
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), stats_fused, stats_ref
  )
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), grads_fused, grads_ref
  )
  # The ReLU must actually cut something for the mask path to be tested.
  assert 0 < float(jnp.mean(y_ref == 0)) < 1


def test_eval_mode_uses_running_statistics():
  x, scale, bias, _ = _inputs()
  variables = _variables(x, scale, bias)
  variables['batch_stats']['bn'] = {'mean': jnp.linspace(-1, 1, 7), 'var': jnp.linspace(0.5, 2, 7)}
  y_ref = jax.jit(_Reference(use_running_average=True).apply)(variables, x)
  y_fused = jax.jit(_Fused(use_running_average=True).apply)(variables, x)
  np.testing.assert_allclose(y_fused, y_ref, rtol=1e-5, atol=1e-5)


def test_bfloat16_input_keeps_dtype_and_matches_float32():
  x, scale, bias, upstream = _inputs()
  # Jitted throughout (here and below): eagerly, each op was compiled on its own.
  forward = jax.jit(lambda x: batch_norm_relu(x, scale, bias, 1e-5))
  y32, _, _ = forward(x)
  y16, mean, var = forward(x.astype(jnp.bfloat16))
  assert y16.dtype == jnp.bfloat16 and mean.dtype == var.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(y16, np.float32), y32, rtol=2e-2, atol=2e-2)
  grad = jax.jit(jax.grad(lambda x: jnp.sum(batch_norm_relu(x, scale, bias, 1e-5)[0] * upstream)))
  g16 = grad(x.astype(jnp.bfloat16))
  g32 = grad(x)
  assert g16.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(g16, np.float32), g32, rtol=5e-2, atol=5e-2)


def _fused(x, scale, bias, axis_name=None):
  return batch_norm_relu(x, scale, bias, 1e-5, axis_name)[0]


def _given_stats(x, scale, bias, axis_name=None):
  """BatchNorm+ReLU with statistics computed outside, as a dense block does it."""
  mean, var = channel_stats(x, axis_name)
  return batch_norm_relu_given_stats(x, scale, bias, mean, var, 1e-5)


@pytest.mark.parametrize('op', [_fused, _given_stats], ids=['fused', 'given_stats'])
def test_axis_name_statistics_and_gradients_equal_one_big_batch(op):
  """With an axis name (pmap; here vmap, same collectives) it is the whole batch's BatchNorm."""
  x, scale, bias, upstream = _inputs((4, 3, 3, 5))
  xs, us = x.reshape(2, 2, 3, 3, 5), upstream.reshape(2, 2, 3, 3, 5)

  def local(x, u):
    f = lambda x, s, b: jnp.sum(op(x, s, b, 'batch') * u)
    return jax.grad(f, argnums=(0, 1, 2))(x, scale, bias)

  dx, dscale, dbias = jax.jit(jax.vmap(local, axis_name='batch'))(xs, us)
  ref = jax.jit(
      jax.grad(
          lambda x, s, b: jnp.sum(batch_norm_relu(x, s, b, 1e-5)[0] * upstream), argnums=(0, 1, 2)
      )
  )(x, scale, bias)
  np.testing.assert_allclose(dx.reshape(x.shape), ref[0], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(dscale.sum(0), ref[1], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(dbias.sum(0), ref[2], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('shape', [(4, 6, 5, 7), (3, 2, 2, 1)])
def test_given_statistics_values_and_gradients_equal_the_fused_op(shape):
  """Gradients through the statistics (returned as d mean, d var) add up to the fused op's."""
  x, scale, bias, upstream = _inputs(shape)
  loss_given = lambda x, s, b: jnp.sum(_given_stats(x, s, b) * upstream)
  loss_fused = lambda x, s, b: jnp.sum(batch_norm_relu(x, s, b, 1e-5)[0] * upstream)
  np.testing.assert_allclose(
      jax.jit(_given_stats)(x, scale, bias),
      jax.jit(batch_norm_relu, static_argnums=3)(x, scale, bias, 1e-5)[0],
      rtol=1e-5,
      atol=1e-6,
  )
  got = jax.jit(jax.grad(loss_given, argnums=(0, 1, 2)))(x, scale, bias)
  want = jax.jit(jax.grad(loss_fused, argnums=(0, 1, 2)))(x, scale, bias)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_statistics_of_pieces_serve_their_concatenation():
  """One (mean, var) per piece, concatenated, normalises the concatenation exactly."""
  x, scale, bias, upstream = _inputs((4, 6, 5, 7))
  pieces = (x[..., :3], x[..., 3:])

  def loss_pieces(a, b, s, c):
    stats = [channel_stats(p) for p in (a, b)]
    mean, var = (jnp.concatenate(parts) for parts in zip(*stats))
    y = batch_norm_relu_given_stats(jnp.concatenate([a, b], -1), s, c, mean, var, 1e-5)
    return jnp.sum(y * upstream)

  got = jax.jit(jax.grad(loss_pieces, argnums=(0, 1, 2, 3)))(*pieces, scale, bias)
  want = jax.jit(
      jax.grad(
          lambda x, s, b: jnp.sum(batch_norm_relu(x, s, b, 1e-5)[0] * upstream), argnums=(0, 1, 2)
      )
  )(x, scale, bias)
  np.testing.assert_allclose(jnp.concatenate(got[:2], -1), want[0], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got[2], want[1], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got[3], want[2], rtol=1e-4, atol=1e-5)
