"""Low-level operations used by dxnet_jax's layers; they know nothing of models."""

from dxnet_jax.ops.depthwise import IMPLEMENTATIONS, default_impl, depthwise_conv2d
from dxnet_jax.ops.pointwise import PointwiseConv, pointwise_conv2d
from dxnet_jax.ops.spatial import SpatialConv, conv2d_as_matmul
from dxnet_jax.ops.xla_flags import MEMORY_OPTIMIZED_SCHEDULER, set_xla_flags

__all__ = [
    'IMPLEMENTATIONS',
    'default_impl',
    'depthwise_conv2d',
    'PointwiseConv',
    'pointwise_conv2d',
    'SpatialConv',
    'conv2d_as_matmul',
    'MEMORY_OPTIMIZED_SCHEDULER',
    'set_xla_flags',
]
