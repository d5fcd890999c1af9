"""The parts a DxNet is built from, and the xUnits.

Networks do not choose their convolutions or normalisation themselves: they take a `Parts`, a
bundle of flax module definitions (classes or `functools.partial`s), the way flax's
examples/imagenet hands `conv` and `norm` to its ResNet. `dxnet_jax.kernels.make_parts` builds one
for a `kernels` setting; the parts below are the plain flax ones ('xla'). Every choice of parts
gives the same parameter tree, so a checkpoint loads whichever computed it.

The xUnit is a learnable *spatial* activation: it multiplies its input by a gate in [0, 1]
computed from a neighbourhood of each pixel, so one unit does the work of several ReLU layers.

* `XUnit` (the DxNet paper): ``x * sigmoid(BN(dwconv_kxk(ReLU(BN(conv1x1(x))))))``.
* `GaussianXUnit` (the original 2018 xUnit): ``x * exp(-BN(dwconv_kxk(ReLU(BN(x))))^2)``, no 1x1
  convolution; kept for the paper's xUnit-design comparison (Fig. 4).

Both convolutions of an xUnit carry biases, as in the authors' PyTorch code.
"""

import dataclasses
import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Any

# Flax's momentum is the weight of the *old* statistic: 0.9 here is PyTorch's momentum=0.1.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# He-normal (fan-in) initialisation, as torchvision's DenseNet and the authors' code use.
he_normal = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')


class BatchNormReLU(nn.BatchNorm):
  """``relu(BatchNorm(x))`` as one part, so that other parts may compute the two together.

  `x` may be a sequence of arrays: their concatenation along channels is normalised (a dense
  layer normalises the concatenation of its inputs; other parts may reuse per-piece statistics).
  """

  def __call__(self, x, use_running_average: Optional[bool] = None, **kwargs):
    if isinstance(x, (list, tuple)):
      x = jnp.concatenate(x, axis=-1)
    return nn.relu(super().__call__(x, use_running_average, **kwargs))


class Identity(nn.Module):
  """The norm of nets without BatchNorm."""

  use_running_average: Optional[bool] = None

  def __call__(self, x):
    return x


class ReLU(nn.Module):
  """The norm + ReLU of nets without BatchNorm."""

  use_running_average: Optional[bool] = None

  def __call__(self, x):
    if isinstance(x, (list, tuple)):
      x = jnp.concatenate(x, axis=-1)
    return nn.relu(x)


def depthwise_conv2d(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """'SAME' per-channel convolution of `x [N, H, W, C]` with `kernel [kh, kw, 1, C]`."""
  return jax.lax.conv_general_dilated(
      x,
      kernel,
      window_strides=(1, 1),
      padding='SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=x.shape[-1],
  )


class DepthwiseConv(nn.Module):
  """A `kernel_size` x `kernel_size` convolution per channel, with bias.

  The kernel has flax's grouped-convolution layout ``[k, k, 1, C]``; `convolve(x, kernel)`
  computes it (parts may bring a faster one).
  """

  kernel_size: int = 9
  convolve: Callable[[jax.Array, jax.Array], jax.Array] = depthwise_conv2d
  dtype: Any = None

  @nn.compact
  def __call__(self, x):
    channels, k = x.shape[-1], self.kernel_size
    kernel = self.param('kernel', he_normal, (k, k, 1, channels), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (channels,), jnp.float32)
    dtype = self.dtype or x.dtype
    return self.convolve(x.astype(dtype), kernel.astype(dtype)) + bias.astype(dtype)


class XUnit(nn.Module):
  """The DxNet paper's xUnit: a learned spatial gate, ``x * sigmoid(...)``."""

  conv: ModuleDef
  depthwise_conv: ModuleDef
  norm: ModuleDef
  norm_relu: ModuleDef
  kernel_size: int = 9

  @nn.compact
  def __call__(self, x, train: bool = False):
    g = self.conv(x.shape[-1], (1, 1), use_bias=True, name='pointwise')(x)
    g = self.norm_relu(use_running_average=not train, name='pointwise_bn')(g)
    g = self.depthwise_conv(self.kernel_size, name='depthwise')(g)
    g = self.norm(use_running_average=not train, name='depthwise_bn')(g)
    gate = nn.sigmoid(g)
    self.sow('intermediates', 'gate', gate)
    return x * gate


class GaussianXUnit(XUnit):
  """The original (2018) xUnit: a Gaussian gate, ``x * exp(-g^2)``, and no 1x1 convolution."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    g = self.norm_relu(use_running_average=not train, name='input_bn')(x)
    g = self.depthwise_conv(self.kernel_size, name='depthwise')(g)
    g = self.norm(use_running_average=not train, name='depthwise_bn')(g)
    gate = jnp.exp(-jnp.square(g))
    self.sow('intermediates', 'gate', gate)
    return x * gate


XUNIT_DESIGNS = {'dxnet': XUnit, 'gaussian': GaussianXUnit}


@dataclasses.dataclass(frozen=True)
class Parts:
  """The module definitions a network is built from.

  conv(features, kernel_size, strides=1, use_bias=..., name=...)   'SAME' convolution, He init
  depthwise_conv(kernel_size, name=...)                           per-channel convolution + bias
  norm(use_running_average=..., name=...)                         BatchNorm
  norm_relu(use_running_average=..., name=...)                    ReLU(BatchNorm(x))
  xunit(name=...)(x, train)                                       the xUnit, built from these parts
  remat(target, static_argnums=...)                               `nn.remat` or an equivalent
  dense_block                                                     None: `models.DenseBlock`; other
                                                                  parts may arrange a block's
                                                                  computation differently
  dtype                                                           what the network computes in
  """

  conv: ModuleDef
  depthwise_conv: ModuleDef
  norm: ModuleDef
  norm_relu: ModuleDef
  xunit: ModuleDef
  remat: Callable[..., Any] = nn.remat
  dense_block: Optional[ModuleDef] = None
  dtype: Any = jnp.float32

  @property
  def normalizes(self) -> bool:
    return self.norm is not Identity

  def replace(self, **changes) -> 'Parts':
    """These parts with some replaced; the xUnit is rebuilt from the new ones."""
    parts = dataclasses.replace(self, **changes)
    xunit_parts = ('conv', 'depthwise_conv', 'norm', 'norm_relu')
    xunit = functools.partial(parts.xunit, **{k: getattr(parts, k) for k in xunit_parts})
    return dataclasses.replace(parts, xunit=xunit)

  def without_norm(self) -> 'Parts':
    """The same parts without BatchNorm: ReLU alone, and a bias on every convolution."""
    conv = functools.partial(self.conv, use_bias=True)
    return self.replace(conv=conv, norm=Identity, norm_relu=ReLU)


def remat_def(remat: Callable[..., Any], module_def: ModuleDef) -> ModuleDef:
  """`remat` (`nn.remat` or alike) of a module class or a partial of one; `train`, the second
  argument of its `__call__`, is static."""
  if isinstance(module_def, functools.partial):
    rematted = remat(module_def.func, static_argnums=(2,))
    return functools.partial(rematted, *module_def.args, **module_def.keywords)
  return remat(module_def, static_argnums=(2,))


def xunit_def(design: str, kernel_size: int, conv, depthwise_conv, norm, norm_relu) -> ModuleDef:
  """The xUnit of `design` ('dxnet' or 'gaussian') with a `kernel_size` depthwise filter."""
  if design not in XUNIT_DESIGNS:
    raise ValueError(f'Unknown xUnit design {design!r}; choose one of {sorted(XUNIT_DESIGNS)}.')
  if int(kernel_size) != kernel_size or kernel_size < 1 or kernel_size % 2 == 0:
    raise ValueError(
        f'xunit_kernel must be a positive odd number, got {kernel_size}; the paper uses 9 (the '
        "authors' code 7)."
    )
  return functools.partial(
      XUNIT_DESIGNS[design],
      kernel_size=int(kernel_size),
      conv=conv,
      depthwise_conv=depthwise_conv,
      norm=norm,
      norm_relu=norm_relu,
  )


def flax_parts(
    dtype=jnp.float32,
    axis_name: Optional[str] = None,
    xunit_design: str = 'dxnet',
    xunit_kernel: int = 9,
) -> Parts:
  """Plain flax parts: `nn.Conv`, `nn.BatchNorm` with PyTorch's momentum, XLA's convolutions.

  `axis_name` averages BatchNorm statistics over a `pmap` axis; the xUnit is `xunit_design`'s
  with a `xunit_kernel`-wide depthwise filter.
  """
  conv = functools.partial(
      nn.Conv, padding='SAME', use_bias=False, kernel_init=he_normal, dtype=dtype
  )
  bn = dict(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=dtype, axis_name=axis_name)
  norm = functools.partial(nn.BatchNorm, **bn)
  norm_relu = functools.partial(BatchNormReLU, **bn)
  depthwise_conv = functools.partial(DepthwiseConv, dtype=dtype)
  return Parts(
      conv=conv,
      depthwise_conv=depthwise_conv,
      norm=norm,
      norm_relu=norm_relu,
      xunit=xunit_def(xunit_design, xunit_kernel, conv, depthwise_conv, norm, norm_relu),
      dtype=dtype,
  )
