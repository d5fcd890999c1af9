"""Building blocks shared by every DxNet: normalisation, convolutions and the xUnits.

The xUnit is a learnable *spatial* activation: it multiplies its input by a gate in [0, 1] computed
from a neighbourhood of each pixel, so one unit can do the work that several ReLU layers do.
Two designs are provided:

* `XUnit` (DxNet paper): ``x * sigmoid(BN(dwconv_kxk(ReLU(BN(conv1x1(x))))))``. The 1x1 convolution
  mixes channels before the per-channel spatial filter. BatchNorm can be switched off (the
  super-resolution nets use none).
* `GaussianXUnit` (the original 2018 xUnit): no 1x1 convolution and a Gaussian gate,
  ``x * exp(-BN(dwconv_kxk(ReLU(BN(x))))^2)``. Kept for the paper's xUnit-design comparison.

Both convolutions of an xUnit carry biases, as in the authors' PyTorch code (PyTorch's default).
The depthwise convolution dominates DxNet's step time, so its implementation is selectable
(`depthwise_impl`, see `dxnet_jax.ops.depthwise`); every choice stores the same parameters.
"""

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from dxnet_jax.ops.batchnorm import BatchNormReLU
from dxnet_jax.ops.depthwise import depthwise_conv2d
from dxnet_jax.ops.pointwise import PointwiseConv
from dxnet_jax.ops.spatial import SpatialConv

Dtype = Any

# Flax's momentum is the weight of the *old* statistic: 0.9 here equals PyTorch's momentum=0.1.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# He-normal (fan-in) initialisation, as torchvision's DenseNet and the authors' code use.
conv_init = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')


def batch_norm(train: bool, dtype: Dtype, axis_name: Optional[str], name: str) -> nn.BatchNorm:
  """BatchNorm with PyTorch-equivalent momentum; `axis_name` syncs statistics under pmap."""
  return nn.BatchNorm(
      use_running_average=not train,
      momentum=BN_MOMENTUM,
      epsilon=BN_EPSILON,
      dtype=dtype,
      axis_name=axis_name,
      name=name,
  )


def norm_relu(train: bool, dtype: Dtype, axis_name: Optional[str], name: str) -> BatchNormReLU:
  """`relu(batch_norm(...)(x))` as one op with a cheaper gradient (`dxnet_jax.ops.batchnorm`).

  Same variables under the same name as `batch_norm`, so checkpoints do not change.
  """
  return BatchNormReLU(
      use_running_average=not train,
      momentum=BN_MOMENTUM,
      epsilon=BN_EPSILON,
      dtype=dtype,
      axis_name=axis_name,
      name=name,
  )


# Stride-1 odd kxk convolutions through `ops.SpatialConv` (its `impl="auto"` picks the matmul form
# on the CPU for narrowing ones); False restores nn.Conv everywhere, for A/B timing only.
SPATIAL_CONV = True


def conv(
    features: int,
    kernel: int,
    dtype: Dtype,
    name: str,
    use_bias: bool = False,
    strides: int = 1,
    zero_init: bool = False,
) -> nn.Module:
  """A 'SAME'-padded square convolution with He (or, for residual outputs, zero) init."""
  init = nn.initializers.zeros if zero_init else conv_init
  if kernel == 1 and strides == 1:
    # Same parameters as nn.Conv; a plain matmul avoids XLA:CPU's transposed weight-gradient
    # convolutions (-14% on a DxNet step, -19% on DenseNet-BC; docs/performance.md).
    return PointwiseConv(features, use_bias=use_bias, dtype=dtype, kernel_init=init, name=name)
  if kernel % 2 and strides == 1 and SPATIAL_CONV:
    return SpatialConv(
        features, kernel, use_bias=use_bias, dtype=dtype, kernel_init=init, name=name
    )
  return nn.Conv(
      features,
      (kernel, kernel),
      strides=(strides, strides),
      padding='SAME',
      use_bias=use_bias,
      kernel_init=init,
      dtype=dtype,
      name=name,
  )


class DepthwiseConv(nn.Module):
  """Per-channel kxk convolution with bias.

  The kernel has flax's grouped-convolution layout ``[k, k, 1, C]`` so checkpoints are the same
  whichever implementation (`impl`) computes it.
  """

  kernel_size: int = 9
  impl: str = 'auto'
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    k = self.kernel_size
    kernel = self.param('kernel', conv_init, (k, k, 1, channels), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (channels,), jnp.float32)
    x = x.astype(self.dtype)
    y = depthwise_conv2d(x, kernel.astype(self.dtype), impl=self.impl)
    return y + bias.astype(self.dtype)


def _check_kernel_size(kernel_size: int):
  if kernel_size < 1 or kernel_size % 2 == 0:
    raise ValueError(
        f'xUnit kernel_size must be a positive odd number, got {kernel_size}; '
        "the paper uses 9 (the authors' code 7)."
    )


class XUnit(nn.Module):
  """The DxNet paper's xUnit: a learned spatial gate ``x * sigmoid(...)``."""

  kernel_size: int = 9
  use_batch_norm: bool = True
  depthwise_impl: str = 'auto'
  dtype: Dtype = jnp.float32
  bn_axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    _check_kernel_size(self.kernel_size)
    channels = x.shape[-1]
    g = conv(channels, 1, self.dtype, 'pointwise', use_bias=True)(x)
    if self.use_batch_norm:
      g = norm_relu(train, self.dtype, self.bn_axis_name, 'pointwise_bn')(g)
    else:
      g = nn.relu(g)
    g = DepthwiseConv(self.kernel_size, self.depthwise_impl, self.dtype, name='depthwise')(g)
    if self.use_batch_norm:
      g = batch_norm(train, self.dtype, self.bn_axis_name, 'depthwise_bn')(g)
    gate = nn.sigmoid(g)
    self.sow('intermediates', 'gate', gate)
    return x * gate


class GaussianXUnit(nn.Module):
  """The original (2018) xUnit: no 1x1 conv, Gaussian gate ``exp(-g^2)``."""

  kernel_size: int = 9
  use_batch_norm: bool = True
  depthwise_impl: str = 'auto'
  dtype: Dtype = jnp.float32
  bn_axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    _check_kernel_size(self.kernel_size)
    g = x
    if self.use_batch_norm:
      g = norm_relu(train, self.dtype, self.bn_axis_name, 'input_bn')(g)
    else:
      g = nn.relu(g)
    g = DepthwiseConv(self.kernel_size, self.depthwise_impl, self.dtype, name='depthwise')(g)
    if self.use_batch_norm:
      g = batch_norm(train, self.dtype, self.bn_axis_name, 'depthwise_bn')(g)
    gate = jnp.exp(-jnp.square(g))
    self.sow('intermediates', 'gate', gate)
    return x * gate


XUNIT_DESIGNS = {'dxnet': XUnit, 'gaussian': GaussianXUnit}


def make_xunit(design: str, **kwargs) -> nn.Module:
  """Builds the xUnit named by `design` ('dxnet' or 'gaussian')."""
  if design not in XUNIT_DESIGNS:
    raise ValueError(f'Unknown xUnit design {design!r}; choose one of {sorted(XUNIT_DESIGNS)}.')
  return XUNIT_DESIGNS[design](**kwargs)
