"""PointwiseConv is nn.Conv(features, (1, 1)) as a matmul: same parameters, values, gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dxnet_jax.ops.pointwise import PointwiseConv, pointwise_conv2d


@pytest.mark.parametrize('use_bias', [False, True])
def test_matches_flax_conv(use_bias):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 4, 6))
  ref = nn.Conv(3, (1, 1), use_bias=use_bias)
  ours = PointwiseConv(3, use_bias=use_bias)
  params = ref.init(jax.random.PRNGKey(1), x)
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(
      jnp.shape, ours.init(jax.random.PRNGKey(1), x)
  )
  params = jax.tree.map(lambda p: p + 0.1, params)  # a non-zero bias too

  def loss(module, p, x):
    return jnp.sum(jnp.sin(module.apply(p, x)))

  for a, b in zip(
      jax.tree.leaves(jax.value_and_grad(loss, (1, 2))(ours, params, x)),
      jax.tree.leaves(jax.value_and_grad(loss, (1, 2))(ref, params, x)),
  ):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_bfloat16_and_errors():
  x = jnp.ones((1, 2, 2, 4), jnp.bfloat16)
  assert pointwise_conv2d(x, jnp.ones((1, 1, 4, 2), jnp.bfloat16)).dtype == jnp.bfloat16
  with pytest.raises(ValueError, match='kernel'):
    pointwise_conv2d(x, jnp.ones((3, 3, 4, 2)))


def _plain(x, kernel):
  return jnp.einsum('...c,cd->...d', x, kernel[0, 0])


@pytest.mark.parametrize(
    'shape,row_chunks',
    [
        ((4, 6, 6, 5), 8),
        ((2, 5, 5, 5), 8),
        ((3, 7, 5), 4),
        ((2, 4, 4, 5), None),
        ((2, 96, 96, 5), None),
    ],
)
def test_row_chunks_give_the_same_values_and_gradients(shape, row_chunks):
  # (2, 5, 5) has 50 rows: 8 does not divide it, so 5 slices are used.
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  kernel = jax.random.normal(jax.random.PRNGKey(1), (1, 1, 5, 3))
  loss = lambda f: lambda x, k: jnp.sum(jnp.sin(f(x, k)))
  ours = jax.value_and_grad(loss(lambda x, k: pointwise_conv2d(x, k, row_chunks)), (0, 1))
  ref = jax.value_and_grad(loss(_plain), (0, 1))
  for a, b in zip(jax.tree.leaves(ours(x, kernel)), jax.tree.leaves(ref(x, kernel))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)  # sums over up to 18,432 rows


def test_row_chunks_make_a_batched_product_on_cpu_float32_only(monkeypatch):
  x, kernel = jnp.ones((4, 64, 64, 6)), jnp.ones((1, 1, 6, 3))  # 16,384 rows

  def batch_sizes(row_chunks, x=x, kernel=kernel):
    jaxpr = jax.make_jaxpr(lambda x, k: pointwise_conv2d(x, k, row_chunks))(x, kernel)
    dots = [e for e in jaxpr.eqns if e.primitive.name == 'dot_general']
    assert len(dots) == 1
    _, (batch, _) = dots[0].params['dimension_numbers']
    return [dots[0].invars[0].aval.shape[d] for d in batch]

  assert batch_sizes(None) == [8]  # the CPU default (the test suite runs on the CPU)
  assert batch_sizes(1) == []
  assert batch_sizes(None, x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)) == []
  assert batch_sizes(None, x[:, :32]) == []  # too few rows to be worth slicing
  assert batch_sizes(4, x[:, :32]) == [4]  # unless asked for
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert batch_sizes(None) == []


def test_row_chunks_keep_forward_mode_derivatives():
  # Sharpness analysis takes Hessian-vector products (jvp of grad) through the models.
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 5))
  kernel = jax.random.normal(jax.random.PRNGKey(1), (1, 1, 5, 3))
  hvp = lambda f: jax.jvp(
      jax.grad(lambda k: jnp.sum(jnp.sin(f(x, k)))), (kernel,), (jnp.ones_like(kernel),)
  )[1]
  np.testing.assert_allclose(
      hvp(lambda x, k: pointwise_conv2d(x, k, 8)), hvp(_plain), rtol=1e-5, atol=1e-5
  )


@pytest.mark.parametrize('row_chunks', [0, -2, 1.5])
def test_row_chunks_must_be_positive_integers(row_chunks):
  with pytest.raises(ValueError, match='row_chunks'):
    pointwise_conv2d(jnp.ones((1, 2, 2, 4)), jnp.ones((1, 1, 4, 2)), row_chunks)
