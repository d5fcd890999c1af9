"""Image-restoration nets: dense denoisers, x4 super-resolution nets, Conv+xUnit feed-forward nets.

Readings of the paper (each checked against its parameter counts; see README "Models"):

* Restoration dense layers follow the authors' restoration code: a 64-channel stem and a 2k
  bottleneck (the classifiers use DenseNet-BC's 4k). With a 4k bottleneck the gray denoising
  DxNet 4-4-4 would have 204K parameters, far above the paper's "a quarter of DnCNN's 556K".
* Denoiser: k=16, r=0.5, no pooling and no classifier. Conv3x3 stem to 64 channels (followed by
  an xUnit in DxNet), the dense trunk, final BN-ReLU and a Conv3x3 back to the image channels.
  Residual learning: the trunk predicts the noise, which is subtracted from the input, so the
  module returns the clean estimate. Gray DxNet 4-4-4 has 140,353 parameters.
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
"""

from typing import Sequence, Union

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

  def stem_and_trunk(self, x, parts: Parts, train: bool):
    trunk = trunk_of(self, parts, pool=False)  # checks the description
    y = parts.conv(self.stem_features, (3, 3), use_bias=True, name='stem_conv')(x)
    if self.activation == 'xunit':
      y = parts.xunit(name='stem_xunit')(y, train)
    return trunk(y, train)


class DenseDenoiser(DenseRestorationNet):
  """DxNet / DenseNet Gaussian denoiser with residual learning; returns the clean estimate."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    parts = self.parts
    y = self.stem_and_trunk(x.astype(parts.dtype), parts, train)
    y = parts.norm_relu(use_running_average=not train, name='final_bn')(y)
    noise = parts.conv(
        x.shape[-1], (3, 3), use_bias=True, kernel_init=nn.initializers.zeros, name='output_conv'
    )(y)
    return x - noise.astype(x.dtype)


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
  module returns the clean estimate.
  """

  parts: Parts
  depth: int = 8
  features: int = 64
  activation: str = 'xunit'

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.depth < 2:
      raise ValueError(
          f'depth must be at least 2 (input and output convolutions), got {self.depth}.'
      )
    if self.activation not in ('relu', 'xunit'):
      raise ValueError(f"activation must be 'relu' or 'xunit', got {self.activation!r}.")
    parts = self.parts
    y = x.astype(parts.dtype)
    for i in range(self.depth - 1):
      y = parts.conv(self.features, (3, 3), use_bias=(i == 0), name=f'conv{i}')(y)
      if self.activation == 'xunit':
        if i > 0:
          y = parts.norm(use_running_average=not train, name=f'bn{i}')(y)
        y = parts.xunit(name=f'xunit{i}')(y, train)
      elif i > 0:
        y = parts.norm_relu(use_running_average=not train, name=f'bn{i}')(y)
      else:
        y = nn.relu(y)
    noise = parts.conv(
        x.shape[-1],
        (3, 3),
        use_bias=True,
        kernel_init=nn.initializers.zeros,
        name=f'conv{self.depth - 1}',
    )(y)
    return x - noise.astype(x.dtype)
