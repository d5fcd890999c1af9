"""The denoising benchmark scripts: `benchmarks.denoise_speed` times the command on a photo it
builds, and `benchmarks.rni15_figure` draws RNI15 photos before and after; both run on tiny
models written into a temporary weights folder."""

import contextlib
import io
import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from benchmarks import denoise_speed
from benchmarks import rni15_figure
from dxnet_jax import evaluate
from dxnet_jax import pretrained
from dxnet_jax.data import paths

from configs import denoise as denoise_config
from configs import denoise_blind

SHARED = paths.data_root()
needs_data = pytest.mark.skipif(not SHARED.is_dir(), reason=f'shared data absent: {SHARED}')


@pytest.fixture(scope='module')
def weights(tmp_path_factory, write_tiny_model):
  """A weights folder: tiny blind colour and gray denoisers and a tiny sigma-50 one."""
  root = tmp_path_factory.mktemp('weights')
  write_tiny_model(root, 'blind_rgb', denoise_blind.get_config('rgb'))
  write_tiny_model(root, 'blind_gray', denoise_blind.get_config('gray'))
  write_tiny_model(root, 'gray_s50', denoise_config.get_config('dxnet_444,sigma=50'))
  return root


def _table(out):
  """The rows of the markdown table in `out`, split into cells."""
  lines = [line for line in out.splitlines() if line.startswith('| ')]
  return [[c.strip() for c in line.strip('|').split('|')] for line in lines[1:]]


# --- denoise_speed -------------------------------------------------------------------------------


def test_photo_size_is_4_by_3_at_the_megapixels_asked():
  assert denoise_speed.photo_size(12) == (4000, 3000)
  width, height = denoise_speed.photo_size(0.05)
  assert abs(width * height - 50_000) < 500 and abs(width / height - 4 / 3) < 0.01


def test_the_photo_mirrors_the_source_and_adds_the_noise_asked():
  source = np.random.default_rng(0).integers(60, 200, (5, 7, 3), np.uint8)
  clean = denoise_speed.noisy_photo(source, (20, 13), 0, 0)
  assert clean.shape == (13, 20, 3) and clean.dtype == np.uint8
  np.testing.assert_array_equal(clean[:5, :7], source)
  np.testing.assert_array_equal(clean[5:10, :7], source[::-1])  # mirrored: no seam
  np.testing.assert_array_equal(clean[:5, 7:14], source[:, ::-1])
  np.testing.assert_array_equal(clean[10:13, 14:20], source[:3, :6])
  gray = np.full((300, 300, 3), 128, np.uint8)
  noisy = denoise_speed.noisy_photo(gray, (600, 600), 25, 1)  # more than 256 rows: strips
  assert abs((noisy.astype(float) - 128).std() - 25) < 0.3
  assert not np.array_equal(noisy[:256], noisy[256:512])


@pytest.mark.slow  # two fresh processes of the command, each importing JAX and compiling
@needs_data
def test_denoise_speed_times_the_command_cold_and_warm_and_cbm3d(weights, monkeypatch, capsys):
  pytest.importorskip('bm3d')
  monkeypatch.setenv(pretrained.ENV_VAR, str(weights))  # the command's process inherits it
  argv = ['--model', 'blind_rgb', '--megapixels', '0.05', '--bm3d-megapixels', '0.01']
  assert denoise_speed.main(argv) == 0
  out = capsys.readouterr().out
  assert re.search(r'1 photo\(s\) of 258x194 \(0.05 MP\): CBSD68/101085.png mirrored', out)
  command, cbm3d = _table(out)
  assert command[0] == 'dxnet-denoise, --model blind_rgb'
  cold, warm, files, per_second, megapixels = map(float, command[1:])
  assert 0 < files < warm and cold > 0
  # warm is printed to 0.1 s and the rates to 3 digits: each rate lies within what they allow
  slowest, fastest = 0.995 / (warm + 0.05), 1.005 / (warm - 0.05)
  assert slowest <= per_second <= fastest
  assert slowest <= megapixels / (258 * 194 / 1e6) <= fastest
  assert re.fullmatch(r'CBM3D \(bm3d.bm3d_rgb\) on a 115x87 crop, x5 by pixel count', cbm3d[0])
  assert cbm3d[1] == '-' and float(cbm3d[2]) == float(cbm3d[3]) > 0


@needs_data
def test_denoise_speed_reports_a_command_that_fails(weights, monkeypatch, capsys):
  monkeypatch.setenv(pretrained.ENV_VAR, str(weights))
  argv = ['--model', 'nope', '--megapixels', '0.01', '--no-bm3d']
  assert denoise_speed.main(argv) == 1
  assert "Unknown pretrained model 'nope'" in capsys.readouterr().err


# --- rni15_figure --------------------------------------------------------------------------------


@pytest.mark.slow  # real photos through the command's models
@needs_data
def test_rni15_figure_titles_each_photo_with_its_estimated_level(
    weights, tmp_path, monkeypatch, capsys
):
  monkeypatch.setenv(pretrained.ENV_VAR, '')  # restored after the script sets it
  out = tmp_path / 'figure' / 'rni15.png'
  argv = ['--weights', str(weights), '--model', 'blind_rgb', '--images', 'Pattern2,Singer']
  assert rni15_figure.main(argv + ['--out', str(out), '--crop', '96']) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[-1] == f'wrote {out}'
  for name, line in zip(('Pattern2.png', 'Singer.png'), lines):
    # The script's estimate is the command's: the level the blind model was given.
    estimate, used = re.fullmatch(
        rf'{name}: estimated sigma ([\d.]+); +sigma ([\d.]+) \(estimated\)', line
    ).groups()
    assert estimate == used and 0 < float(estimate) < 75
  width, height = Image.open(out).size
  assert width > 2 * height  # one row: two photos, two panels each
  before = out.read_bytes()
  with pytest.raises(SystemExit) as error:
    rni15_figure.main(argv + ['--out', str(out)])
  assert error.value.code == 2 and '--overwrite replaces it' in capsys.readouterr().err
  assert out.read_bytes() == before
  argv = ['--weights', str(weights), '--model', 'gray_s50', '--images', 'Pattern2']
  assert rni15_figure.main(argv + ['--out', str(out), '--overwrite', '--columns', '1']) == 0
  assert Image.open(out).size != (width, height)


def test_rni15_figure_titles_say_which_level_the_model_used(weights, monkeypatch):
  monkeypatch.setenv(pretrained.ENV_VAR, str(weights))
  blind = rni15_figure.titles('Dog', 12.34, '  sigma 12.3 (estimated)', 'blind_rgb')
  assert blind == ('Dog: noisy, est. σ 12.3', 'denoised at σ 12.3, est. σ 12.3')
  capped = rni15_figure.titles('Dog', 80.0, '  sigma 75 (estimated 80.0, outside ...)', None)
  assert capped[1] == 'denoised at σ 75.0, est. σ 80.0'
  fixed = rni15_figure.titles('Dog', 12.34, '', 'gray_s50')
  assert fixed[1] == 'denoised (trained at σ 50), est. σ 12.3'
  named = rni15_figure.titles('Dog', 12.34, '  model gray_s50', None)
  assert named[1] == 'denoised (trained at σ 50), est. σ 12.3'


def test_rni15_figure_picks_photos_by_name_or_count(tmp_path):
  for name in ('b.png', 'a.jpg', 'c.png', '.hidden.png'):
    (tmp_path / name).write_bytes(b'')
  assert [p.name for p in rni15_figure.photos(tmp_path, None, 0)] == ['a.jpg', 'b.png', 'c.png']
  assert [p.name for p in rni15_figure.photos(tmp_path, None, 2)] == ['a.jpg', 'b.png']
  assert [p.name for p in rni15_figure.photos(tmp_path, 'c,a', 0)] == ['c.png', 'a.jpg']
  with pytest.raises(ValueError, match=r"no photos \['d'\]"):
    rni15_figure.photos(tmp_path, 'c,d', 0)


def test_the_model_card_of_a_blind_model_states_its_level_range(weights):
  card = (weights / 'blind_gray' / pretrained.CARD).read_text()
  assert 'Gaussian noise of sigma 0-75 per patch (0-255 scale), its level map as an extra' in card
  assert (
      'Gaussian noise sigma 50 (0-255 scale)'
      in (weights / 'gray_s50' / pretrained.CARD).read_text()
  )


def _evaluate_json(argv):
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert evaluate.main(argv + ['--json']) == 0
  return json.loads(out.getvalue())


def test_measure_levels_scores_a_blind_model_told_the_true_and_the_estimated_level(
    weights, tmp_path, monkeypatch
):
  crops = tmp_path / 'crops'
  crops.mkdir()
  for i, box in enumerate(((0, 0, 48, 48), (64, 64, 112, 112))):
    Image.open(SHARED / 'Set12' / '01.png').crop(box).save(crops / f'{i}.png')
  for name in ('blind_gray', 'gray_s50'):
    shutil.copytree(weights / name, tmp_path / 'models' / name)
  monkeypatch.setenv(pretrained.ENV_VAR, str(tmp_path / 'models'))
  measured = pretrained.measure_levels('blind_gray', sigmas=(50.0,), sets=[str(crops)])
  assert measured == pretrained.manifest('blind_gray')['measured_levels']
  (row,) = measured['scores']
  assert (row['set'], row['sigma'], row['num_images']) == (str(crops), 50.0, 2)
  assert row['psnr'] != row['psnr_estimated_level']  # the two columns are two measurements
  argv = ['--pretrained', 'blind_gray', '--set', str(crops), '--sigma', '50', '--level']
  for level, psnr in (('50', row['psnr']), ('auto', row['psnr_estimated_level'])):
    (result,) = _evaluate_json(argv + [level])['results']
    assert result['psnr'] == pytest.approx(psnr, abs=1e-9), level
  card = (tmp_path / 'models' / 'blind_gray' / pretrained.CARD).read_text()
  assert f"| {crops} | 50 | 2 | {row['psnr']:.2f} | {row['psnr_estimated_level']:.2f} |" in card
  with pytest.raises(ValueError, match='not told a noise level'):
    pretrained.measure_levels('gray_s50')


def test_a_colour_denoiser_is_scored_on_the_colour_sets(weights, monkeypatch):
  monkeypatch.setenv(pretrained.ENV_VAR, str(weights))
  assert pretrained.benchmark_sets(pretrained.manifest('blind_rgb')) == ('CBSD68',)
  assert pretrained.benchmark_sets(pretrained.manifest('blind_gray')) == ('BSD68', 'Set12')
