"""The authors' released xDnCNN checkpoints, run in PyTorch and converted to flax, agree.

The PyTorch net below is written from the architecture that ../shared/data/README.md describes
(8 cells, BN -> conv3x3 -> Gaussian xUnit, residual output); its module names are the
checkpoints' keys, so `load_state_dict(strict=True)` checks it against the files. The converted
model must give the same clean estimates on real Set12 images under every `kernels` setting, and
the converter must refuse what is not such a checkpoint without leaving a folder behind.
"""

import functools
import json
import pathlib
import sys

import jax
import numpy as np
from PIL import Image
import pytest
import torch
from torch import nn

from dxnet_jax import convert, models, pretrained
from dxnet_jax.data import paths

CHECKPOINTS = paths.data_root() / 'authors_xunit'
SIGMAS = (25, 50)
TOLERANCE = 1e-4  # max abs difference of the clean estimates, images in [0, 1]


class GaussianGate(nn.Module):

  def forward(self, x):
    return torch.exp(-x * x)


class Cell(nn.Module):
  """conv3x3 (bias), then x * exp(-BN(dwconv9x9(ReLU(BN(x))))^2) with a biased depthwise conv."""

  def __init__(self, in_channels, channels=64):
    super().__init__()
    self.features = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1))
    self.module = nn.Sequential(
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.Conv2d(channels, channels, 9, padding=4, groups=channels),
        nn.BatchNorm2d(channels),
        GaussianGate(),
    )

  def forward(self, x):
    y = self.features(x)
    return y * self.module(y)


class AuthorsXDnCNN(nn.Module):
  """md1: a cell on the image; md2-md8: BatchNorm then a cell; joints: conv3x3 to the noise."""

  def __init__(self, channels=64):
    super().__init__()
    self.md1 = nn.Sequential(Cell(1, channels))
    for i in range(2, 9):
      setattr(self, f'md{i}', nn.Sequential(nn.BatchNorm2d(channels), Cell(channels, channels)))
    self.joints = nn.Conv2d(channels, 1, 3, padding=1)

  def forward(self, x):
    for i in range(1, 9):
      x = getattr(self, f'md{i}')(x)
    return self.joints(x)


def checkpoint(sigma: int) -> pathlib.Path:
  return CHECKPOINTS / f'xdncnn_res_f64k3k9_s{sigma}.pkl'


def noisy_set12(sigma: int):
  """{name: (clean, noisy)} of Set12's images in [0, 1], [H, W] float32, the noise not clipped."""
  rng = np.random.default_rng(sigma)
  images = {}
  for path in sorted((paths.data_root() / 'Set12').glob('*.png')):
    clean = np.asarray(Image.open(path).convert('L'), np.float32) / 255.0
    images[path.name] = clean, clean + rng.normal(0.0, sigma / 255.0, clean.shape).astype(
        np.float32
    )
  return images


@functools.lru_cache(maxsize=None)
def authors_net(sigma: int) -> AuthorsXDnCNN:
  net = AuthorsXDnCNN()
  net.load_state_dict(torch.load(checkpoint(sigma), map_location='cpu', weights_only=True))
  return net.eval()


def torch_estimate(sigma: int, noisy: np.ndarray) -> np.ndarray:
  """The authors' PyTorch net's clean estimates of noisy [N, H, W] images."""
  with torch.no_grad():
    x = torch.from_numpy(np.ascontiguousarray(noisy))[:, None]
    return (x - authors_net(sigma)(x))[:, 0].numpy()


@functools.lru_cache(maxsize=None)
def cases(sigma: int, kernels: str):
  """[(clean, noisy, the PyTorch net's estimate)], each [N, H, W]: the CROP px centre crops of all
  twelve images as one batch, and for 'cpu' also the WHOLE image of this noise level."""
  images = noisy_set12(sigma)
  batches = [tuple(np.stack([crop(a, CROP) for a in pair]) for pair in zip(*images.values()))]
  if kernels == 'cpu':
    batches += [tuple(a[None] for a in images[name]) for name in WHOLE[sigma]]
  return [(clean, noisy, torch_estimate(sigma, noisy)) for clean, noisy in batches]


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  root = tmp_path_factory.mktemp('converted')
  for sigma in SIGMAS:
    assert convert.main([str(checkpoint(sigma)), '--sigma', str(sigma), '--out', str(root)]) == 0
  return root


def psnr(a, b):
  return 10 * np.log10(1.0 / np.mean(np.square(np.clip(a, 0, 1) - b)))


# Every `kernels` setting on 64 px centre crops of all of Set12, in one batch; 'cpu' (what 'auto'
# runs on a CPU) also on one whole image per noise level, one of each of Set12's sizes (256 px at
# sigma 25, 512 px at sigma 50). The whole of Set12 in both nets took over a minute per checkpoint.
KERNELS = ('cpu', 'gpu', 'xla')
CROP = 64
WHOLE = {25: ('01.png',), 50: ('11.png',)}


def crop(image, size):
  top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
  return image[top : top + size, left : left + size]


@pytest.mark.slow
@pytest.mark.parametrize('sigma', SIGMAS)
@pytest.mark.parametrize('kernels', KERNELS)
def test_the_converted_xdncnn_computes_what_the_authors_pytorch_net_computes(
    converted, monkeypatch, sigma, kernels
):
  monkeypatch.setenv(pretrained.ENV_VAR, str(converted))
  name = f'xdncnn_res_f64k3k9_s{sigma}'
  model, variables, config = pretrained.load(name, kernels=kernels)
  assert config.model.name == 'xdncnn_authors' and config.data.sigma == sigma
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  gains = []
  for clean, noisy, expected in cases(sigma, kernels):
    actual = np.asarray(apply(variables, noisy[..., None]))[..., 0]
    np.testing.assert_allclose(actual, expected, atol=TOLERANCE, rtol=0)
    gains += [psnr(a, c) - psnr(n, c) for a, n, c in zip(actual, noisy, clean)]
  # The residual's sign and the weights are right: the net denoises every image.
  assert len(gains) == 12 + (kernels == 'cpu') and min(gains) > 3.0


def test_the_port_is_the_authors_network():
  assert models.parameter_count('xdncnn_authors') == 304_641
  net = AuthorsXDnCNN()
  assert sum(p.numel() for p in net.parameters()) == 304_641
  state = torch.load(checkpoint(25), map_location='cpu', weights_only=True)
  net.load_state_dict(state, strict=True)  # the test's net has exactly the file's keys
  assert len(convert.xdncnn_authors_keys()) == len(state) == 126


def test_the_converted_folder_records_its_source_and_loads_as_float32(converted):
  info = json.loads((converted / 'xdncnn_res_f64k3k9_s25' / pretrained.MANIFEST).read_text())
  assert info['model'] == 'xdncnn_authors' and info['parameters'] == 304_641
  assert info['converted_from']['file'] == 'xdncnn_res_f64k3k9_s25.pkl'
  assert len(info['converted_from']['sha256']) == 64 and info['weights_dtype'] == 'float32'
  card = (converted / 'xdncnn_res_f64k3k9_s25' / pretrained.CARD).read_text()
  assert 'trained by its authors' in card


def _refused(tmp_path, capsys, source, match):
  out = tmp_path / 'out'
  assert convert.main([str(source), '--sigma', '25', '--out', str(out)]) == 1
  error = capsys.readouterr().err
  assert len(error.strip().splitlines()) == 1, error
  assert match in error, error
  assert not (out / pathlib.Path(source).stem).exists()
  assert not out.exists() or not any(out.iterdir())


def test_a_missing_file_is_refused(tmp_path, capsys):
  _refused(tmp_path, capsys, tmp_path / 'nothere.pkl', 'No checkpoint file')


def test_a_truncated_file_is_refused(tmp_path, capsys):
  truncated = tmp_path / 'truncated.pkl'
  truncated.write_bytes(checkpoint(25).read_bytes()[:600_000])
  _refused(tmp_path, capsys, truncated, 'not a readable PyTorch checkpoint')


def test_another_networks_checkpoint_is_refused(tmp_path, capsys):
  dncnn = nn.Sequential(nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 1, 3, padding=1))
  other = tmp_path / 'dncnn.pth'
  torch.save(dncnn.state_dict(), other)
  _refused(tmp_path, capsys, other, "unexpected key '0.weight'")


def test_a_narrower_xdncnn_is_refused_by_the_first_shape_that_does_not_fit(tmp_path, capsys):
  narrow = tmp_path / 'narrow.pth'
  torch.save(AuthorsXDnCNN(channels=32).state_dict(), narrow)
  _refused(tmp_path, capsys, narrow, "'md1.0.features.0.weight' has shape (32, 1, 3, 3)")


def test_a_checkpoint_missing_keys_is_refused(tmp_path, capsys):
  state = torch.load(checkpoint(25), map_location='cpu', weights_only=True)
  del state['joints.bias']
  partial = tmp_path / 'partial.pth'
  torch.save(state, partial)
  _refused(tmp_path, capsys, partial, "key 'joints.bias' of xdncnn_authors is missing")


def test_an_existing_folder_is_never_overwritten(converted, capsys):
  weights = converted / 'xdncnn_res_f64k3k9_s25' / pretrained.WEIGHTS
  before = weights.read_bytes()
  argv = [str(checkpoint(25)), '--sigma', '25', '--out', str(converted)]
  assert convert.main(argv) == 1
  assert 'already exists' in capsys.readouterr().err
  assert weights.read_bytes() == before


def test_without_torch_the_error_names_the_extra(monkeypatch, tmp_path, capsys):
  monkeypatch.setitem(sys.modules, 'torch', None)
  _refused(tmp_path, capsys, checkpoint(25), 'pip install "dxnet_jax[convert]"')
