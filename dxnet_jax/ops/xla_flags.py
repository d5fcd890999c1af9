"""XLA:CPU compiler options that change dxnet_jax's memory or speed, in one documented place.

XLA reads the `XLA_FLAGS` environment variable once, when the first backend initialises, so
`set_xla_flags` must run before any JAX computation (at the top of a `main`). For one compiled
function the same options can be passed without touching the environment:
`jax.jit(f).lower(*args).compile(compiler_options=options)`.

Measured effects (2-core CPU, docs/performance.md has the tables):
- `MEMORY_OPTIMIZED_SCHEDULER`: XLA:CPU's memory-optimised instruction scheduler. Without remat
  it lowers the peak of a DenseNet-BC 16-16-16 training step (batch 64) 1.5x (3156 -> 2130 MiB);
  with the models' `remat=True` (`ops.remat.ordered_remat`, 5.7x on its own) it is not needed;
  with an earlier form of it, it was worse than the default scheduler (1155 vs 1040 MiB), so it
  is not set by default. Results are equal.
"""

import os
from typing import Mapping

# XLA:CPU's scheduler that orders instructions to lower peak live memory.
MEMORY_OPTIMIZED_SCHEDULER = {'xla_cpu_scheduler_type': 'CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED'}


def as_flag_string(options: Mapping[str, object]) -> str:
  """`{'xla_x': True, 'xla_y': 'Z'}` -> `'--xla_x=true --xla_y=Z'` (XLA_FLAGS syntax)."""
  fmt = lambda v: str(v).lower() if isinstance(v, bool) else str(v)
  return ' '.join(f'--{k}={fmt(v)}' for k, v in options.items())


def set_xla_flags(options: Mapping[str, object]) -> str:
  """Adds `options` to `XLA_FLAGS` (replacing earlier values of the same flags); returns it.

  Raises RuntimeError if a JAX backend is already initialised, since XLA would silently ignore
  the new flags.
  """
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top

  if xla_bridge.backends_are_initialized():
    raise RuntimeError(
        'XLA flags must be set before JAX initialises its backends (before the '
        'first computation); call set_xla_flags at the top of main.'
    )
  kept = [
      f
      for f in os.environ.get('XLA_FLAGS', '').split()
      if f.lstrip('-').split('=', 1)[0] not in options
  ]
  os.environ['XLA_FLAGS'] = ' '.join(kept + [as_flag_string(options)]).strip()
  return os.environ['XLA_FLAGS']
