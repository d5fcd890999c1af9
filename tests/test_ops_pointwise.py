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
  assert (jax.tree.map(jnp.shape, params)
          == jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(1), x)))
  params = jax.tree.map(lambda p: p + 0.1, params)  # a non-zero bias too

  def loss(module, p, x):
    return jnp.sum(jnp.sin(module.apply(p, x)))

  for a, b in zip(jax.tree.leaves(jax.value_and_grad(loss, (1, 2))(ours, params, x)),
                  jax.tree.leaves(jax.value_and_grad(loss, (1, 2))(ref, params, x))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_bfloat16_and_errors():
  x = jnp.ones((1, 2, 2, 4), jnp.bfloat16)
  assert pointwise_conv2d(x, jnp.ones((1, 1, 4, 2), jnp.bfloat16)).dtype == jnp.bfloat16
  with pytest.raises(ValueError, match='kernel'):
    pointwise_conv2d(x, jnp.ones((3, 3, 4, 2)))
