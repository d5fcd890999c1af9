"""Benchmark-only substitution of the models' 1x1 convolutions by `ops.PointwiseConv`.

It measures what the model would gain from computing its 1x1 convolutions as matmuls before
the model code makes that call itself; it swaps the `conv` helper that `dxnet_jax.layers` and
the model modules use, inside a `with` block, and restores it afterwards. Parameters are
identical either way (same names and shapes).
"""
import contextlib

from dxnet_jax import layers
from dxnet_jax.models import densenet, restoration
from dxnet_jax.ops.pointwise import PointwiseConv

_MODULES = (layers, densenet, restoration)


@contextlib.contextmanager
def pointwise_as_matmul():
  """Within the block, `conv(features, 1, ...)` (stride 1) builds a PointwiseConv."""
  original = layers.conv
  if getattr(original, 'is_pointwise_patch', False):
    yield
    return

  def conv(features, kernel, dtype, name, use_bias=False, strides=1, **kwargs):
    if kernel == 1 and strides == 1 and not kwargs:
      return PointwiseConv(features, use_bias=use_bias, dtype=dtype,
                           kernel_init=layers.conv_init, name=name)
    return original(features, kernel, dtype, name, use_bias=use_bias, strides=strides, **kwargs)

  conv.is_pointwise_patch = True
  saved = [m.conv for m in _MODULES]
  try:
    for m in _MODULES:
      m.conv = conv
    yield
  finally:
    for m, c in zip(_MODULES, saved):
      m.conv = c
