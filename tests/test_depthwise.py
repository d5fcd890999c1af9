"""Every depthwise implementation equals XLA's grouped convolution, forward and backward."""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from dxnet_jax.ops import IMPLEMENTATIONS, default_impl, depthwise_conv2d, native_build
from dxnet_jax.ops.depthwise import fft_batch_slices

# 'native' needs the C++ kernels built (a compiler); tests/test_ops_native.py covers the fallback.
IMPLS = [
    pytest.param(
        i,
        marks=pytest.mark.skipif(
            i == 'native' and not native_build.available(), reason='no native kernels'
        ),
    )
    for i in IMPLEMENTATIONS
]

# (x shape, kernel size): square and non-square images and kernels, and an image smaller than
# the kernel (the 8x8 stage of a CIFAR DxNet with a 9x9 kernel, shrunk).
# The last case is large enough for 'fft' to run in batch slices on the CPU (`fft_batch_slices`).
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
def _value_and_vjp(x, kernel, impl):
  """Output and (input, kernel) gradients for a fixed cotangent, in one compiled call."""
  y, vjp = jax.vjp(lambda a, b: depthwise_conv2d(a, b, impl), x, kernel)
  return (y, *vjp(jnp.cos(jnp.arange(y.size, dtype=y.dtype)).reshape(y.shape)))


@functools.lru_cache(maxsize=None)
def _reference(case):
  shape, ksize = CASES[case]
  return _value_and_vjp(*_inputs(shape, ksize), 'xla')


@pytest.mark.parametrize('impl', [p for p in IMPLS if p.values[0] != 'xla'])
@pytest.mark.parametrize('case', range(len(CASES)))
def test_forward_and_gradients_match_xla(impl, case):
  outputs = _value_and_vjp(*_inputs(*CASES[case]), impl)
  for name, actual, expected in zip(('output', 'dx', 'dkernel'), outputs, _reference(case)):
    assert actual.shape == expected.shape, name
    _assert_close(actual, expected)


def test_fft_runs_in_batch_slices_on_cpu_from_32x32():
  assert fft_batch_slices((8, 32, 32, 12)) == 4
  assert fft_batch_slices((8, 16, 16, 12)) == 1  # small maps: one FFT
  assert fft_batch_slices((6, 32, 32, 12)) == 3  # the largest divisor of the batch up to 4
  assert fft_batch_slices((5, 32, 32, 12)) == 1
  assert fft_batch_slices((1, 64, 64, 12)) == 1
  assert fft_batch_slices((8, 32, 32, 12), backend='gpu') == 1
  x, kernel = _inputs((8, 32, 32, 2), (9, 9))
  compiled = jax.jit(lambda a, b: depthwise_conv2d(a, b, 'fft')).lower(x, kernel).compile()
  # One forward and one inverse 2-D FFT per slice of 2 images ([N, C, H, W] inside jnp.fft).
  assert len(re.findall(r'\[2,2,36,\d+\]\S* fft\(', compiled.as_text())) == 2 * 4


@pytest.mark.parametrize('impl', IMPLS)
def test_numerical_gradients(impl):
  x, kernel = _inputs((1, 5, 4, 2), (3, 3))
  check_grads(
      lambda a, b: depthwise_conv2d(a, b, impl),
      (x, kernel),
      order=1,
      modes=['rev'],
      atol=2e-2,
      rtol=2e-2,
      eps=1e-2,
  )


@pytest.mark.parametrize('impl', IMPLS)
def test_bfloat16(impl):
  x, kernel = _inputs((2, 6, 6, 3), (5, 5))
  xb, kb = x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)
  y, dx, dk = _value_and_vjp(xb, kb, impl)
  assert y.dtype == jnp.bfloat16
  _assert_close(
      y, depthwise_conv2d(xb.astype(jnp.float32), kb.astype(jnp.float32), 'xla'), rtol=3e-2
  )
  assert dx.dtype == jnp.bfloat16 and dk.dtype == jnp.bfloat16
  assert np.isfinite(np.asarray(dk, np.float32)).all()


def test_same_parameters_and_output_as_flax_grouped_conv():
  x, _ = _inputs((2, 7, 7, 4), (9, 9))
  conv = nn.Conv(4, (9, 9), padding='SAME', feature_group_count=4, use_bias=False)
  params = conv.init(jax.random.PRNGKey(0), x)['params']
  assert params['kernel'].shape == (9, 9, 1, 4)
  _assert_close(depthwise_conv2d(x, params['kernel']), conv.apply({'params': params}, x))


def test_auto_uses_the_backend_default():
  x, kernel = _inputs((1, 6, 6, 2), (3, 3))
  # 'native' where the C++ kernels build (tests/test_ops_native.py covers the fallback).
  assert default_impl('cpu') == ('native' if native_build.available() else 'fft')
  assert default_impl('gpu') == 'fft'
  assert default_impl('tpu') == 'xla'
  assert default_impl() in IMPLEMENTATIONS
  np.testing.assert_array_equal(
      depthwise_conv2d(x, kernel), depthwise_conv2d(x, kernel, default_impl())
  )


def test_errors():
  x, kernel = _inputs((1, 6, 6, 2), (3, 3))
  with pytest.raises(ValueError, match='Unknown depthwise implementation'):
    depthwise_conv2d(x, kernel, 'pallas')
  with pytest.raises(ValueError, match='odd'):
    depthwise_conv2d(x, jnp.zeros((4, 4, 1, 2)))
  with pytest.raises(ValueError, match='not depthwise'):
    depthwise_conv2d(x, jnp.zeros((3, 3, 1, 3)))
