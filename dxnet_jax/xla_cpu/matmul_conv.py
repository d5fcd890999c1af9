"""Stride-1 'SAME' convolutions as matrix products: the CPU's forms where no native kernel runs.

`pointwise_conv2d`: a 1x1 convolution as a product over channels. As `lax.conv_general_dilated`,
XLA:CPU computes a 1x1 kernel gradient as a convolution whose operands are first transposed to
channels-major layouts; as a product, the kernel gradient contracts the leading (N, H, W) axes
with no transposes. Large float32 products are written as one batched product of equal row
slices against the broadcast kernel: the same values, but autodiff then derives the kernel
gradient as a batched product and a sum, which XLA:CPU runs about twice as fast as one product
contracting every row.

`conv2d_as_matmul`: a kxk convolution as ``z = x @ W`` with W holding the k*k taps side by side
(Cin -> k*k*Cout), and the output the sum of k*k shifted Cout-channel slices of z. Its backward
pass is written out: one concatenation of shifted views of the output gradient, and the two
products of `pointwise_conv2d`'s backward pass (the transpose of k*k slices would be k*k padded
full-size arrays summed, which XLA:CPU runs as slow slice fusions).

Both equal `lax.conv_general_dilated` up to float rounding and keep forward-mode derivatives
(Hessian-vector products).
"""

import math
from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax

# Row slices of a float32 product: 8 measured fastest of 4/8/16 in a DxNet 12-12-12 step.
# Products of fewer than MIN_ROWS rows stay one product (slicing the super-resolution net's,
# mostly 8 x 24 x 24 rows, made its step slower); so do low-precision ones, whose slices'
# partial gradients would be summed in that precision.
ROW_CHUNKS = 8
MIN_ROWS = 16384


def default_row_chunks(rows: int, dtype=jnp.float32) -> int:
  """`ROW_CHUNKS` for a float32 product of at least `MIN_ROWS` rows, else 1."""
  return ROW_CHUNKS if dtype == jnp.float32 and rows >= MIN_ROWS else 1


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
        f'Expected an odd square [k, k, {x.shape[-1]}, Cout] kernel, got {kernel.shape}.'
    )
  return _conv2d_as_matmul(x, kernel)
