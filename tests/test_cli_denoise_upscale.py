"""`python -m dxnet_jax.denoise` / `upscale` / `evaluate --pretrained` on small real crops."""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from dxnet_jax import denoise
from dxnet_jax import evaluate
from dxnet_jax import image_files
from dxnet_jax import pretrained
from dxnet_jax import upscale
from dxnet_jax.data import eval_sets
from dxnet_jax.data import images as images_lib
from dxnet_jax.data import paths

DENOISER = 'denoise_dxnet_444_s50_h200'
SR = 'sr_dxnet16_x4_budget'


def _shipped(name):
  assert name in pretrained.available(), f'{name} is not shipped'  # the package ships it
  return name


@pytest.fixture(scope='module')
def images(tmp_path_factory):
  root = tmp_path_factory.mktemp('images')
  data = paths.data_root()
  Image.open(data / 'Set12/01.png').crop((64, 64, 128, 128)).save(root / 'gray.png')
  Image.open(data / 'Set5/img_002_SRF_4_HR.png').crop((40, 40, 104, 104)).save(root / 'hr.png')
  Image.open(data / 'Set5/img_002_SRF_4_HR.png').crop((40, 40, 56, 60)).save(root / 'lr.png')
  (root / 'broken.png').write_bytes(b'\x89PNG not really')
  return root


def _folder(tmp_path, images, names, name='in'):
  folder = tmp_path / name
  folder.mkdir()
  for n in names:
    shutil.copy(images / n, folder / n)
  return folder


def test_denoise_writes_pngs_and_beats_the_noisy_input(images, tmp_path, capsys):
  argv = ['--model', _shipped(DENOISER), '--add-noise', '50', '--seed', '1']
  assert denoise.main(argv + [str(images / 'gray.png'), '--out', str(tmp_path)]) == 0
  captured = capsys.readouterr()
  noisy, out = map(
      float, re.search(r'noisy ([\d.]+) dB -> denoised ([\d.]+) dB', captured.out).groups()
  )
  # Measured: 16.51 -> 27.02 dB (+10.5 dB; DnCNN gains ~13 dB at sigma 50 on Set12); 1 dB margin.
  assert out > noisy + 9.5, (noisy, out)
  assert re.search(r'\[1/1\] .*gray.png -> .*gray_denoised.png \([\d.]+ s\)', captured.err)
  for suffix in ('denoised', 'noisy'):
    image = Image.open(tmp_path / f'gray_{suffix}.png')
    assert image.mode == 'L' and image.size == (64, 64)


def test_add_noise_is_the_noise_evaluate_draws(images):
  clean = np.random.default_rng(0).integers(0, 256, (600, 7, 1)).astype(np.uint8)  # 3 strips
  loaded = [images_lib.LoadedImage(f'{i}.png', clean, True) for i in range(3)]
  expected = eval_sets.degrade_images(
      loaded, task='denoising', sigma=25, scale=1, channels=1, seed=4
  )
  for i in range(3):
    got = denoise.noisy_image(clean, 255, 25, 4, i)
    np.testing.assert_array_equal(got, expected[i].inputs)


@pytest.mark.slow
def test_per_image_psnr_equals_evaluate_on_a_folder(tmp_path, capsys):
  name = _shipped(DENOISER)
  folder = tmp_path / 'set'
  folder.mkdir()
  # A 240x72 px crop of 01.png (3 row tiles of 100 px, each with its 66 px of context: real
  # seams), and 232x72 px crops of 02.png and 03.png (the noise of images 1 and 2; whole-image
  # windows of the tiles' shape, so the tiled runs share one compiled program).
  Image.open(paths.data_root() / 'Set12' / '01.png').crop((64, 8, 136, 248)).save(folder / '01.png')
  for n in ('02.png', '03.png'):
    Image.open(paths.data_root() / 'Set12' / n).crop((64, 12, 136, 244)).save(folder / n)
  argv = ['--model', name, '--add-noise', '50', '--seed', '0', '--tile', '100']
  assert denoise.main(argv + [str(folder), '--out', str(tmp_path / 'out')]) == 0
  ours = {
      m.group(1): float(m.group(2))
      for m in re.finditer(r'(\d\d\.png) -> .* denoised ([\d.]+) dB', capsys.readouterr().out)
  }
  argv = ['--pretrained', name, '--set', str(folder), '--sigma', '50', '--seed', '0']
  assert evaluate.main(argv + ['--per-image', '--json']) == 0
  theirs = {
      row['name']: row['psnr']
      for row in json.loads(capsys.readouterr().out)['results'][0]['images']
  }
  assert sorted(ours) == sorted(theirs) == ['01.png', '02.png', '03.png']
  for n, value in ours.items():
    assert value == pytest.approx(theirs[n], abs=0.006)


def test_16bit_inputs_give_16bit_outputs_equal_to_the_8bit_result(images, tmp_path):
  name = _shipped(DENOISER)
  gray8 = np.asarray(Image.open(images / 'gray.png'))[..., None]
  rgb8 = np.asarray(Image.open(images / 'lr.png').convert('RGB'))
  for stem, pixels in (('g', gray8), ('c', rgb8)):
    image_files.write(tmp_path / f'{stem}8.png', image_files.Picture(pixels))
    for suffix in ('.png', '.tif'):
      sixteen = image_files.Picture(pixels.astype(np.uint16) * 257)
      image_files.write(tmp_path / f'{stem}16{suffix}', sixteen)
  inputs = [str(p) for p in sorted(tmp_path.iterdir())]
  assert denoise.main(['--model', name, *inputs, '--out', str(tmp_path / 'out')]) == 0
  for stem in ('g', 'c'):
    out8 = image_files.read(tmp_path / f'out/{stem}8_denoised.png').pixels
    for name16 in (f'{stem}16_denoised.png', f'{stem}16_denoised.tif'):
      out16 = image_files.read(tmp_path / 'out' / name16).pixels
      assert out16.dtype == np.uint16 and out16.shape == out8.shape
      # Same float output (x/255 == 257x/65535), rounded to 16 instead of 8 bits.
      assert np.abs(out16 / 257.0 - out8).max() <= 0.51
      assert np.any(out16 % 257)  # precision beyond 8 bits


@pytest.mark.slow  # the shipped denoiser compiled for an RGB photo's size
def test_gray_denoiser_keeps_an_rgb_image_rgb_and_copies_alpha(images, tmp_path):
  name = _shipped(DENOISER)
  rgba = Image.open(images / 'lr.png').convert('RGBA')
  rgba.putalpha(77)
  rgba.save(tmp_path / 'rgba.png')
  gray_rgb = Image.open(images / 'gray.png').convert('RGB')
  gray_rgb.save(tmp_path / 'grayrgb.png')
  inputs = [str(images / 'lr.png'), str(tmp_path / 'rgba.png'), str(tmp_path / 'grayrgb.png')]
  argv = ['--model', name, *inputs, str(images / 'gray.png'), '--out', str(tmp_path / 'o')]
  assert denoise.main(argv) == 0
  image = Image.open(tmp_path / 'o/lr_denoised.png')
  assert image.mode == 'RGB' and image.size == (16, 20)
  with_alpha = Image.open(tmp_path / 'o/rgba_denoised.png')
  assert with_alpha.mode == 'RGBA' and np.all(np.asarray(with_alpha)[..., 3] == 77)
  # Three equal channels are denoised once, as the gray image they are.
  from_rgb = np.asarray(Image.open(tmp_path / 'o/grayrgb_denoised.png'))
  from_gray = np.asarray(Image.open(tmp_path / 'o/gray_denoised.png'))
  assert from_rgb.shape == (64, 64, 3)
  for c in range(3):
    np.testing.assert_array_equal(from_rgb[..., c], from_gray)


def test_quoted_glob_folder_and_corrupt_file(images, tmp_path, capsys):
  name = _shipped(DENOISER)
  folder = _folder(tmp_path, images, ['gray.png', 'lr.png', 'broken.png'])
  (folder / 'notes.txt').write_text('not an image')
  assert denoise.main(['--model', name, str(folder / 'g*.png'), '--out', str(tmp_path / 'g')]) == 0
  assert sorted(p.name for p in (tmp_path / 'g').iterdir()) == ['gray_denoised.png']
  capsys.readouterr()
  assert denoise.main(['--model', name, str(folder), '--out', str(tmp_path / 'f')]) == 1
  err = capsys.readouterr().err
  assert re.search(r'\[1/3\] .*broken.png: error: cannot decode image .*broken.png', err)
  assert '1 failed' in err and '2 written' in err
  written = sorted(p.name for p in (tmp_path / 'f').iterdir())
  assert written == ['gray_denoised.png', 'lr_denoised.png']


def test_existing_outputs_are_skipped_unless_overwrite(images, tmp_path, capsys):
  name = _shipped(DENOISER)
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'gray_denoised.png').write_bytes(b'keep me')
  argv = ['--model', name, str(images / 'gray.png'), str(images / 'lr.png'), '--out', str(out)]
  assert denoise.main(argv) == 0
  err = capsys.readouterr().err
  assert re.search(
      r'gray.png: skipped, .*gray_denoised.png exists \(--overwrite replaces it\)', err
  )
  assert '1 written, 1 skipped, 0 failed' in err
  assert (out / 'gray_denoised.png').read_bytes() == b'keep me'
  assert (out / 'lr_denoised.png').is_file()
  assert denoise.main(argv + ['--overwrite']) == 0
  assert Image.open(out / 'gray_denoised.png').size == (64, 64)
  assert not [p for p in out.iterdir() if p.name.startswith('.')]


@pytest.mark.slow
def test_upscale_x4_and_downscale_report(images, tmp_path, capsys):
  name = _shipped(SR)
  assert upscale.main(['--model', name, str(images / 'lr.png'), '--out', str(tmp_path)]) == 0
  assert Image.open(tmp_path / 'lr_x4.png').size == (64, 80)
  argv = ['--model', name, '--downscale', str(images / 'hr.png'), '--out', str(tmp_path)]
  assert upscale.main(argv) == 0
  bicubic, model = map(
      float, re.search(r'bicubic ([\d.]+) dB, model ([\d.]+) dB', capsys.readouterr().out).groups()
  )
  # Measured: bicubic 34.09 dB, model 36.70 dB (+2.61 dB). The crop and the weights are fixed, so
  # only float rounding moves the gain (hundredths of a dB): a 0.1 dB margin. The net with its
  # residual scaled by 0.8 gains 2.47 dB, by 0.6 2.09 dB (a 0.6 dB margin let that one pass).
  assert model > bicubic + 2.61 - 0.1, (bicubic, model)
  assert Image.open(tmp_path / 'hr_x4.png').size == (64, 64)
  assert Image.open(tmp_path / 'hr_lr.png').size == (16, 16)


@pytest.mark.slow
def test_upscale_keeps_gray_16bit_and_alpha(images, tmp_path, capsys):
  name = _shipped(SR)
  lr = np.asarray(Image.open(images / 'lr.png').convert('RGB'))
  image_files.write(tmp_path / 'c16.tif', image_files.Picture(lr.astype(np.uint16) * 257))
  Image.fromarray(lr[..., 1]).save(tmp_path / 'g8.png')
  rgba = Image.open(images / 'lr.png').convert('RGBA')
  rgba.putalpha(200)
  rgba.save(tmp_path / 'a8.png')
  inputs = [str(tmp_path / n) for n in ('c16.tif', 'g8.png', 'a8.png')]
  assert upscale.main(['--model', name, *inputs, '--out', str(tmp_path / 'o')]) == 0
  colour = image_files.read(tmp_path / 'o/c16_x4.tif').pixels
  assert colour.dtype == np.uint16 and colour.shape == (80, 64, 3)
  assert Image.open(tmp_path / 'o/g8_x4.png').mode == 'L'
  with_alpha = image_files.read(tmp_path / 'o/a8_x4.png')
  assert with_alpha.alpha.shape == (80, 64, 1) and np.all(with_alpha.alpha == 200)
  # --downscale on a 16-bit copy: 16-bit LR, bicubic and x4 images, scores as from 8 bits.
  hr = np.asarray(Image.open(images / 'hr.png').convert('RGB'))
  image_files.write(tmp_path / 'hr16.png', image_files.Picture(hr.astype(np.uint16) * 257))
  capsys.readouterr()
  for stem in ('hr', 'hr16'):
    source = images / 'hr.png' if stem == 'hr' else tmp_path / 'hr16.png'
    argv = ['--model', name, '--downscale', str(source), '--out', str(tmp_path / 'd')]
    assert upscale.main(argv) == 0
  scores = re.findall(r'bicubic ([\d.]+) dB, model ([\d.]+) dB', capsys.readouterr().out)
  assert len(scores) == 2
  np.testing.assert_allclose(np.array(scores[1], float), np.array(scores[0], float), atol=0.1)
  for kind, size in (('lr', 16), ('bicubic', 64), ('x4', 64)):
    pixels = image_files.read(tmp_path / f'd/hr16_{kind}.png').pixels
    assert pixels.dtype == np.uint16 and pixels.shape == (size, size, 3)


def test_clear_errors(images, tmp_path, capsys):
  den, sr = _shipped(DENOISER), _shipped(SR)
  out = tmp_path / 'out'
  assert denoise.main(['--model', den, str(tmp_path / 'missing.png'), '--out', str(out)]) == 2
  assert 'no such file or folder' in capsys.readouterr().err
  assert denoise.main(['--model', den, str(tmp_path / '*.png'), '--out', str(out)]) == 2
  assert 'matches no image file' in capsys.readouterr().err
  assert upscale.main(['--model', den, str(images / 'lr.png'), '--out', str(out)]) == 2
  assert 'not a super_resolution one' in capsys.readouterr().err
  assert denoise.main(['--model', sr, str(images / 'lr.png'), '--out', str(out)]) == 2
  assert 'not a denoising one' in capsys.readouterr().err
  assert denoise.main(['--model', 'nope', str(images / 'gray.png'), '--out', str(out)]) == 2
  assert 'Unknown pretrained model' in capsys.readouterr().err
  argv = ['--model', den, '--add-noise', '300', str(images / 'gray.png'), '--out', str(out)]
  assert denoise.main(argv) == 2
  assert '--add-noise must be in (0, 255]' in capsys.readouterr().err
  other = _folder(tmp_path, images, ['gray.png'], name='other')
  argv = ['--model', den, str(images / 'gray.png'), str(other / 'gray.png'), '--out', str(out)]
  assert denoise.main(argv) == 2
  assert 'would both write' in capsys.readouterr().err
  own = _folder(tmp_path, images, ['gray.png'], name='own')
  shutil.copy(images / 'gray.png', own / 'gray_denoised.png')
  argv = ['--model', den, str(own), '--out', str(own), '--overwrite']
  assert denoise.main(argv) == 2
  assert 'gray_denoised.png of' in capsys.readouterr().err
  assert sorted(p.name for p in own.iterdir()) == ['gray.png', 'gray_denoised.png']
  (tmp_path / 'file').write_text('')
  argv = ['--model', den, str(images / 'gray.png'), '--out', str(tmp_path / 'file')]
  assert denoise.main(argv) == 2
  assert 'is a file; name a folder' in capsys.readouterr().err
  assert not out.exists()


def test_evaluate_pretrained_on_a_folder(images, tmp_path, capsys):
  name = _shipped(DENOISER)
  folder = _folder(tmp_path, images, ['gray.png'])
  assert evaluate.main(['--pretrained', name, '--set', str(folder), '--json']) == 0
  assert f'"method": "{name}"' in capsys.readouterr().out


@pytest.mark.parametrize('module', ['denoise', 'upscale'])
def test_help_shows_examples(module):
  out = subprocess.run(
      [sys.executable, '-m', f'dxnet_jax.{module}', '--help'],
      capture_output=True,
      text=True,
      check=True,
  ).stdout
  assert 'examples:' in out and f'dxnet-{module} --model' in out
  assert '--overwrite' in out and '--tile' in out and 'Exit status' in out
