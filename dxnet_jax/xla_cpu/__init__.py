"""Everything specific to XLA:CPU, behind `kernels='cpu'` (`dxnet_jax.kernels`).

XLA:CPU runs a DenseNet's training step well below the CPU's speed: its depthwise and narrowing
convolutions, the gradients of BatchNorm-ReLU over ever wider concatenations, and the memory it
allocates anew every step. The parts here compute the same networks, with the same parameters,
to float rounding:

  conv.py           each convolution by its fastest form: native C++ kernels (native_conv.py,
                    native/, built on first use by native_build.py), matrix products
                    (matmul_conv.py), or XLA's
  batchnorm.py      BatchNorm-ReLU with a hand-written gradient, and per-piece statistics
  dense_block.py    dense blocks with shared statistics and gradients summed once (fusion.py),
                    recomputation ordered after the backward pass (remat.py)
  host_memory.py    glibc settings that keep a step's freed buffers for the next step

No model module imports this package; `make_parts` hands its parts to the models.
"""

import functools
from typing import Optional

import flax.linen as nn
import jax.numpy as jnp

from dxnet_jax.layers import BN_EPSILON, BN_MOMENTUM, DepthwiseConv, Parts, he_normal, xunit_def
from dxnet_jax.xla_cpu import conv
from dxnet_jax.xla_cpu.batchnorm import BatchNormReLU
from dxnet_jax.xla_cpu.dense_block import DenseBlock
from dxnet_jax.xla_cpu.remat import ordered_remat


def make_parts(
    dtype=jnp.float32,
    axis_name: Optional[str] = None,
    xunit_design: str = 'dxnet',
    xunit_kernel: int = 9,
) -> Parts:
  """The CPU's parts (see the package docstring); same arguments as `layers.flax_parts`."""
  convolution = functools.partial(conv.Conv, use_bias=False, kernel_init=he_normal, dtype=dtype)
  bn = dict(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=dtype, axis_name=axis_name)
  norm = functools.partial(nn.BatchNorm, **bn)
  norm_relu = functools.partial(BatchNormReLU, **bn)
  depthwise_conv = functools.partial(DepthwiseConv, convolve=conv.depthwise_conv2d, dtype=dtype)
  return Parts(
      conv=convolution,
      depthwise_conv=depthwise_conv,
      norm=norm,
      norm_relu=norm_relu,
      xunit=xunit_def(xunit_design, xunit_kernel, convolution, depthwise_conv, norm, norm_relu),
      remat=functools.partial(ordered_remat, sync='barrier'),
      dense_block=functools.partial(DenseBlock, axis_name=axis_name),
      dtype=dtype,
  )
