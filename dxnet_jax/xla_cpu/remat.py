"""Rematerialisation whose recomputation waits for the backward pass (`ordered_remat`).

`jax.checkpoint` (flax's `nn.remat`) recomputes a function's forward pass from its inputs in the
backward pass. That recomputation depends only on the inputs, so the compiler is free to run it
early. On XLA:CPU it does: a DenseNet-BC 16-16-16 training step (batch 64) has the same peak
memory with and without `nn.remat` (3.1 GiB), and the compiled step's peak holds every layer's
recomputed activations at once (docs/performance.md).

`tied_checkpoint` is a `jax.custom_vjp` that stores the inputs and, in the backward pass, adds a
zero computed from the incoming cotangent (``0 * g[0]``) to every floating input before
recomputing. The values are unchanged (``x + 0.0 == x``), but the recomputation now depends on the
cotangent, so it cannot start before the backward pass reaches the layer, and cannot be merged
with the forward pass. The gradients it returns are tied to each other the same way and computed
into buffers of their own (`fusion.materialized`), so neither the layer's weight gradients nor
its input gradients are postponed to later in the backward pass, which would keep its
recomputed activations alive. With all three, the same step peaks at 0.54 GiB (553 MiB).

One consequence: a NaN or inf anywhere in a layer's cotangent makes all of that layer's gradients
NaN (``0 * inf`` is NaN). Training stops on a non-finite loss or gradient anyway.

`sync='barrier'` is the faster, larger variant: the backward pass returns the gradients through
one `lax.optimization_barrier` (all computed together, no transcendental pass) tied by a single
element instead of full sums. The dense blocks' `remat='speed'` uses it around each layer's
bottleneck only (docs/performance.md).

`ordered_remat` lifts it to flax modules like `nn.remat` does: variables (parameters, BatchNorm
statistics) and RNG streams flow through unchanged, and the parameter tree is the module's own.
"""

import functools
from typing import Any, Callable, Sequence, Union

import jax
import jax.numpy as jnp
from flax.core import lift
from flax.linen import transforms

from dxnet_jax.xla_cpu.fusion import is_float, materialized


def _tie(tree, anchor):
  """`tree` with `0 * anchor` added to its floating leaves: same values, new data dependency."""
  return jax.tree.map(lambda x: x + anchor.astype(x.dtype) if is_float(x) else x, tree)


def _as_tuple(argnums: Union[int, Sequence[int]]) -> tuple:
  return (argnums,) if isinstance(argnums, int) else tuple(argnums)


def _zero_from(tree, read=lambda x: x.reshape(-1)[0]):
  """A float32 zero computed from `read(leaf)` (one element by default) of every floating leaf."""
  zero = jnp.zeros((), jnp.float32)
  for x in jax.tree.leaves(tree):
    if is_float(x) and x.size:
      zero = zero + read(x).astype(jnp.float32) * 0
  return zero


SYNC_MODES = ('tied', 'barrier')


def tied_checkpoint(
    fn: Callable[..., Any], static_argnums: Union[int, Sequence[int]] = (), sync: str = 'tied'
) -> Callable[..., Any]:
  """`jax.checkpoint(fn)` whose recomputation is ordered after the output's cotangent.

  `static_argnums` name hashable arguments (flags such as `train`) passed through unchanged.
  `sync` ('tied' or 'barrier', see the module docstring) says how the gradients are forced out.
  Integer inputs (RNG keys) get zero (float0) cotangents. `fn` is traced once and the traced
  computation is replayed in the backward pass, so a function with Python-side state (flax
  scopes count the RNG streams they hand out) recomputes exactly what it computed.
  """
  if sync not in SYNC_MODES:
    raise ValueError(f'sync must be one of {SYNC_MODES}, got {sync!r}.')
  static = _as_tuple(static_argnums)

  def wrapped(*args):
    statics = [a for i, a in enumerate(args) if i in static]
    dynamic = tuple(a for i, a in enumerate(args) if i not in static)

    def call(*dynamic_args):
      fixed, free = iter(statics), iter(dynamic_args)
      return fn(*[next(fixed) if i in static else next(free) for i in range(len(args))])

    traced, consts = jax.closure_convert(call, *dynamic)
    return _checkpointed(traced, sync, tuple(consts), dynamic)

  return wrapped


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _checkpointed(traced, sync, consts, dynamic):
  del sync
  return traced(*dynamic, *consts)


def _checkpointed_forward(traced, sync, consts, dynamic):
  del sync
  return traced(*dynamic, *consts), (consts, dynamic)


def _checkpointed_backward(traced, sync, residuals, cotangent):
  consts, dynamic = _tie(residuals, _zero_from(cotangent))
  _, vjp = jax.vjp(lambda c, d: traced(*d, *c), consts, dynamic)
  if sync == 'barrier':
    grads = jax.lax.optimization_barrier(vjp(cotangent))
    return _tie(grads, _zero_from(grads))
  # Each gradient into a buffer of its own: XLA would re-fuse a cheap elementwise gradient into
  # its consumers, the gradient sums of the earlier layers' outputs, which run much later, and
  # keep this layer's recomputed activations alive until then.
  grads = jax.tree.map(materialized, vjp(cotangent))
  # Every gradient waits for all the others, read in full: the weight gradients (which only the
  # optimizer needs) are not postponed to the end of the backward pass, and the input gradients
  # are computed now, so this layer's recomputed activations can be freed.
  return _tie(grads, _zero_from(grads, read=jnp.sum))


_checkpointed.defvjp(_checkpointed_forward, _checkpointed_backward)


def _lifted_tied_checkpoint(fn, variables=True, rngs=True, static_argnums=(), sync='tied'):
  """`flax.core.lift.checkpoint` with `tied_checkpoint` in place of `jax.checkpoint`."""
  static = _as_tuple(static_argnums)

  def inner(scope_fn, repack_fn, variable_groups, rng_groups, *args):
    def rematted(variable_groups, rng_groups, *args):
      scope = scope_fn(variable_groups, rng_groups)
      y = fn(scope, *args)
      return y, repack_fn(scope)

    # Two leading arguments (variables, RNGs) precede the module's own.
    checkpointed = tied_checkpoint(rematted, tuple(i + 2 for i in static), sync)
    return checkpointed(variable_groups, rng_groups, *args)

  return lift.pack(inner, (variables,), (variables,), (rngs,), name='ordered_remat')


def ordered_remat(module_class, static_argnums: Union[int, Sequence[int]] = (), sync: str = 'tied'):
  """`nn.remat(module_class, static_argnums=...)` with the recomputation ordered (see above).

  As in `nn.remat`, `static_argnums` count `self` as argument 0. The wrapped module has the same
  variables as `module_class`. `sync`: 'tied' (least memory) or 'barrier' (faster).
  """
  static = _as_tuple(static_argnums)
  return transforms.lift_transform(
      _lifted_tied_checkpoint, module_class, static_argnums=tuple(i - 1 for i in static), sync=sync
  )
