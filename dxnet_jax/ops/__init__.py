"""Low-level operations used by dxnet_jax's layers; they know nothing of models."""
from dxnet_jax.ops.depthwise import IMPLEMENTATIONS, default_impl, depthwise_conv2d

__all__ = ['IMPLEMENTATIONS', 'default_impl', 'depthwise_conv2d']
