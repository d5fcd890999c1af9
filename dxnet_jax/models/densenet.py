"""DenseNet-BC and Dense xUnit Networks (DxNet): dense layers, blocks, transitions, classifiers.

Readings of the paper, checked against its parameter counts (see README "Models"):

* Dense layer (DenseNet-BC): BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k). The x-dense layer passes the
  k-channel output through an xUnit before it is concatenated to the input. A 2k bottleneck misses
  the paper's sizes, so the bottleneck is 4k.
* CIFAR/SVHN form: Conv3x3 stem to 2k channels (followed by an xUnit in DxNet), three equal dense
  blocks, transitions BN-ReLU-Conv1x1(r*m)-AvgPool2x2 with r=0.5, final BN-ReLU, global average
  pool, dense layer. SVHN adds dropout after each convolution.
* ImageNet form: torchvision's DenseNet (Conv7x7/2 stem to 2k channels, BN-ReLU, MaxPool3x3/2);
  DxNet-105 uses blocks 6-12-20-12 with k=32 and an xUnit after the stem.
* Convolutions inside the dense path carry no bias (BatchNorm follows); xUnit convolutions and
  the classifier do, as in the PyTorch code the counts come from. With parts without BatchNorm
  (`Parts.without_norm`, the super-resolution nets) every convolution carries a bias.
* `x_module_norm` gives the x-dense layer of the authors' restoration code instead: a biased
  Conv3x3(k), the xUnit and a BatchNorm after it (their `xModule`).

Every module takes its convolutions, norms and xUnit from `parts` (`dxnet_jax.layers.Parts`).
"""

import dataclasses
import functools
from typing import Optional, Sequence, Union

import flax.linen as nn
import jax.numpy as jnp

from dxnet_jax.layers import ModuleDef, Parts, remat_def

ACTIVATIONS = ('relu', 'xunit')
REMAT_MODES = (False, True, 'memory', 'speed')


def dropout(x, rate: float, train: bool):
  return nn.Dropout(rate, deterministic=not train)(x) if rate else x


class DenseLayer(nn.Module):
  """BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k)[-xUnit] on the concatenation of `features`.

  Takes the block input and every earlier layer's output as a sequence and returns only its k new
  channels, so that a block that recomputes its layers keeps just the k-channel pieces.
  """

  growth_rate: int
  parts: Parts
  bottleneck_width: int = 4
  xunit: bool = False
  x_module_norm: bool = False
  dropout_rate: float = 0.0
  remat_bottleneck: bool = False

  @nn.compact
  def __call__(self, features: Sequence[jnp.ndarray], train: bool = False):
    bottleneck = DenseLayer.bottleneck
    if self.remat_bottleneck:
      bottleneck = self.parts.remat(bottleneck, static_argnums=(2,))
    y = bottleneck(self, features, train)
    bias = dict(use_bias=True) if self.x_module_norm else {}
    y = self.parts.conv(self.growth_rate, (3, 3), name='conv2', **bias)(y)
    y = dropout(y, self.dropout_rate, train)
    if self.xunit:
      y = self.parts.xunit(name='xunit')(y, train)
    if self.x_module_norm:
      y = self.parts.norm(use_running_average=not train, name='x_module_bn')(y)
    return y

  def bottleneck(self, features, train: bool):
    """BN-ReLU-Conv1x1(4k)-BN-ReLU of the concatenated inputs: the memory that grows with depth."""
    norm_relu = functools.partial(self.parts.norm_relu, use_running_average=not train)
    y = norm_relu(name='bn1')(features)
    y = self.parts.conv(self.bottleneck_width * self.growth_rate, (1, 1), name='conv1')(y)
    y = dropout(y, self.dropout_rate, train)
    return norm_relu(name='bn2')(y)


class DenseBlock(nn.Module):
  """`num_layers` dense layers, each fed the block input and every earlier layer's output.

  `remat` recomputes each layer (True or 'memory') or only its bottleneck ('speed') in the
  backward pass, so only the k-channel outputs are kept: memory linear instead of quadratic in
  depth, as in the memory-efficient DenseNet of Pleiss et al. Layer names are fixed, so the
  parameters are the same in every mode.
  """

  num_layers: int
  layer: ModuleDef
  parts: Parts
  remat: Union[bool, str] = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    layer = self.layer
    if self.remat == 'speed':
      layer = functools.partial(layer, remat_bottleneck=True)
    elif self.remat:
      layer = remat_def(self.parts.remat, layer)
    features = [x]
    for i in range(self.num_layers):
      features.append(layer(name=f'layer{i}')(tuple(features), train))
    return jnp.concatenate(features, axis=-1)


class Transition(nn.Module):
  """BN-ReLU-Conv1x1 to `features` channels, optionally followed by 2x2 average pooling."""

  features: int
  parts: Parts
  pool: bool = True
  dropout_rate: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = self.parts.norm_relu(use_running_average=not train, name='bn')(x)
    x = self.parts.conv(self.features, (1, 1), name='conv')(x)
    x = dropout(x, self.dropout_rate, train)
    return nn.avg_pool(x, (2, 2), strides=(2, 2)) if self.pool else x


def validate_dense_spec(
    blocks: Sequence[int], growth_rate: int, compression: float, activation: str, remat=False
):
  """Fails early with a readable message on a malformed network description."""
  if not blocks or any(int(b) != b or b < 1 for b in blocks):
    raise ValueError(
        'blocks must be a non-empty sequence of positive integers (layers per dense block), '
        f'e.g. (16, 16, 16); got {tuple(blocks)!r}.'
    )
  if growth_rate < 1:
    raise ValueError(f'growth_rate (k) must be a positive integer, got {growth_rate}.')
  if not 0.0 < compression <= 1.0:
    raise ValueError(f'compression (r) must lie in (0, 1], got {compression}.')
  if activation not in ACTIVATIONS:
    raise ValueError(f'activation must be one of {ACTIVATIONS}, got {activation!r}.')
  if remat not in REMAT_MODES:
    raise ValueError(f'remat must be one of {REMAT_MODES}, got {remat!r}.')


class DenseTrunk(nn.Module):
  """Dense blocks joined by transitions: the body shared by classifiers and restoration nets."""

  blocks: Sequence[int]
  growth_rate: int
  parts: Parts
  compression: float = 0.5
  bottleneck_width: int = 4
  xunit: bool = False
  x_module_norm: bool = False
  dropout_rate: float = 0.0
  pool: bool = True
  remat: Union[bool, str] = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    layer = functools.partial(
        DenseLayer,
        self.growth_rate,
        self.parts,
        bottleneck_width=self.bottleneck_width,
        xunit=self.xunit,
        x_module_norm=self.x_module_norm,
        dropout_rate=self.dropout_rate,
    )
    block = self.parts.dense_block or DenseBlock
    for i, num_layers in enumerate(self.blocks):
      x = block(num_layers, layer, self.parts, self.remat, name=f'block{i}')(x, train)
      if i < len(self.blocks) - 1:
        features = int(x.shape[-1] * self.compression)
        x = Transition(features, self.parts, self.pool, self.dropout_rate, name=f'transition{i}')(
            x, train
        )
    return x


def trunk_of(
    net: nn.Module,
    parts: Parts,
    pool: bool = True,
    dropout_rate: float = 0.0,
    x_module_norm: bool = False,
):
  """The dense trunk of `net`, a model with `blocks`, `growth_rate`, `compression`,
  `bottleneck_width`, `activation` and `remat` fields, checked."""
  validate_dense_spec(net.blocks, net.growth_rate, net.compression, net.activation, net.remat)
  return DenseTrunk(
      net.blocks,
      net.growth_rate,
      parts,
      compression=net.compression,
      bottleneck_width=net.bottleneck_width,
      xunit=net.activation == 'xunit',
      x_module_norm=x_module_norm,
      dropout_rate=dropout_rate,
      pool=pool,
      remat=net.remat,
      name='trunk',
  )


class DenseNetBackbone(nn.Module):
  """Stem, dense trunk and final BN-ReLU of a classifier; returns the last feature map."""

  blocks: Sequence[int]
  growth_rate: int
  parts: Parts
  stem: str = 'cifar'
  stem_features: Optional[int] = None
  stem_xunit: Optional[bool] = None
  compression: float = 0.5
  bottleneck_width: int = 4
  activation: str = 'relu'
  dropout_rate: float = 0.0
  remat: Union[bool, str] = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    parts = self.parts
    trunk = trunk_of(self, parts, dropout_rate=self.dropout_rate)  # checks the description
    x = x.astype(parts.dtype)
    stem_features = self.stem_features or 2 * self.growth_rate
    if self.stem == 'cifar':
      x = parts.conv(stem_features, (3, 3), name='stem_conv')(x)
    elif self.stem == 'imagenet':
      x = parts.conv(stem_features, (7, 7), strides=2, name='stem_conv')(x)
      x = parts.norm_relu(use_running_average=not train, name='stem_bn')(x)
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    else:
      raise ValueError(f"stem must be 'cifar' or 'imagenet', got {self.stem!r}.")
    stem_xunit = self.activation == 'xunit' if self.stem_xunit is None else self.stem_xunit
    if stem_xunit:
      x = parts.xunit(name='stem_xunit')(x, train)
    x = trunk(x, train)
    return parts.norm_relu(use_running_average=not train, name='final_bn')(x)


class DenseNetClassifier(DenseNetBackbone):
  """DenseNet-BC / DxNet image classifier: the backbone and a dense head over global pooling.

  `features` returns the final feature map (after the last BN-ReLU), so class activation maps can
  be formed from it and the `head` kernel; `__call__` returns float32 logits.
  """

  num_classes: int = 10

  def setup(self):
    if self.num_classes < 1:
      raise ValueError(f'num_classes must be positive, got {self.num_classes}.')
    fields = [f.name for f in dataclasses.fields(DenseNetBackbone)]
    self.backbone = DenseNetBackbone(
        **{f: getattr(self, f) for f in fields if f not in ('parent', 'name')}
    )
    self.head = nn.Dense(self.num_classes, dtype=self.parts.dtype)

  def features(self, x, train: bool = False):
    return self.backbone(x, train)

  def __call__(self, x, train: bool = False):
    x = jnp.mean(self.features(x, train), axis=(1, 2))
    return self.head(x).astype(jnp.float32)
