"""1x1 convolution as a matrix product over channels, with nn.Conv's parameters.

Why: on XLA:CPU a 1x1 `lax.conv_general_dilated` computes its kernel gradient as a convolution
whose operands are first transposed to channels-major layouts; in a DenseNet-BC 16-16-16
training step those transposes and slow weight-gradient convolutions were most of the time (see
docs/performance.md). As `dot_general` over the channel axis, the kernel gradient is a plain
matmul contracting the leading (N, H, W) axes, with no transposes. The results are equal.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def pointwise_conv2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`x [..., Cin]` times `kernel [1, 1, Cin, Cout]` (flax's conv layout) -> `[..., Cout]`."""
  if kernel.ndim != 4 or kernel.shape[:2] != (1, 1) or kernel.shape[2] != x.shape[-1]:
    raise ValueError(f'Expected a [1, 1, {x.shape[-1]}, Cout] kernel, got {kernel.shape}.')
  dtype = jnp.result_type(x, kernel)
  return lax.dot_general(x.astype(dtype), kernel[0, 0].astype(dtype),
                         (((x.ndim - 1,), (0,)), ((), ())))


class PointwiseConv(nn.Module):
  """Drop-in for `nn.Conv(features, (1, 1))` (stride 1): same parameters ('kernel' [1,1,Cin,Cout],
  optional 'bias' [Cout]), so checkpoints are interchangeable, computed by `pointwise_conv2d`."""
  features: int
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', self.kernel_init, (1, 1, x.shape[-1], self.features),
                        self.param_dtype)
    dtype = self.dtype or jnp.result_type(x, kernel)
    y = pointwise_conv2d(x.astype(dtype), kernel.astype(dtype))
    if self.use_bias:
      y = y + self.param('bias', self.bias_init, (self.features,), self.param_dtype).astype(dtype)
    return y
