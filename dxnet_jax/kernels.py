"""The `kernels` setting: which parts compute a network, chosen once, by `make_parts`.

  'xla'   plain flax and lax (`layers.flax_parts`): what runs on TPUs, and what a reader sees
          first.
  'gpu'   the 'xla' parts with the xUnit's depthwise convolution computed by FFTs
          (`depthwise_fft`): cuDNN's grouped convolution has a slow backward pass.
  'cpu'   XLA:CPU's parts (`dxnet_jax.xla_cpu`): native C++ convolutions, BatchNorm-ReLU with a
          hand-written gradient, dense blocks that share statistics and order recomputation.
  'auto'  by JAX's default backend (`resolve`): 'cpu' on the CPU, 'gpu' on GPUs, else 'xla'.

Every setting builds the same parameter tree and computes the same function to float rounding,
so a checkpoint trained with one loads and runs with any other.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp

from dxnet_jax import layers
from dxnet_jax.depthwise_fft import depthwise_conv2d_fft

KERNELS = ('auto', 'xla', 'gpu', 'cpu')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float16': jnp.float16}


def resolve(kernels: str = 'auto', backend: Optional[str] = None) -> str:
  """The concrete setting ('xla', 'gpu' or 'cpu') that `kernels` means on `backend` (default:
  `jax.default_backend()`)."""
  if kernels not in KERNELS:
    raise ValueError(f'kernels must be one of {KERNELS}, got {kernels!r}.')
  if kernels in ('xla', 'gpu'):  # asks no backend, so configs are checked before JAX starts
    return kernels
  backend = backend or jax.default_backend()
  if kernels == 'auto':
    return {'cpu': 'cpu', 'gpu': 'gpu'}.get(backend, 'xla')
  if kernels == 'cpu' and backend != 'cpu':
    raise ValueError(
        f"kernels='cpu' computes with XLA:CPU custom calls, but JAX runs on {backend!r}: use "
        "kernels='auto' or 'xla'."
    )
  return kernels


def make_parts(
    kernels: str = 'auto',
    dtype='float32',
    axis_name: Optional[str] = None,
    xunit_design: str = 'dxnet',
    xunit_kernel: int = 9,
) -> layers.Parts:
  """The parts of `kernels` computing in `dtype` (a name or a jnp dtype; parameters stay
  float32), with BatchNorm statistics averaged over `axis_name` under pmap, and the xUnit of
  `xunit_design` ('dxnet' or 'gaussian') with a `xunit_kernel`-wide depthwise filter."""
  if isinstance(dtype, str):
    if dtype not in DTYPES:
      raise ValueError(f'Unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}.')
    dtype = DTYPES[dtype]
  options = dict(
      dtype=dtype, axis_name=axis_name, xunit_design=xunit_design, xunit_kernel=xunit_kernel
  )
  kernels = resolve(kernels)
  if kernels == 'cpu':
    from dxnet_jax import xla_cpu  # pylint: disable=g-import-not-at-top

    return xla_cpu.make_parts(**options)
  parts = layers.flax_parts(**options)
  if kernels == 'gpu':
    fft_depthwise_conv = functools.partial(parts.depthwise_conv, convolve=depthwise_conv2d_fft)
    return parts.replace(depthwise_conv=fft_depthwise_conv)
  return parts


def prepare_process(kernels: str = 'auto') -> None:
  """Process-wide settings of `kernels`; call before the first JAX computation.

  With 'cpu', or 'auto' where JAX will run on the CPU, glibc keeps a step's freed host memory
  for the next step (`xla_cpu.host_memory`; `DXNET_HOST_MALLOC` overrides). Other settings
  leave the process as it is.
  """
  if kernels not in KERNELS:
    raise ValueError(f'kernels must be one of {KERNELS}, got {kernels!r}.')
  if kernels in ('auto', 'cpu'):
    from dxnet_jax.xla_cpu import host_memory  # pylint: disable=g-import-not-at-top

    host_memory.keep_freed_memory(cpu_expected=True if kernels == 'cpu' else None)
