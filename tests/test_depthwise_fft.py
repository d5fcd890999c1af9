"""The xUnit's depthwise convolution: XLA's grouped form, flax's parameters, and the FFT form."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from dxnet_jax.depthwise_fft import depthwise_conv2d_fft
from dxnet_jax.layers import depthwise_conv2d

# (x shape, kernel size): square and non-square images and kernels, and an image smaller than
# the kernel (the 8x8 stage of a CIFAR DxNet with a 9x9 kernel, shrunk).
CASES = [
    ((2, 6, 7, 3), (3, 3)),
    ((1, 9, 8, 2), (7, 7)),
    ((2, 5, 5, 4), (9, 9)),
    ((1, 6, 4, 2), (3, 5)),
    ((4, 32, 32, 2), (9, 9)),
]


def _inputs(shape, ksize, dtype=jnp.float32):
  kx, kk = jax.random.split(jax.random.PRNGKey(sum(shape) + ksize[0]))
  x = jax.random.normal(kx, shape, dtype)
  kernel = jax.random.normal(kk, (*ksize, 1, shape[-1]), dtype) / ksize[0]
  return x, kernel


def _assert_close(actual, expected, rtol=1e-4):
  actual, expected = np.asarray(actual, np.float32), np.asarray(expected, np.float32)
  scale = np.abs(expected).max()
  np.testing.assert_allclose(actual / scale, expected / scale, atol=rtol, rtol=0)


@functools.partial(jax.jit, static_argnums=2)
def _value_and_vjp(x, kernel, convolve):
  """Output and (input, kernel) gradients for a fixed cotangent, in one compiled call."""
  y, vjp = jax.vjp(convolve, x, kernel)
  return (y, *vjp(jnp.cos(jnp.arange(y.size, dtype=y.dtype)).reshape(y.shape)))


@pytest.mark.parametrize('batch_slices', [1, 2])
@pytest.mark.parametrize('case', range(len(CASES)))
def test_fft_form_has_the_values_and_gradients_of_xla(case, batch_slices):
  fft = functools.partial(depthwise_conv2d_fft, batch_slices=batch_slices)
  x, kernel = _inputs(*CASES[case])
  expected = _value_and_vjp(x, kernel, depthwise_conv2d)
  for name, actual, want in zip(('y', 'dx', 'dk'), _value_and_vjp(x, kernel, fft), expected):
    assert actual.shape == want.shape, name
    _assert_close(actual, want)


def test_fft_form_numerical_gradients_and_bfloat16():
  x, kernel = _inputs((1, 5, 4, 2), (3, 3))
  # Jitted: check_grads calls it many times, and eagerly each call dispatched its ops one by one.
  check_grads(
      jax.jit(depthwise_conv2d_fft),
      (x, kernel),
      order=1,
      modes=['rev'],
      atol=2e-2,
      rtol=2e-2,
      eps=1e-2,
  )
  x, kernel = _inputs((2, 6, 6, 3), (5, 5))
  xb, kb = x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)
  y, dx, dk = _value_and_vjp(xb, kb, depthwise_conv2d_fft)
  assert y.dtype == dx.dtype == dk.dtype == jnp.bfloat16
  _assert_close(y, depthwise_conv2d(x, kernel), rtol=3e-2)
  with pytest.raises(ValueError, match='odd'):
    depthwise_conv2d_fft(x, jnp.zeros((4, 4, 1, 3)))


def test_same_parameters_and_output_as_flax_grouped_conv():
  x, _ = _inputs((2, 7, 7, 4), (9, 9))
  conv = nn.Conv(4, (9, 9), padding='SAME', feature_group_count=4, use_bias=False)
  params = conv.init(jax.random.PRNGKey(0), x)['params']
  assert params['kernel'].shape == (9, 9, 1, 4)
  _assert_close(depthwise_conv2d(x, params['kernel']), conv.apply({'params': params}, x))
