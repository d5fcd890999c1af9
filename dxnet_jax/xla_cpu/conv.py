"""The CPU's convolutions: each computed by the form that XLA:CPU runs fastest for its shape.

* Stride-1 odd square convolutions: the native C++ kernel (`native_conv`) where it runs and was
  measured faster (`native_conv.preferred`); else a 1x1 one as a product over channels and a
  narrowing kxk one as a product plus shifted sums (`matmul_conv`); widening ones (the stems, 1
  or 3 -> 24-64 channels) and strided ones as XLA's convolution.
* The xUnit's depthwise convolution: the native kernel where it runs (filter widths 3-11), else
  by FFTs over slices of the batch (`depthwise_fft`), so that the FFTs run on every core.
"""

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dxnet_jax.depthwise_fft import depthwise_conv2d_fft
from dxnet_jax.xla_cpu import native_conv
from dxnet_jax.xla_cpu.matmul_conv import conv2d_as_matmul, pointwise_conv2d

# A kxk product writes k*k*Cout channels per pixel: worth it where that is at most this many
# times Cin, as in a dense layer's 3x3 convolution (48 -> 12: 108 vs 48).
MAX_EXPANSION = 4

# XLA:CPU runs each FFT op on one thread: split into independent FFTs over slices of the batch
# they run side by side. Worth it from 32x32 maps; at 8x8 it lost.
FFT_BATCH_SLICES = 4
FFT_MIN_PIXELS = 32 * 32


def conv2d(x: jax.Array, kernel: jax.Array, strides: int = 1) -> jax.Array:
  """'SAME' convolution of `x [N, H, W, Cin]` with `kernel [kh, kw, Cin, Cout]`."""
  kh, kw, cin, cout = kernel.shape
  if strides == 1 and kh == kw and kh % 2:
    if native_conv.preferred(kernel.shape, x.dtype):
      return native_conv.conv2d_native(x, kernel)
    if kh == 1:
      return pointwise_conv2d(x, kernel)
    if kh * kw * cout <= MAX_EXPANSION * cin:
      return conv2d_as_matmul(x, kernel)
  return jax.lax.conv_general_dilated(
      x, kernel, (strides, strides), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )


def fft_batch_slices(shape: Sequence[int]) -> int:
  """Batch slices for the FFT form: the largest divisor of N up to `FFT_BATCH_SLICES` from
  `FFT_MIN_PIXELS` per map, else 1."""
  n, h, w, _ = shape
  if h * w < FFT_MIN_PIXELS:
    return 1
  return next(s for s in range(min(FFT_BATCH_SLICES, max(n, 1)), 0, -1) if n % s == 0)


def depthwise_conv2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """'SAME' per-channel convolution of `x [N, H, W, C]` with `kernel [kh, kw, 1, C]`."""
  if native_conv.supports_depthwise(jnp.result_type(x, kernel), kernel.shape):
    return native_conv.depthwise_conv2d_native(x, kernel)
  return depthwise_conv2d_fft(x, kernel, fft_batch_slices(x.shape))


class Conv(nn.Module):
  """`nn.Conv(features, kernel_size, strides, padding='SAME')` computed by `conv2d`.

  Same parameters ('kernel' [kh, kw, Cin, Cout], optional 'bias' [Cout]) as nn.Conv.
  """

  features: int
  kernel_size: Sequence[int]
  strides: int = 1
  padding: str = 'SAME'
  use_bias: bool = True
  kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
  bias_init: Callable[..., Any] = nn.initializers.zeros
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.padding != 'SAME':
      raise ValueError(f"The CPU's convolutions pad 'SAME', got padding={self.padding!r}.")
    kh, kw = self.kernel_size
    shape = (kh, kw, x.shape[-1], self.features)
    kernel = self.param('kernel', self.kernel_init, shape, self.param_dtype)
    dtype = self.dtype or jnp.result_type(x, kernel)
    y = conv2d(x.astype(dtype), kernel.astype(dtype), self.strides)
    if self.use_bias:
      bias = self.param('bias', self.bias_init, (self.features,), self.param_dtype)
      y = y + bias.astype(dtype)
    return y
