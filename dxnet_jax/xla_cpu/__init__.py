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

from dxnet_jax import layers
from dxnet_jax.xla_cpu import conv
from dxnet_jax.xla_cpu.batchnorm import BatchNormReLU
from dxnet_jax.xla_cpu.dense_block import DenseBlock
from dxnet_jax.xla_cpu.remat import ordered_remat


def make_parts(**options) -> layers.Parts:
  """`layers.flax_parts(**options)` with the CPU's convolutions, BatchNorm-ReLU, remat and
  dense blocks in place of the plain ones (same settings, same parameters)."""
  parts = layers.flax_parts(**options)
  return parts.replace(
      conv=functools.partial(conv.Conv, **parts.conv.keywords),
      depthwise_conv=functools.partial(parts.depthwise_conv, convolve=conv.depthwise_conv2d),
      norm_relu=functools.partial(BatchNormReLU, **parts.norm.keywords),
      remat=functools.partial(ordered_remat, sync='barrier'),
      dense_block=functools.partial(DenseBlock, axis_name=options.get('axis_name')),
  )
