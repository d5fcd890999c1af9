"""`models.DenseBlock` arranged for XLA:CPU: the same layers, parameters and values.

* Shared statistics: every layer normalises the concatenation of all earlier outputs, whose
  batch statistics do not change from layer to layer. In training they are computed once per
  k-channel piece and handed on (`batchnorm.Pieces`), instead of reducing the whole
  concatenation in every layer (and, under pmap, all-reducing it).
* Without remat one concatenation grows layer by layer, which XLA:CPU runs faster than
  re-concatenating every layer's input.
* Each xUnit layer's output gradient is a sum over every later layer; it is computed once
  (`fusion.gradient_through_product`) instead of inside each reader of it. Under remat='speed' a
  layer without an xUnit materialises that sum instead (`fusion.gradient_materialized`).
* remat True / 'memory' recomputes whole layers with `remat.ordered_remat`, whose recomputation
  waits for the backward pass (XLA:CPU would run `jax.checkpoint`'s early); each layer then
  reduces its own input (handing the recomputed layers the shared statistics made compiling a
  DenseNet-BC 16-16-16 step exhaust 12 GB).
"""

import functools
from typing import Any, Optional, Union

import flax.linen as nn
import jax.numpy as jnp

from dxnet_jax.layers import ModuleDef, Parts, remat_def
from dxnet_jax.xla_cpu.batchnorm import Pieces, channel_stats, concat_stats
from dxnet_jax.xla_cpu.fusion import gradient_materialized, gradient_through_product
from dxnet_jax.xla_cpu.remat import ordered_remat


class DenseBlock(nn.Module):
  """`num_layers` dense layers; see the module docstring for how XLA:CPU computes them."""

  num_layers: int
  layer: ModuleDef
  parts: Parts
  remat: Union[bool, str] = False
  axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.remat and self.remat != 'speed':
      layer = remat_def(functools.partial(ordered_remat, sync='tied'), self.layer)
      features = [x]
      for i in range(self.num_layers):
        features.append(layer(name=f'layer{i}')(tuple(features), train))
      return jnp.concatenate(features, axis=-1)
    share = train and self.parts.normalizes
    speed = self.remat == 'speed'
    layer = functools.partial(self.layer, remat_bottleneck=True) if speed else self.layer
    pieces = [x]
    stats = [channel_stats(x, self.axis_name)] if share else []
    for i in range(self.num_layers):
      module = layer(name=f'layer{i}')
      y = module(Pieces(tuple(pieces), tuple(stats)) if share else tuple(pieces), train)
      if module.xunit:
        y = gradient_through_product(y)
      elif speed:
        y = gradient_materialized(y)
      if share:
        stats.append(channel_stats(y, self.axis_name))
      pieces.append(y)
      if not speed:
        pieces = [jnp.concatenate(pieces, axis=-1)]
        stats = [concat_stats(stats)] if share else []
    return pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=-1)
