"""SpatialConv / conv2d: nn.Conv's 'SAME' kxk convolution as one product and shifted sums."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dxnet_jax import layers
from dxnet_jax.ops import native_build, spatial


def _lax(x, kernel):
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )


@pytest.mark.parametrize(
    'shape,k,cout',
    [
        ((2, 7, 6, 5), 3, 4),
        ((1, 9, 9, 2), 5, 3),
        ((3, 4, 4, 3), 1, 2),
        ((2, 2, 3, 4), 3, 1),
        ((1, 5, 5, 2), 9, 2),
    ],
)
def test_matmul_form_has_the_values_and_gradients_of_the_xla_convolution(shape, k, cout):
  # (2, 3) maps are smaller than the 3x3 window and a 9x9 kernel overhangs a 5x5 map: every
  # output still sums the taps that land inside the image, as 'SAME' padding does.
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  kernel = jax.random.normal(jax.random.PRNGKey(1), (k, k, shape[-1], cout))
  g = jax.random.normal(jax.random.PRNGKey(2), (*shape[:-1], cout))

  def value_and_grads(f):
    y, vjp = jax.vjp(f, x, kernel)
    return (y, *vjp(g))

  for ours, ref in zip(value_and_grads(spatial.conv2d_as_matmul), value_and_grads(_lax)):
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_forward_over_reverse_derivatives_match():
  # Sharpness analysis takes Hessian-vector products (jvp of grad) through the models.
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 6, 3))
  kernel = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 2))

  def hvp(f):
    grad = jax.grad(lambda x, k: jnp.sum(jnp.sin(f(x, k))), argnums=(0, 1))
    return jax.jvp(grad, (x, kernel), (jnp.ones_like(x), jnp.ones_like(kernel)))[1]

  for ours, ref in zip(hvp(spatial.conv2d_as_matmul), hvp(_lax)):
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    'impl',
    [
        'xla',
        'matmul',
        'auto',
        pytest.param(
            'native',
            marks=(pytest.mark.skipif(not native_build.available(), reason='no native kernels')),
        ),
    ],
)
@pytest.mark.parametrize('use_bias', [False, True])
def test_module_matches_flax_conv_parameters_and_outputs(impl, use_bias):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 5, 4))
  ref = nn.Conv(3, (3, 3), padding='SAME', use_bias=use_bias)
  ours = spatial.SpatialConv(3, 3, use_bias=use_bias, impl=impl)
  params = jax.tree.map(lambda p: p + 0.1, ref.init(jax.random.PRNGKey(1), x))
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(
      jnp.shape, ours.init(jax.random.PRNGKey(1), x)
  )
  loss = lambda module, p: jnp.sum(jnp.sin(module.apply(p, x)))
  for a, b in zip(
      jax.tree.leaves(jax.value_and_grad(loss, 1)(ours, params)),
      jax.tree.leaves(jax.value_and_grad(loss, 1)(ref, params)),
  ):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_default_is_native_or_the_matmul_form_for_narrowing_convolutions_on_the_cpu(monkeypatch):
  # The test suite runs on the CPU; 'native' where the C++ kernels build (test_ops_native.py).
  narrowing = 'native' if native_build.available() else 'matmul'
  assert spatial.default_impl((3, 3, 48, 12)) == narrowing  # a dense layer's 3x3 convolution
  assert spatial.default_impl((3, 3, 1, 64)) == 'xla'  # a restoration stem
  assert spatial.default_impl((3, 3, 3, 24)) == ('native' if native_build.available() else 'xla')
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert spatial.default_impl((3, 3, 48, 12)) == 'xla'


def test_bad_kernels_and_implementations_are_clear_errors():
  x = jnp.ones((1, 4, 4, 3))
  with pytest.raises(ValueError, match='odd square'):
    spatial.conv2d_as_matmul(x, jnp.ones((2, 2, 3, 1)))
  with pytest.raises(ValueError, match='odd square'):
    spatial.conv2d_as_matmul(x, jnp.ones((3, 3, 5, 1)))
  with pytest.raises(ValueError, match='impl must be one of'):
    spatial.conv2d(x, jnp.ones((3, 3, 3, 1)), impl='fft')


def test_models_use_it_for_stride_one_odd_kernels_only():
  assert isinstance(layers.conv(8, 3, jnp.float32, 'c'), spatial.SpatialConv)
  assert isinstance(layers.conv(8, 1, jnp.float32, 'c'), layers.PointwiseConv)
  assert isinstance(layers.conv(8, 7, jnp.float32, 'c', strides=2), nn.Conv)
