"""Steering XLA's fusion: computing a value once, into a buffer of its own.

XLA fuses a cheap elementwise producer into every consumer and recomputes it in each. That is
free for one consumer and costly for many: under remat='speed' a dense layer's output gradient,
the sum of every later layer's piece, was recomputed in each of the k*k shifted copies that its
3x3 convolution's backward pass reads (docs/performance.md).
`lax.optimization_barrier` does not prevent it: XLA:CPU turns barriers into scheduling
constraints before it fuses.
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
