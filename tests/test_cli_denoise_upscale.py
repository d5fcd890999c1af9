"""`python -m dxnet_jax.denoise` / `upscale` / `evaluate --pretrained` on small real crops."""

import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dxnet_jax import denoise
from dxnet_jax import evaluate
from dxnet_jax import pretrained
from dxnet_jax import upscale
from dxnet_jax.data import paths


def _model(**want):
  for name in pretrained.available():
    info = pretrained.manifest(name)
    if all(info[k] == v for k, v in want.items()):
      return name
  pytest.skip(f'no shipped model with {want}')


@pytest.fixture(scope='module')
def images(tmp_path_factory):
  root = tmp_path_factory.mktemp('images')
  data = paths.data_root()
  Image.open(data / 'Set12/01.png').crop((64, 64, 128, 128)).save(root / 'gray.png')
  Image.open(data / 'Set5/img_002_SRF_4_HR.png').crop((40, 40, 104, 104)).save(root / 'hr.png')
  Image.open(data / 'Set5/img_002_SRF_4_HR.png').crop((40, 40, 56, 60)).save(root / 'lr.png')
  (root / 'broken.png').write_bytes(b'\x89PNG not really')
  return root


def test_denoise_writes_pngs_and_beats_the_noisy_input(images, tmp_path, capsys):
  name = _model(model='dxnet_denoise_444')
  assert (
      denoise.main(
          [
              '--model',
              name,
              '--add-noise',
              '50',
              '--seed',
              '1',
              str(images / 'gray.png'),
              '--out',
              str(tmp_path),
          ]
      )
      == 0
  )
  line = capsys.readouterr().out
  noisy, out = map(float, re.search(r'noisy ([\d.]+) dB -> denoised ([\d.]+) dB', line).groups())
  assert out > noisy + 2.0
  for suffix in ('denoised', 'noisy'):
    image = Image.open(tmp_path / f'gray_{suffix}.png')
    assert image.mode == 'L' and image.size == (64, 64)


def test_gray_denoiser_keeps_an_rgb_image_rgb(images, tmp_path):
  name = _model(model='dxnet_denoise_444')
  assert denoise.main(['--model', name, str(images / 'lr.png'), '--out', str(tmp_path)]) == 0
  image = Image.open(tmp_path / 'lr_denoised.png')
  assert image.mode == 'RGB' and image.size == (16, 20)


def test_upscale_x4_and_downscale_report(images, tmp_path, capsys):
  name = _model(model='dxnet16_sr')
  assert upscale.main(['--model', name, str(images / 'lr.png'), '--out', str(tmp_path)]) == 0
  assert Image.open(tmp_path / 'lr_x4.png').size == (64, 80)
  assert (
      upscale.main(['--model', name, '--downscale', str(images / 'hr.png'), '--out', str(tmp_path)])
      == 0
  )
  bicubic, model = map(
      float, re.search(r'bicubic ([\d.]+) dB, model ([\d.]+) dB', capsys.readouterr().out).groups()
  )
  assert model > bicubic - 1.0 and np.isfinite(model)
  assert Image.open(tmp_path / 'hr_x4.png').size == (64, 64)
  assert Image.open(tmp_path / 'hr_lr.png').size == (16, 16)


def test_clear_errors(images, tmp_path, capsys):
  den = _model(model='dxnet_denoise_444')
  assert denoise.main(['--model', den, str(images / 'broken.png'), '--out', str(tmp_path)]) == 2
  assert 'cannot decode image' in capsys.readouterr().err
  assert denoise.main(['--model', den, str(tmp_path / 'missing.png'), '--out', str(tmp_path)]) == 2
  assert 'no such file' in capsys.readouterr().err
  assert upscale.main(['--model', den, str(images / 'lr.png'), '--out', str(tmp_path)]) == 2
  assert 'not a super_resolution one' in capsys.readouterr().err
  assert denoise.main(['--model', 'nope', str(images / 'gray.png'), '--out', str(tmp_path)]) == 2
  assert 'Unknown pretrained model' in capsys.readouterr().err
  assert not list(tmp_path.iterdir())


def test_evaluate_pretrained_on_a_folder(images, tmp_path, capsys):
  name = _model(model='dxnet_denoise_444')
  folder = tmp_path / 'set'
  folder.mkdir()
  Image.open(images / 'gray.png').save(folder / 'a.png')
  assert evaluate.main(['--pretrained', name, '--set', str(folder), '--json']) == 0
  assert f'"method": "{name}"' in capsys.readouterr().out


def test_module_entry_point_runs():
  out = subprocess.run(
      [sys.executable, '-m', 'dxnet_jax.denoise', '--help'],
      capture_output=True,
      text=True,
      check=True,
  ).stdout
  assert '--add-noise' in out
