"""Steering XLA's fusion: computing a value once, into a buffer of its own.

XLA fuses a cheap elementwise producer into every consumer and recomputes it in each. That is
free for one consumer and costly for many: under remat='speed' a dense layer's output gradient,
the sum of every later layer's piece, was recomputed in each of the k*k shifted copies that its
3x3 convolution's backward pass reads (docs/performance.md).
`lax.optimization_barrier` does not prevent it: XLA:CPU turns barriers into scheduling
constraints before it fuses. Two ways that do: `materialized` (a transcendental XLA will not
duplicate) and, where XLA computes that once but still duplicates the rest,
`gradient_through_product` (a product, which XLA computes once for all its readers).
"""

import jax
import jax.numpy as jnp


def is_float(x) -> bool:
  """Whether a pytree leaf is a floating-point array (the leaves a gradient trick may touch)."""
  return hasattr(x, 'dtype') and jnp.issubdtype(x.dtype, jnp.floating)


def materialized(x):
  """`x` plus a zero that holds a transcendental of every element; non-float leaves unchanged.

  XLA does not duplicate an expensive op (tanh) into several consumers, so `x` is computed once.
  The values are unchanged: ``0 * tanh(x)`` is 0 for every finite or infinite x, NaN for NaN.
  """
  return x + 0 * jnp.tanh(x) if is_float(x) else x


@jax.custom_vjp
def gradient_materialized(x):
  """The identity, whose incoming gradient is computed once (`materialized`) before its readers.

  For a value read by several later computations: its gradient is the sum of theirs, which XLA
  would otherwise recompute inside every reader of the gradient.
  """
  return x


def _identity_forward(x):
  return x, None


def _materialized_backward(_, g):
  return (jax.tree.map(materialized, g),)


gradient_materialized.defvjp(_identity_forward, _materialized_backward)


def _through_identity_product(g):
  if not is_float(g) or g.ndim == 0:
    return g
  eye = jnp.eye(g.shape[-1], dtype=g.dtype)
  return jax.lax.dot_general(g, eye, (((g.ndim - 1,), (0,)), ((), ())))


@jax.custom_vjp
def gradient_through_product(x):
  """The identity, whose incoming gradient passes through a product with the identity matrix.

  For a value whose gradient is a sum over many later layers and is read by more than one
  computation, where `gradient_materialized` does not hold: in a DxNet's dense block XLA:CPU
  computed the tanh once but still fused the sum itself into both readers of each xUnit's
  output gradient (the gate's two derivatives). XLA does not duplicate a product into its
  readers, so the sum is computed once, as the product's input, and the readers read the
  product's output (DxNet 12-12-12 step 0.95x, docs/performance.md).

  Finite gradients pass unchanged (each output is g times 1 plus exact zeros; -0.0 becomes 0.0).
  A NaN or infinity in one channel of a pixel makes that pixel's other channels NaN (0 * inf),
  where the update would be non-finite anyway.
  """
  return x


def _product_backward(_, g):
  return (jax.tree.map(_through_identity_product, g),)


gradient_through_product.defvjp(_identity_forward, _product_backward)
