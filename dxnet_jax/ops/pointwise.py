"""1x1 convolution as a matrix product over channels, with nn.Conv's parameters.

Why: on XLA:CPU a 1x1 `lax.conv_general_dilated` computes its kernel gradient as a convolution
whose operands are first transposed to channels-major layouts; in a DenseNet-BC 16-16-16
training step those transposes and slow weight-gradient convolutions were most of the time (see
docs/performance.md). As `dot_general` over the channel axis, the kernel gradient is a plain
matmul contracting the leading (N, H, W) axes, with no transposes. The results are equal.

Row chunks (CPU): the product is written as one *batched* product of `row_chunks` equal slices
of the flattened (N, H, W) rows against the kernel broadcast to each slice. The values are the
same; what changes is the kernel gradient autodiff derives from it: a batched product of the
slices and a sum over them, instead of one product contracting every row, which XLA:CPU runs
about 2x faster (8 vs 18 ms at 64x32x32x156 -> 48 on a 2-core CPU). It is still plain autodiff,
so forward-mode derivatives (Hessian-vector products) work as before.
"""

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from dxnet_jax.ops import native_conv

# Row slices of a float32 product on the CPU: 8 measured fastest of 4/8/16 in a DxNet 12-12-12
# step (0.91-0.93x the step time of one product). Other backends and dtypes keep one product, and so
# do products of fewer than CPU_MIN_ROWS rows: slicing those too made the super-resolution net's
# step (mostly 8 x 24 x 24 = 4,608 rows) 1.04x slower (docs/performance.md).
CPU_ROW_CHUNKS = 8
CPU_MIN_ROWS = 16384


def default_row_chunks(rows: int, dtype=jnp.float32) -> int:
  """`CPU_ROW_CHUNKS` for a float32 product of at least `CPU_MIN_ROWS` rows on the CPU, else 1.

  Why not elsewhere: GPUs and TPUs read a transposed operand natively (unmeasured there), and
  with a low-precision dtype the slices' partial gradients would be summed in that dtype.
  """
  on_cpu = jax.default_backend() == 'cpu'
  return CPU_ROW_CHUNKS if on_cpu and dtype == jnp.float32 and rows >= CPU_MIN_ROWS else 1


def pointwise_conv2d(
    x: jax.Array, kernel: jax.Array, row_chunks: Optional[int] = None
) -> jax.Array:
  """`x [..., Cin]` times `kernel [1, 1, Cin, Cout]` (flax's conv layout) -> `[..., Cout]`.

  `row_chunks`: None for `default_row_chunks`; otherwise the number of row slices (the largest
  divisor of the row count not above it is used; 1 is one plain product).
  """
  if kernel.ndim != 4 or kernel.shape[:2] != (1, 1) or kernel.shape[2] != x.shape[-1]:
    raise ValueError(f'Expected a [1, 1, {x.shape[-1]}, Cout] kernel, got {kernel.shape}.')
  if row_chunks is not None and (int(row_chunks) != row_chunks or row_chunks < 1):
    raise ValueError(f'row_chunks must be a positive integer or None, got {row_chunks!r}.')
  dtype = jnp.result_type(x, kernel)
  x, kernel = x.astype(dtype), kernel[0, 0].astype(dtype)
  cin, cout = kernel.shape
  rows = math.prod(x.shape[:-1])
  chunks = default_row_chunks(rows, dtype) if row_chunks is None else int(row_chunks)
  chunks = next(c for c in range(min(chunks, max(rows, 1)), 0, -1) if rows % c == 0)
  if chunks == 1:
    return lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
  y = lax.dot_general(
      x.reshape(chunks, rows // chunks, cin),
      jnp.broadcast_to(kernel, (chunks, cin, cout)),
      (((2,), (1,)), ((0,), (0,))),
  )
  return y.reshape(*x.shape[:-1], cout)


IMPLEMENTATIONS = ('matmul', 'native')


def pointwise(x: jax.Array, kernel: jax.Array, impl: str = 'auto') -> jax.Array:
  """A 1x1 convolution by `impl`: 'matmul' (`pointwise_conv2d`), 'native' (the C++ XLA:CPU
  kernel, `ops.native_conv`; NHWC only), or 'auto': 'native' where `native_conv.preferred`
  (measured 0.56-0.89x the matmul form's forward+backward time for a dense layer's bottleneck,
  docs/performance.md), else 'matmul'."""
  if impl == 'auto':
    native = x.ndim == 4 and native_conv.preferred(kernel.shape, jnp.result_type(x, kernel))
    impl = 'native' if native else 'matmul'
  if impl == 'native':
    return native_conv.conv2d_native(x, kernel)
  if impl == 'matmul':
    return pointwise_conv2d(x, kernel)
  raise ValueError(f"impl must be one of {IMPLEMENTATIONS + ('auto',)}, got {impl!r}.")


class PointwiseConv(nn.Module):
  """Drop-in for `nn.Conv(features, (1, 1))` (stride 1): same parameters ('kernel' [1,1,Cin,Cout],
  optional 'bias' [Cout]), so checkpoints are interchangeable, computed by `pointwise`."""

  features: int
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros
  impl: str = 'auto'

  @nn.compact
  def __call__(self, x):
    kernel = self.param(
        'kernel', self.kernel_init, (1, 1, x.shape[-1], self.features), self.param_dtype
    )
    dtype = self.dtype or jnp.result_type(x, kernel)
    y = pointwise(x.astype(dtype), kernel.astype(dtype), self.impl)
    if self.use_bias:
      y = y + self.param('bias', self.bias_init, (self.features,), self.param_dtype).astype(dtype)
    return y
