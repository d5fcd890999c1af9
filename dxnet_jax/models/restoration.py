"""Image-restoration nets: dense denoisers, x4 super-resolution nets, Conv+xUnit feed-forward nets.

Readings of the paper (each checked against its parameter counts; see README "Models"):

* Restoration dense layers follow the authors' restoration code: a 64-channel stem and a 2k
  bottleneck (the classifiers use DenseNet-BC's 4k). With a 4k bottleneck the gray denoising
  DxNet 4-4-4 would have 204K parameters, far above the paper's "a quarter of DnCNN's 556K".
* Denoiser: k=16, r=0.5, no pooling and no classifier. Conv3x3 stem to 64 channels (followed by
  an xUnit in DxNet), the dense trunk, final BN-ReLU and a Conv3x3 back to the image channels.
  Residual learning: the trunk predicts the noise, which is subtracted from the input, so the
  module returns the clean estimate. Gray DxNet 4-4-4 has 140,353 parameters.
* `layout='authors'`: the DxNet denoiser of the authors' later restoration code
  (kligvasser/xUnit, `denoising/models/xdense.py`), which reads the paper differently: every
  xUnit (7x7 there: the registry entry sets `xunit_kernel=7`) is part of an x-module, a biased
  Conv3x3, the xUnit and a BatchNorm, in the stem and in every dense layer; no final BN-ReLU, and
  a Conv5x5 output convolution. Gray 4-4-4 has 134,657 parameters, as their code counts.
* `LevelDenoiser`: the same denoiser conditioned on the noise level as FFDNet is: the input
  carries an extra channel, the noise-level map sigma/255, and the net predicts the noise of the
  image channels, so one net serves every sigma it was trained for (blind use: sigma estimated,
  `dxnet_jax.noise_level`). Trained with the map as the input's last channel (the data pipeline
  appends it, `config.data.level_map`); `at_level(model, sigma)` gives the same net taking the
  bare image and filling the map itself, for evaluation and tiled inference. `unshuffle=True`
  is FFDNet's front end: the image pixel-unshuffled x2 (4C channels at half resolution, the
  map averaged over 2x2), pixel-shuffled back. Off in the registry: two 250-step gray trainings
  (sigma ~ U[0, 75], same batches) reached 27.87 dB on Set12 at sigma 25 without it and 25.76
  dB with it (docs/models.md).
* Super-resolution x4: no BatchNorm (so every convolution has a bias), L1 loss. Conv3x3 stem to
  64 channels (+ xUnit), dense trunk without pooling, then a *narrow* upsampling tail:
  Conv3x3 to `tail_features` (64), two stages of Conv3x3(4*64) + pixel-shuffle x2 (+ ReLU), and a
  Conv3x3 to the image channels. A global residual adds the bicubic upscaling of the input. The
  authors' public code uses a full-width pixel-shuffle tail (4.8M parameters), which cannot give
  the paper's 0.86M; this narrow tail gives DxNet16 (k16, 4-4-4-6-8-8) 843,131.
* The last convolution of every restoration net starts at zero, so an untrained net returns its
  input (denoisers) or the bicubic upscaling (SR) and training starts from that baseline.
* Feed-forward Conv+xUnit nets (xDnCNN, paper Fig. 4): `depth` Conv3x3 layers of `features`
  channels, each followed by BN and an xUnit of either design (or ReLU), residual learning.
  `cell_order='bn_conv'` is the cell of the authors' released xDnCNN (the 2018 xUnit paper's):
  BN, a biased Conv3x3, the Gaussian xUnit; with 9 layers of 64 channels it has their 304,641
  parameters and loads their trained weights (`dxnet_jax.convert`).
"""

import functools
from typing import Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from dxnet_jax.layers import Parts
from dxnet_jax.models.densenet import trunk_of


class DenseRestorationNet(nn.Module):
  """What the dense restoration nets share: a Conv3x3 stem (+ xUnit in a DxNet) and a dense
  trunk without pooling, k=16, a 2k bottleneck."""

  parts: Parts
  blocks: Sequence[int] = (4, 4, 4)
  growth_rate: int = 16
  stem_features: int = 64
  compression: float = 0.5
  bottleneck_width: int = 2
  activation: str = 'xunit'
  remat: Union[bool, str] = False

  def stem_and_trunk(self, x, parts: Parts, train: bool, x_module_norm: bool = False):
    """The stem and trunk; `x_module_norm`: a BatchNorm after every xUnit (the authors' code)."""
    trunk = trunk_of(self, parts, pool=False, x_module_norm=x_module_norm)  # checks it
    y = parts.conv(self.stem_features, (3, 3), use_bias=True, name='stem_conv')(x)
    if self.activation == 'xunit':
      y = parts.xunit(name='stem_xunit')(y, train)
    if x_module_norm:
      y = parts.norm(use_running_average=not train, name='stem_bn')(y)
    return trunk(y, train)


LAYOUTS = ('paper', 'authors')
CELL_ORDERS = ('conv_bn', 'bn_conv')


class DenseDenoiser(DenseRestorationNet):
  """DxNet / DenseNet Gaussian denoiser with residual learning; returns the clean estimate.

  `layout`: 'paper' (our reading) or 'authors' (their restoration code's; module docstring).
  """

  layout: str = 'paper'

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.layout not in LAYOUTS:
      raise ValueError(f'layout must be one of {LAYOUTS}, got {self.layout!r}.')
    parts, authors = self.parts, self.layout == 'authors'
    y = self.stem_and_trunk(x.astype(parts.dtype), parts, train, x_module_norm=authors)
    if not authors:
      y = parts.norm_relu(use_running_average=not train, name='final_bn')(y)
    size = (5, 5) if authors else (3, 3)
    zeros = nn.initializers.zeros
    noise = parts.conv(x.shape[-1], size, use_bias=True, kernel_init=zeros, name='output_conv')(y)
    return x - noise.astype(x.dtype)


class LevelDenoiser(DenseRestorationNet):
  """DxNet denoiser conditioned on the noise level (FFDNet's noise-level map); see the module
  docstring. Returns the clean estimate of the image channels.

  `level`: None, the input's last channel is the map (training); a number (sigma, 0-255 scale),
  the input is the bare image and the map is filled with level/255.
  """

  unshuffle: bool = False
  level: Optional[float] = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    parts = self.parts
    image, level_map = split_level_map(x, self.level)
    _, height, width, channels = image.shape
    y = jnp.concatenate([image, level_map], axis=-1).astype(parts.dtype)
    if self.unshuffle:
      even = lambda a: jnp.pad(a, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), 'edge')
      level_map = pixel_unshuffle(even(level_map), 2)
      level_map = jnp.mean(level_map, axis=-1, keepdims=True)
      y = jnp.concatenate([pixel_unshuffle(even(image), 2), level_map], axis=-1)
      y = y.astype(parts.dtype)
    y = self.stem_and_trunk(y, parts, train)
    y = parts.norm_relu(use_running_average=not train, name='final_bn')(y)
    outputs = channels * 4 if self.unshuffle else channels
    zeros = nn.initializers.zeros
    noise = parts.conv(outputs, (3, 3), use_bias=True, kernel_init=zeros, name='output_conv')(y)
    if self.unshuffle:
      noise = pixel_shuffle(noise, 2)[:, :height, :width]
    return image - noise.astype(image.dtype)


def split_level_map(x, level: Optional[float]):
  """(image, noise-level map [N, H, W, 1]) of a `LevelDenoiser` input."""
  if level is None:
    if x.shape[-1] < 2:
      raise ValueError(
          f'a noise-level-conditioned denoiser takes the image plus its noise-level map (at '
          f'least 2 channels), got {x.shape[-1]}; give the level with at_level(model, sigma)'
      )
    return x[..., :-1], x[..., -1:]
  return x, jnp.full(x.shape[:-1] + (1,), level / 255.0, x.dtype)


def at_level(model: nn.Module, sigma: Optional[float]) -> nn.Module:
  """`model` taking bare images at noise level `sigma` (0-255): a noise-level-conditioned
  denoiser with its map filled in (`sigma=None`: taking the map as its last input channel);
  any other model unchanged (same variables either way)."""
  if isinstance(model, LevelDenoiser):
    return model.clone(level=None if sigma is None else float(sigma))
  return model


def is_level_conditioned(model: nn.Module) -> bool:
  return isinstance(model, LevelDenoiser)


def pixel_unshuffle(x, factor: int):
  """Space-to-depth, the inverse of `pixel_shuffle`: [N, H*f, W*f, C] -> [N, H, W, C*f*f]."""
  n, h, w, c = x.shape
  x = x.reshape(n, h // factor, factor, w // factor, factor, c)
  x = x.transpose(0, 1, 3, 5, 2, 4)
  return x.reshape(n, h // factor, w // factor, c * factor * factor)


def pixel_shuffle(x, factor: int):
  """Depth-to-space: [N, H, W, C*f*f] -> [N, H*f, W*f, C] (PyTorch's PixelShuffle order)."""
  n, h, w, c = x.shape
  out = c // (factor * factor)
  x = x.reshape(n, h, w, out, factor, factor)
  x = x.transpose(0, 1, 4, 2, 5, 3)
  return x.reshape(n, h * factor, w * factor, out)


class DenseSuperResolution(DenseRestorationNet):
  """x`scale` super-resolution DxNet / DenseNet without BatchNorm, with a narrow tail."""

  blocks: Sequence[int] = (4, 4, 4, 6, 8, 8)
  scale: int = 4
  tail_features: int = 64

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.scale not in (2, 4, 8):
      raise ValueError(f'scale must be 2, 4 or 8 (stages of x2 pixel shuffle), got {self.scale}.')
    parts = self.parts.without_norm()
    n, h, w, channels = x.shape
    y = self.stem_and_trunk(x.astype(parts.dtype), parts, train)
    y = parts.conv(self.tail_features, (3, 3), name='tail_conv')(nn.relu(y))
    for stage in range(self.scale.bit_length() - 1):
      y = parts.conv(4 * self.tail_features, (3, 3), name=f'upsample{stage}')(y)
      y = nn.relu(pixel_shuffle(y, 2))
    zeros = nn.initializers.zeros
    residual = parts.conv(channels, (3, 3), kernel_init=zeros, name='output_conv')(y)
    upscaled = jax.image.resize(x, (n, h * self.scale, w * self.scale, channels), 'bicubic')
    return upscaled + residual.astype(x.dtype)


class FeedForwardXNet(nn.Module):
  """Conv3x3 layers with an activation after each (xUnit of either design, or ReLU).

  The paper's xUnit-design comparison (Fig. 4) and xDnCNN: residual learning for denoising, the
  module returns the clean estimate. `cell_order` places each layer's BatchNorm: 'conv_bn'
  (ours: Conv3x3 without bias, BatchNorm, activation) or 'bn_conv' (the authors' released
  xDnCNN: BatchNorm, Conv3x3 with bias, activation); the first layer has none.
  """

  parts: Parts
  depth: int = 8
  features: int = 64
  activation: str = 'xunit'
  cell_order: str = 'conv_bn'

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.depth < 2:
      raise ValueError(
          f'depth must be at least 2 (input and output convolutions), got {self.depth}.'
      )
    if self.activation not in ('relu', 'xunit'):
      raise ValueError(f"activation must be 'relu' or 'xunit', got {self.activation!r}.")
    if self.cell_order not in CELL_ORDERS:
      raise ValueError(f'cell_order must be one of {CELL_ORDERS}, got {self.cell_order!r}.')
    y = x.astype(self.parts.dtype)
    for i in range(self.depth - 1):
      y = self.cell(y, i, train)
    noise = self.parts.conv(
        x.shape[-1],
        (3, 3),
        use_bias=True,
        kernel_init=nn.initializers.zeros,
        name=f'conv{self.depth - 1}',
    )(y)
    return x - noise.astype(x.dtype)

  def cell(self, y, i: int, train: bool):
    """Layer `i`: its Conv3x3, BatchNorm (none in the first) and activation, in `cell_order`."""
    parts, xunit = self.parts, self.activation == 'xunit'
    norm = functools.partial(parts.norm, use_running_average=not train, name=f'bn{i}')
    if self.cell_order == 'bn_conv':
      y = norm()(y) if i > 0 else y
      y = parts.conv(self.features, (3, 3), use_bias=True, name=f'conv{i}')(y)
      return parts.xunit(name=f'xunit{i}')(y, train) if xunit else nn.relu(y)
    y = parts.conv(self.features, (3, 3), use_bias=(i == 0), name=f'conv{i}')(y)
    if xunit:
      y = norm()(y) if i > 0 else y
      return parts.xunit(name=f'xunit{i}')(y, train)
    if i > 0:
      return parts.norm_relu(use_running_average=not train, name=f'bn{i}')(y)
    return nn.relu(y)
