"""PyTorch versions of dxnet_jax's networks, for speed comparisons only.

Each mirrors the module of the same role in `dxnet_jax.models` layer for layer (same widths, same
biases, PyTorch's default BatchNorm with momentum 0.1, i.e. flax's 0.9), so that parameter counts
are equal; `benchmarks/train_step.py` asserts that for every net it times. Initialisation and
exact padding of strided convolutions differ (irrelevant to speed). torch is an optional
benchmark dependency (`pip install torch==2.13.0`, a CPU build).
"""

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def conv(cin: int, cout: int, k: int, bias: bool = False, stride: int = 1) -> nn.Conv2d:
  return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias)


class XUnit(nn.Module):
  """x * sigmoid(BN(dwconv_kxk(ReLU(BN(conv1x1(x)))))), both convolutions with bias."""

  def __init__(self, channels: int, kernel_size: int = 9, batch_norm: bool = True):
    super().__init__()
    norm = (lambda: nn.BatchNorm2d(channels)) if batch_norm else nn.Identity
    self.gate = nn.Sequential(
        conv(channels, channels, 1, bias=True),
        norm(),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels),
        norm(),
        nn.Sigmoid(),
    )

  def forward(self, x):
    return x * self.gate(x)


def _norm_relu(channels: int, batch_norm: bool) -> nn.Module:
  if batch_norm:
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
  return nn.ReLU()


class DenseLayer(nn.Module):
  """BN-ReLU-Conv1x1(bw*k)-BN-ReLU-Conv3x3(k)[-xUnit], concatenated to the input."""

  def __init__(self, cin, growth_rate, bottleneck_width, xunit, xunit_kernel, batch_norm):
    super().__init__()
    width = bottleneck_width * growth_rate
    layers = [
        _norm_relu(cin, batch_norm),
        conv(cin, width, 1, bias=not batch_norm),
        _norm_relu(width, batch_norm),
        conv(width, growth_rate, 3, bias=not batch_norm),
    ]
    if xunit:
      layers.append(XUnit(growth_rate, xunit_kernel, batch_norm))
    self.body = nn.Sequential(*layers)

  def forward(self, x):
    return torch.cat([x, self.body(x)], 1)


def dense_trunk(
    cin: int,
    blocks: Sequence[int],
    growth_rate: int,
    *,
    compression=0.5,
    bottleneck_width=4,
    xunit=False,
    xunit_kernel=9,
    batch_norm=True,
    pool=True,
):
  """Dense blocks joined by BN-ReLU-Conv1x1[-AvgPool] transitions; returns (module, channels)."""
  layers, c = [], cin
  for i, n in enumerate(blocks):
    for _ in range(n):
      layers.append(DenseLayer(c, growth_rate, bottleneck_width, xunit, xunit_kernel, batch_norm))
      c += growth_rate
    if i < len(blocks) - 1:
      out = int(c * compression)
      layers += [_norm_relu(c, batch_norm), conv(c, out, 1, bias=not batch_norm)]
      if pool:
        layers.append(nn.AvgPool2d(2))
      c = out
  return nn.Sequential(*layers), c


class DenseNetClassifier(nn.Module):
  """DenseNet-BC / DxNet classifier, CIFAR (3x3 stem) or ImageNet (7x7/2 stem + max-pool) form."""

  def __init__(self, num_classes, blocks, growth_rate, stem='cifar', xunit=False, xunit_kernel=9):
    super().__init__()
    c = 2 * growth_rate
    if stem == 'cifar':
      stem_layers = [conv(3, c, 3)]
    else:
      stem_layers = [
          conv(3, c, 7, stride=2),
          nn.BatchNorm2d(c),
          nn.ReLU(inplace=True),
          nn.MaxPool2d(3, 2, padding=1),
      ]
    if xunit:
      stem_layers.append(XUnit(c, xunit_kernel))
    trunk, c = dense_trunk(c, blocks, growth_rate, xunit=xunit, xunit_kernel=xunit_kernel)
    self.features = nn.Sequential(*stem_layers, trunk, nn.BatchNorm2d(c), nn.ReLU(inplace=True))
    self.head = nn.Linear(c, num_classes)

  def forward(self, x):
    return self.head(self.features(x).mean((2, 3)))


def restoration_trunk(channels, blocks, growth_rate, xunit, xunit_kernel, batch_norm):
  """The restoration nets' 64-channel stem (+xUnit) and dense trunk with 2k bottlenecks, no
  pooling; returns (module, channels)."""
  stem = [conv(channels, 64, 3, bias=True)]
  if xunit:
    stem.append(XUnit(64, xunit_kernel, batch_norm=batch_norm))
  trunk, c = dense_trunk(
      64,
      blocks,
      growth_rate,
      bottleneck_width=2,
      xunit=xunit,
      xunit_kernel=xunit_kernel,
      batch_norm=batch_norm,
      pool=False,
  )
  return nn.Sequential(*stem, trunk), c


class DenseDenoiser(nn.Module):
  """Residual-learning dense denoiser: 64-channel stem (+xUnit), 2k bottleneck, no pooling."""

  def __init__(self, channels=1, blocks=(4, 4, 4), growth_rate=16, xunit=True, xunit_kernel=9):
    super().__init__()
    trunk, c = restoration_trunk(
        channels, blocks, growth_rate, xunit, xunit_kernel, batch_norm=True
    )
    layers = [trunk, nn.BatchNorm2d(c), nn.ReLU(inplace=True), conv(c, channels, 3, bias=True)]
    self.noise = nn.Sequential(*layers)

  def forward(self, x):
    return x - self.noise(x)


class DenseSuperResolution(nn.Module):
  """x4 SR dense net without BatchNorm, narrow pixel-shuffle tail, bicubic global residual."""

  def __init__(
      self,
      channels=3,
      blocks=(4, 4, 4, 6, 8, 8),
      growth_rate=16,
      xunit=True,
      xunit_kernel=9,
      scale=4,
      tail=64,
  ):
    super().__init__()
    self.scale = scale
    trunk, c = restoration_trunk(
        channels, blocks, growth_rate, xunit, xunit_kernel, batch_norm=False
    )
    layers = [trunk, nn.ReLU(), conv(c, tail, 3, bias=True)]
    for _ in range(scale.bit_length() - 1):
      layers += [conv(tail, 4 * tail, 3, bias=True), nn.PixelShuffle(2), nn.ReLU()]
    layers.append(conv(tail, channels, 3, bias=True))
    self.residual = nn.Sequential(*layers)

  def forward(self, x):
    up = F.interpolate(x, scale_factor=self.scale, mode='bicubic', align_corners=False)
    return up + self.residual(x)


# The nets of dxnet_jax's registry that the benchmarks compare, by registry name.
NETS = {
    'densenet_bc_k12_16': lambda: DenseNetClassifier(10, (16, 16, 16), 12),
    'dxnet_k12_12': lambda: DenseNetClassifier(10, (12, 12, 12), 12, xunit=True),
    'dxnet_denoise_444': lambda: DenseDenoiser(1, (4, 4, 4), 16, xunit=True),
    'dxnet16_sr': lambda: DenseSuperResolution(3, (4, 4, 4, 6, 8, 8), 16, xunit=True),
    'dxnet105': lambda: DenseNetClassifier(1000, (6, 12, 20, 12), 32, stem='imagenet', xunit=True),
    'densenet121': lambda: DenseNetClassifier(1000, (6, 12, 24, 16), 32, stem='imagenet'),
}


def count_params(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())
