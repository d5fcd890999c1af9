"""The CPU's convolutions: every form equals XLA's convolution, and `Conv` equals nn.Conv."""

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dxnet_jax import layers
from dxnet_jax.xla_cpu import conv
from dxnet_jax.xla_cpu.matmul_conv import conv2d_as_matmul, pointwise_conv2d


def _lax(x, kernel):
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )


@functools.partial(jax.jit, static_argnums=0)  # eagerly, each op was compiled on its own
def _values_and_grads(f, x, kernel):
  y, vjp = jax.vjp(f, x, kernel)
  return (y, *vjp(jnp.cos(jnp.arange(y.size, dtype=y.dtype)).reshape(y.shape)))


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
  for ours, ref in zip(
      _values_and_grads(conv2d_as_matmul, x, kernel), _values_and_grads(_lax, x, kernel)
  ):
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_forward_over_reverse_derivatives_match():
  # Sharpness analysis takes Hessian-vector products (jvp of grad) through the models.
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 6, 3))
  kernel = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 2))

  def hvp(f):
    grad = jax.grad(lambda x, k: jnp.sum(jnp.sin(f(x, k))), argnums=(0, 1))
    return jax.jit(jax.jvp, static_argnums=0)(  # one program, not one per op
        grad, (x, kernel), (jnp.ones_like(x), jnp.ones_like(kernel))
    )[1]

  for f in (conv2d_as_matmul, lambda x, k: pointwise_conv2d(x, k[1:2, 1:2], 8)):
    reference = _lax if f is conv2d_as_matmul else lambda x, k: _lax(x, k[1:2, 1:2])
    for ours, ref in zip(hvp(f), hvp(reference)):
      np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


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
  plain = lambda x, k: jnp.einsum('...c,cd->...d', x, k[0, 0])
  loss = lambda f: lambda x, k: jnp.sum(jnp.sin(f(x, k)))
  ours = jax.jit(jax.value_and_grad(loss(lambda x, k: pointwise_conv2d(x, k, row_chunks)), (0, 1)))
  ref = jax.jit(jax.value_and_grad(loss(plain), (0, 1)))
  got, want = ours(x, kernel), ref(x, kernel)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)  # sums over up to 18,432 rows


def test_row_chunks_make_a_batched_product_for_large_float32_products_only():
  x, kernel = jnp.ones((4, 64, 64, 6)), jnp.ones((1, 1, 6, 3))  # 16,384 rows

  def batch_sizes(row_chunks, x=x, kernel=kernel):
    jaxpr = jax.make_jaxpr(lambda x, k: pointwise_conv2d(x, k, row_chunks))(x, kernel)
    (dot,) = [e for e in jaxpr.eqns if e.primitive.name == 'dot_general']
    _, (batch, _) = dot.params['dimension_numbers']
    return [dot.invars[0].aval.shape[d] for d in batch]

  assert batch_sizes(None) == [8]
  assert batch_sizes(1) == []
  assert batch_sizes(None, x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)) == []
  assert batch_sizes(None, x[:, :32]) == []  # too few rows to be worth slicing
  assert batch_sizes(4, x[:, :32]) == [4]  # unless asked for


@pytest.mark.parametrize('row_chunks', [0, -2, 1.5])
def test_bad_arguments_are_clear_errors(row_chunks):
  x = jnp.ones((1, 4, 4, 3))
  with pytest.raises(ValueError, match='row_chunks'):
    pointwise_conv2d(x, jnp.ones((1, 1, 3, 2)), row_chunks)
  with pytest.raises(ValueError, match='kernel'):
    pointwise_conv2d(x, jnp.ones((3, 3, 3, 2)))
  with pytest.raises(ValueError, match='odd square'):
    conv2d_as_matmul(x, jnp.ones((2, 2, 3, 1)))


@pytest.mark.parametrize(
    'kernel_size,strides,features',
    [((3, 3), 1, 12), ((3, 3), 1, 64), ((1, 1), 1, 6), ((7, 7), 2, 8), ((3, 3), 1, 1)],
)
@pytest.mark.parametrize('use_bias', [False, True])
def test_conv_module_is_flax_conv_with_the_same_parameters(
    kernel_size, strides, features, use_bias
):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 8, 5))
  ref = nn.Conv(features, kernel_size, strides, padding='SAME', use_bias=use_bias)
  ours = conv.Conv(features, kernel_size, strides, use_bias=use_bias)
  params = jax.tree.map(lambda p: p + 0.1, jax.jit(ref.init)(jax.random.PRNGKey(1), x))
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(
      jnp.shape, jax.eval_shape(ours.init, jax.random.PRNGKey(1), x)
  )
  loss = lambda module, p, x: jnp.sum(jnp.sin(module.apply(p, x)))
  grads = lambda module: jax.jit(jax.value_and_grad(loss, (1, 2)), static_argnums=0)(
      module, params, x
  )
  got, want = grads(ours), grads(ref)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    'shape,ksize', [((2, 6, 7, 3), (3, 3)), ((2, 5, 5, 4), (9, 9)), ((4, 32, 32, 2), (9, 9))]
)
def test_depthwise_convolution_equals_xla(shape, ksize):
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  kernel = jax.random.normal(jax.random.PRNGKey(1), (*ksize, 1, shape[-1])) / ksize[0]
  for ours, ref in zip(
      _values_and_grads(jax.jit(conv.depthwise_conv2d), x, kernel),
      _values_and_grads(layers.depthwise_conv2d, x, kernel),
  ):
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_fft_form_runs_in_batch_slices_from_32x32(monkeypatch):
  assert conv.fft_batch_slices((8, 32, 32, 12)) == 4
  assert conv.fft_batch_slices((8, 16, 16, 12)) == 1  # small maps: one FFT
  assert conv.fft_batch_slices((6, 32, 32, 12)) == 3  # the largest divisor of the batch up to 4
  assert conv.fft_batch_slices((5, 32, 32, 12)) == 1
  monkeypatch.setattr(conv.native_conv, 'supports_depthwise', lambda *a: False)
  x, kernel = jnp.ones((8, 32, 32, 2)), jnp.ones((9, 9, 1, 2))
  compiled = jax.jit(conv.depthwise_conv2d).lower(x, kernel).compile()
  # One forward and one inverse 2-D FFT per slice of 2 images ([N, C, H, W] inside jnp.fft).
  assert len(re.findall(r'\[2,2,36,\d+\]\S* fft\(', compiled.as_text())) == 2 * 4
