"""A stride-1 'SAME' kxk convolution as one matrix product and k*k shifted sums.

Why: XLA:CPU computes the dense layers' 3x3 convolution (48 -> 12 channels) and its gradients
with a library convolution plus transposes that are several times slower than PyTorch's (on an
AVX2-only CPU, 157 vs 40 ms forward+backward at 64x32x32x48 -> 12; docs/performance.md). Written
as ``z = x @ W`` with W holding the k*k taps side by side (Cin -> k*k*Cout), the output is the
sum of k*k shifted Cout-channel slices of z. Autodiff then derives the backward pass from the
same two parts: the k*k shifted copies of the output gradient side by side, and two products of
those against x and W (the data and kernel gradients). Every product goes through
`pointwise_conv2d`, so the CPU's row-sliced kernel gradient applies. The results equal
`lax.conv_general_dilated` up to float rounding.

On the CPU `impl='auto'` now takes the native C++ kernel (`ops.native_conv`, 0.27x this form's
time for the dense layer's 48 -> 12 with both gradients) wherever it was measured faster; this
form stays the fallback where the native kernels cannot be built.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dxnet_jax.ops import native_build, native_conv
from dxnet_jax.ops.pointwise import pointwise_conv2d


def _taps(kernel):
  """[k, k, Cin, Cout] -> [1, 1, Cin, k*k*Cout]: tap (i, j) is the column block i*k + j."""
  k, _, cin, cout = kernel.shape
  return jnp.transpose(kernel, (2, 0, 1, 3)).reshape(1, 1, cin, k * k * cout)


def _shifted_sum(z, k, cout):
  """Sum over taps (i, j) of z's block i*k + j shifted by (i - k//2, j - k//2): the output."""
  _, h, w, _ = z.shape
  p = k // 2
  z = jnp.pad(z, ((0, 0), (p, p), (p, p), (0, 0)))
  parts = [
      z[:, i : i + h, j : j + w, (i * k + j) * cout : (i * k + j + 1) * cout]
      for i in range(k)
      for j in range(k)
  ]
  return sum(parts[1:], parts[0])


def _shifted_copies(g, k):
  """The k*k copies of g shifted back by each tap, side by side: the gradient of z."""
  _, h, w, _ = g.shape
  p = k // 2
  g = jnp.pad(g, ((0, 0), (p, p), (p, p), (0, 0)))
  return jnp.concatenate(
      [
          g[:, 2 * p - i : 2 * p - i + h, 2 * p - j : 2 * p - j + w, :]
          for i in range(k)
          for j in range(k)
      ],
      axis=-1,
  )


def _product_and_shifted_sum(x, kernel):
  return _shifted_sum(pointwise_conv2d(x, _taps(kernel)), kernel.shape[0], kernel.shape[3])


_conv2d_as_matmul = jax.custom_vjp(_product_and_shifted_sum)


def _forward(x, kernel):
  # The plain function, not the custom_vjp one: forward-over-reverse derivatives (Hessian-vector
  # products) differentiate this rule, and JAX cannot take a jvp of a custom_vjp function.
  return _product_and_shifted_sum(x, kernel), (x, kernel)


def _backward(residuals, g):
  # Written out rather than left to autodiff: the transpose of k*k slices is k*k padded
  # full-size arrays summed, which XLA:CPU ran as slow slice fusions (2.3 s of a DenseNet-BC
  # step); one concatenation of shifted views of g is a single cheap copy.
  x, kernel = residuals
  k, _, cin, cout = kernel.shape
  _, product_vjp = jax.vjp(pointwise_conv2d, x, _taps(kernel))
  dx, dtaps = product_vjp(_shifted_copies(g.astype(x.dtype), k))
  dkernel = jnp.transpose(dtaps.reshape(cin, k, k, cout), (1, 2, 0, 3))
  return dx, dkernel.astype(kernel.dtype)


_conv2d_as_matmul.defvjp(_forward, _backward)


def conv2d_as_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`x [N, H, W, Cin]` convolved with `kernel [k, k, Cin, Cout]` (odd k, stride 1, 'SAME')."""
  k, k2, cin, _ = kernel.shape
  if k != k2 or k % 2 == 0 or cin != x.shape[-1]:
    raise ValueError(
        f'Expected an odd square [k, k, {x.shape[-1]}, Cout] kernel, got ' f'{kernel.shape}.'
    )
  return _conv2d_as_matmul(x, kernel)


IMPLEMENTATIONS = ('xla', 'matmul', 'native')


# The product writes k*k*Cout channels per pixel: worth it where that is at most this many times
# Cin, as in a dense layer's 3x3 convolution (48 -> 12: 108 vs 48). Widening convolutions (the
# stems, 1 or 3 -> 24-64 channels) stay with XLA's (see `default_impl`).
MAX_EXPANSION = 4


def default_impl(kernel_shape=None, dtype=jnp.float32) -> str:
  """The CPU's choice per convolution (measured, docs/performance.md); 'xla' elsewhere.

  'native' where `native_conv.preferred` (the kernels built; not a 1-3 channel stem widened to
  32+ channels, nor 1-3 output channels); otherwise 'matmul' for narrowing convolutions and
  'xla' for widening ones.
  `kernel_shape` [k, k, Cin, Cout]. GPUs and TPUs run the library convolution well and were not
  measured with the other forms.
  """
  if jax.default_backend() != 'cpu':
    return 'xla'
  if kernel_shape is None:
    return 'native' if native_build.available() else 'matmul'
  k, _, cin, cout = kernel_shape
  if native_conv.preferred(kernel_shape, dtype):
    return 'native'
  return 'xla' if k * k * cout > MAX_EXPANSION * cin else 'matmul'


def conv2d(x: jax.Array, kernel: jax.Array, impl: str = 'auto') -> jax.Array:
  """Stride-1 'SAME' convolution by `impl`: 'xla' (`lax.conv_general_dilated`), 'matmul',
  'native' (the C++ XLA:CPU kernel, ops/native_conv.py) or 'auto' (`default_impl`)."""
  impl = default_impl(kernel.shape, x.dtype) if impl == 'auto' else impl
  if impl == 'native':
    return native_conv.conv2d_native(x, kernel)
  if impl == 'matmul':
    return conv2d_as_matmul(x, kernel)
  if impl == 'xla':
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
    )
  raise ValueError(f"impl must be one of {IMPLEMENTATIONS + ('auto',)}, got {impl!r}.")


class SpatialConv(nn.Module):
  """Drop-in for `nn.Conv(features, (k, k), padding='SAME')` (stride 1), computed by `conv2d`.

  Same parameters ('kernel' [k, k, Cin, Cout], optional 'bias' [Cout]), so checkpoints are
  interchangeable with nn.Conv and between implementations.
  """

  features: int
  kernel_size: int = 3
  use_bias: bool = True
  impl: str = 'auto'
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param(
        'kernel', self.kernel_init, (k, k, x.shape[-1], self.features), self.param_dtype
    )
    dtype = self.dtype or jnp.result_type(x, kernel)
    y = conv2d(x.astype(dtype), kernel.astype(dtype), self.impl)
    if self.use_bias:
      y = y + self.param('bias', self.bias_init, (self.features,), self.param_dtype).astype(dtype)
    return y
