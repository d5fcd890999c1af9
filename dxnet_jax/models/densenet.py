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
  the classifier do, as in the PyTorch code the counts come from.

Without BatchNorm (`use_batch_norm=False`, the super-resolution nets) every convolution of the
dense path carries a bias and the BN steps are dropped.
"""

from typing import Any, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from dxnet_jax.layers import conv, make_xunit, norm_relu
from dxnet_jax.ops.batchnorm import channel_stats
from dxnet_jax.ops.fusion import gradient_materialized, gradient_through_product
from dxnet_jax.ops.remat import ordered_remat

Dtype = Any

ACTIVATIONS = ('relu', 'xunit')
REMAT_MODES = (False, True, 'memory', 'speed')


class DenseLayer(nn.Module):
  """BN-ReLU-Conv1x1(4k)-BN-ReLU-Conv3x3(k)[-xUnit] on the concatenation of its inputs.

  Takes the block input and every earlier layer's output as a sequence and returns only its k
  new channels: concatenating *inside* the layer lets `remat` keep just the k-channel pieces
  instead of every layer's ever wider input (linear instead of quadratic memory in depth).
  `stats`, one batch (mean, variance) per piece of `features`, saves the first BatchNorm its
  reduction (see `SHARE_STATS`); training mode with BatchNorm only.
  """

  growth_rate: int
  bottleneck_width: int = 4
  activation: str = 'relu'
  xunit_design: str = 'dxnet'
  xunit_kernel: int = 9
  depthwise_impl: str = 'auto'
  use_batch_norm: bool = True
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  bn_axis_name: Optional[str] = None
  remat_bottleneck: bool = False

  @nn.compact
  def __call__(
      self,
      features: Sequence[jnp.ndarray],
      train: bool = False,
      stats: Optional[Sequence[Any]] = None,
  ):
    if self.remat_bottleneck:
      bottleneck = ordered_remat(DenseLayer._bottleneck, static_argnums=(2,), sync='barrier')
      y = bottleneck(self, tuple(features), train, stats)
    else:
      y = self._bottleneck(features, train, stats)
    bias = not self.use_batch_norm
    y = conv(self.growth_rate, 3, self.dtype, 'conv2', use_bias=bias)(y)
    y = nn.Dropout(self.dropout_rate, deterministic=not train)(y) if self.dropout_rate else y
    if self.activation == 'xunit':
      y = make_xunit(
          self.xunit_design,
          kernel_size=self.xunit_kernel,
          use_batch_norm=self.use_batch_norm,
          depthwise_impl=self.depthwise_impl,
          dtype=self.dtype,
          bn_axis_name=self.bn_axis_name,
          name='xunit',
      )(y, train)
    return y.astype(features[0].dtype)

  def _bottleneck(self, features, train, stats):
    """Concatenation, BN-ReLU-Conv1x1(4k), BN-ReLU: the part whose memory grows with depth."""
    x = features[0] if len(features) == 1 else jnp.concatenate(features, axis=-1)
    bias = not self.use_batch_norm
    y = self._norm_relu(x, train, 'bn1', _concat_stats(stats))
    y = conv(self.bottleneck_width * self.growth_rate, 1, self.dtype, 'conv1', use_bias=bias)(y)
    y = nn.Dropout(self.dropout_rate, deterministic=not train)(y) if self.dropout_rate else y
    return self._norm_relu(y, train, 'bn2')

  def _norm_relu(self, x, train, name, stats=None):
    if self.use_batch_norm:
      return norm_relu(train, self.dtype, self.bn_axis_name, name)(x, stats)
    return nn.relu(x)


def _concat_stats(stats):
  """(mean, var) of a concatenation from the (mean, var) of its pieces; None if not given."""
  if stats is None:
    return None
  if len(stats) == 1:
    return stats[0]
  return tuple(jnp.concatenate(parts) for parts in zip(*stats))


# Dense blocks without remat compute each piece's batch statistics once and hand them to every
# later layer's first BatchNorm (`ops.batchnorm.batch_norm_relu_given_stats`): the same values
# and gradients as each layer reducing its whole input, without a reduction (and, under pmap,
# an all-reduce) over an ever wider concatenation per layer. A step of DenseNet-BC 16-16-16
# took 0.85x the time, DxNet 12-12-12 0.93x (docs/performance.md). False restores the
# per-layer statistics (the tests compare the two).
SHARE_STATS = True

# Dense blocks (without remat, and with remat='speed') pass each xUnit layer's output gradient
# through `ops.fusion.gradient_through_product` on the CPU (see `DenseBlock`); False leaves the
# sum to XLA's fusion (the tests compare the two).
XUNIT_GRADIENT_THROUGH_PRODUCT = True


class DenseBlock(nn.Module):
  """`num_layers` dense layers; `remat` recomputes each layer in the backward pass.

  DenseNet's concatenations make stored activations grow quadratically with depth. With `remat`
  each layer (its concatenation included) is recomputed in the backward pass, so only the block
  input and the layers' k-channel outputs are kept, as in the memory-efficient DenseNet of Pleiss
  et al. Layers get explicit names so the parameter tree is the same with and without remat
  (checkpoints stay interchangeable).

  `remat`: False; True or 'memory' (whole layers recomputed: 5.4-5.9x less memory than without,
  about 1.5-1.6x the step time on a 2-core CPU); 'speed' (only each layer's concatenation and
  bottleneck, BN-ReLU-Conv1x1-BN-ReLU, recomputed, with shared batch statistics: DenseNet-BC
  16-16-16 4.3x less memory at 1.14x the step time on a 2-core CPU). See `dxnet_jax.ops.remat`
  and docs/performance.md.
  """

  num_layers: int
  layer_kwargs: Any
  remat: Union[bool, str] = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    if not self.remat:
      # Without recomputation, growing one concatenation layer by layer is the faster form on
      # XLA:CPU (DenseNet-BC 16-16-16 step 3.4 s vs 4.1 s re-concatenating in every layer).
      share = self._share_stats(train)
      stats = self._stats(x) if share else None
      through_product = self._xunit_gradient_through_product()
      for i in range(self.num_layers):
        y = DenseLayer(**self.layer_kwargs, name=f'layer{i}')(
            (x,), train, (stats,) if share else None
        )
        if through_product:
          y = gradient_through_product(y)
        x = jnp.concatenate([x, y], axis=-1)
        if share:
          stats = _concat_stats([stats, self._stats(y)])
      return x
    if self.remat not in REMAT_MODES:
      raise ValueError(f'remat must be one of {REMAT_MODES}, got {self.remat!r}.')
    if self.remat == 'speed':
      return self._remat_bottlenecks(x, train)
    remat_layer = ordered_remat(DenseLayer, static_argnums=(2,), sync='tied')
    # Each layer reduces its own input here: handing the shared statistics to the recomputed
    # layers made compiling a DenseNet-BC 16-16-16 step (batch 64) exhaust 12 GB of memory.
    features = [x]
    for i in range(self.num_layers):
      features.append(remat_layer(**self.layer_kwargs, name=f'layer{i}')(tuple(features), train))
    return jnp.concatenate(features, axis=-1)

  def _remat_bottlenecks(self, x, train):
    """remat='speed': each layer recomputes only its concatenation, BN-ReLU-Conv1x1, BN-ReLU.

    Those hold the memory that grows with depth; the 3x3 convolution and the xUnit keep their
    k- and 4k-channel activations, so the backward pass repeats the cheap part of each layer.
    The pieces' batch statistics are shared as without remat (the recomputation reads them).
    Each layer's output reaches every later layer as a piece of its own, so its gradient is a
    sum over them. Where that output is the 3x3 convolution's (no xUnit), the sum is computed
    once (`gradient_materialized`), not inside each of the nine shifted copies of the
    convolution's backward pass: DenseNet-BC's 'speed' step took 1.14x the no-remat step's time
    instead of 1.61x. After an xUnit that materialisation does not hold (XLA still fused the sum
    into the gate's derivatives, and the step took 1.09x); there the sum goes through
    `gradient_through_product` on the CPU instead (DxNet 'speed' step 0.96x; docs/performance.md).
    """
    share = self._share_stats(train)
    kwargs = dict(self.layer_kwargs, remat_bottleneck=True)
    materialize = kwargs.get('activation', 'relu') != 'xunit'
    through_product = self._xunit_gradient_through_product()
    features, stats = [x], ([self._stats(x)] if share else None)
    for i in range(self.num_layers):
      y = DenseLayer(**kwargs, name=f'layer{i}')(
          tuple(features), train, tuple(stats) if share else None
      )
      if materialize:
        y = gradient_materialized(y)
      elif through_product:
        y = gradient_through_product(y)
      features.append(y)
      if share:
        stats.append(self._stats(y))
    return jnp.concatenate(features, axis=-1)

  def _xunit_gradient_through_product(self) -> bool:
    """Whether each xUnit layer's output gradient is summed once, before its readers.

    An xUnit layer's output gradient is the sum of every later layer's piece, and XLA:CPU fused
    that sum into both of the gate's derivatives (and more readers in small nets), computing it
    again in each; `gradient_through_product` makes it once. CPU only (measured there, step time:
    DxNet 12-12-12 0.95x without remat and 0.96x with remat='speed', the 4-4-4 denoiser 0.95x);
    without remat, layers without xUnits keep the fused sum (DenseNet-BC 16-16-16 was 1.03x
    slower with it).
    """
    return (
        XUNIT_GRADIENT_THROUGH_PRODUCT
        and jax.default_backend() == 'cpu'
        and self.layer_kwargs.get('activation', 'relu') == 'xunit'
    )

  def _share_stats(self, train: bool) -> bool:
    return SHARE_STATS and train and self.layer_kwargs.get('use_batch_norm', True)

  def _stats(self, x):
    return channel_stats(x, self.layer_kwargs.get('bn_axis_name'))


class Transition(nn.Module):
  """BN-ReLU-Conv1x1 to `features` channels, optionally followed by 2x2 average pooling."""

  features: int
  pool: bool = True
  use_batch_norm: bool = True
  dropout_rate: float = 0.0
  dtype: Dtype = jnp.float32
  bn_axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.use_batch_norm:
      x = norm_relu(train, self.dtype, self.bn_axis_name, 'bn')(x)
    else:
      x = nn.relu(x)
    x = conv(self.features, 1, self.dtype, 'conv', use_bias=not self.use_batch_norm)(x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x) if self.dropout_rate else x
    if self.pool:
      x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    return x


def validate_dense_spec(
    blocks: Sequence[int], growth_rate: int, compression: float, activation: str
):
  """Fails early with a readable message on a malformed network description."""
  if not blocks or any(int(b) != b or b < 1 for b in blocks):
    raise ValueError(
        f'blocks must be a non-empty sequence of positive integers (layers per dense '
        f'block), e.g. (16, 16, 16); got {tuple(blocks)!r}.'
    )
  if growth_rate < 1:
    raise ValueError(f'growth_rate (k) must be a positive integer, got {growth_rate}.')
  if not 0.0 < compression <= 1.0:
    raise ValueError(f'compression (r) must lie in (0, 1], got {compression}.')
  if activation not in ACTIVATIONS:
    raise ValueError(f'activation must be one of {ACTIVATIONS}, got {activation!r}.')


class DenseTrunk(nn.Module):
  """Dense blocks joined by transitions: the body shared by classifiers and restoration nets."""

  blocks: Sequence[int]
  growth_rate: int
  compression: float = 0.5
  bottleneck_width: int = 4
  activation: str = 'relu'
  xunit_design: str = 'dxnet'
  xunit_kernel: int = 9
  depthwise_impl: str = 'auto'
  use_batch_norm: bool = True
  dropout_rate: float = 0.0
  pool: bool = True
  remat: Union[bool, str] = False
  dtype: Dtype = jnp.float32
  bn_axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    validate_dense_spec(self.blocks, self.growth_rate, self.compression, self.activation)
    layer_kwargs = dict(
        growth_rate=self.growth_rate,
        bottleneck_width=self.bottleneck_width,
        activation=self.activation,
        xunit_design=self.xunit_design,
        xunit_kernel=self.xunit_kernel,
        depthwise_impl=self.depthwise_impl,
        use_batch_norm=self.use_batch_norm,
        dropout_rate=self.dropout_rate,
        dtype=self.dtype,
        bn_axis_name=self.bn_axis_name,
    )
    for i, num_layers in enumerate(self.blocks):
      x = DenseBlock(num_layers, layer_kwargs, self.remat, name=f'block{i}')(x, train)
      if i < len(self.blocks) - 1:
        x = Transition(
            int(x.shape[-1] * self.compression),
            pool=self.pool,
            use_batch_norm=self.use_batch_norm,
            dropout_rate=self.dropout_rate,
            dtype=self.dtype,
            bn_axis_name=self.bn_axis_name,
            name=f'transition{i}',
        )(x, train)
    return x


class DenseNetBackbone(nn.Module):
  """Stem, dense trunk and final BN-ReLU of a classifier; returns the last feature map."""

  blocks: Sequence[int]
  growth_rate: int
  stem: str = 'cifar'
  stem_features: Optional[int] = None
  stem_xunit: Optional[bool] = None
  compression: float = 0.5
  bottleneck_width: int = 4
  activation: str = 'relu'
  xunit_design: str = 'dxnet'
  xunit_kernel: int = 9
  depthwise_impl: str = 'auto'
  dropout_rate: float = 0.0
  remat: Union[bool, str] = False
  dtype: Dtype = jnp.float32
  bn_axis_name: Optional[str] = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    validate_dense_spec(self.blocks, self.growth_rate, self.compression, self.activation)
    x = x.astype(self.dtype)
    stem_features = self.stem_features or 2 * self.growth_rate
    if self.stem == 'cifar':
      x = conv(stem_features, 3, self.dtype, 'stem_conv')(x)
    elif self.stem == 'imagenet':
      x = conv(stem_features, 7, self.dtype, 'stem_conv', strides=2)(x)
      x = norm_relu(train, self.dtype, self.bn_axis_name, 'stem_bn')(x)
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    else:
      raise ValueError(f"stem must be 'cifar' or 'imagenet', got {self.stem!r}.")
    use_stem_xunit = (self.activation == 'xunit') if self.stem_xunit is None else self.stem_xunit
    if use_stem_xunit:
      x = make_xunit(
          self.xunit_design,
          kernel_size=self.xunit_kernel,
          depthwise_impl=self.depthwise_impl,
          dtype=self.dtype,
          bn_axis_name=self.bn_axis_name,
          name='stem_xunit',
      )(x, train)
    x = DenseTrunk(
        self.blocks,
        self.growth_rate,
        compression=self.compression,
        bottleneck_width=self.bottleneck_width,
        activation=self.activation,
        xunit_design=self.xunit_design,
        xunit_kernel=self.xunit_kernel,
        depthwise_impl=self.depthwise_impl,
        dropout_rate=self.dropout_rate,
        remat=self.remat,
        dtype=self.dtype,
        bn_axis_name=self.bn_axis_name,
        name='trunk',
    )(x, train)
    return norm_relu(train, self.dtype, self.bn_axis_name, 'final_bn')(x)


class DenseNetClassifier(nn.Module):
  """DenseNet-BC / DxNet image classifier.

  `features` returns the final feature map so class activation maps can be formed from it and
  the `head` kernel; `__call__` returns float32 logits.
  """

  num_classes: int
  blocks: Sequence[int]
  growth_rate: int
  stem: str = 'cifar'
  stem_features: Optional[int] = None
  stem_xunit: Optional[bool] = None
  compression: float = 0.5
  bottleneck_width: int = 4
  activation: str = 'relu'
  xunit_design: str = 'dxnet'
  xunit_kernel: int = 9
  depthwise_impl: str = 'auto'
  dropout_rate: float = 0.0
  remat: Union[bool, str] = False
  dtype: Dtype = jnp.float32
  bn_axis_name: Optional[str] = None

  def setup(self):
    if self.num_classes < 1:
      raise ValueError(f'num_classes must be positive, got {self.num_classes}.')
    self.backbone = DenseNetBackbone(
        self.blocks,
        self.growth_rate,
        stem=self.stem,
        stem_features=self.stem_features,
        stem_xunit=self.stem_xunit,
        compression=self.compression,
        bottleneck_width=self.bottleneck_width,
        activation=self.activation,
        xunit_design=self.xunit_design,
        xunit_kernel=self.xunit_kernel,
        depthwise_impl=self.depthwise_impl,
        dropout_rate=self.dropout_rate,
        remat=self.remat,
        dtype=self.dtype,
        bn_axis_name=self.bn_axis_name,
    )
    self.head = nn.Dense(self.num_classes, dtype=self.dtype)

  def features(self, x, train: bool = False):
    return self.backbone(x, train)

  def __call__(self, x, train: bool = False):
    x = self.features(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return self.head(x).astype(jnp.float32)
