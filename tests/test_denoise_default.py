"""`dxnet-denoise` without --model: colour images go to the blind colour model, gray ones to the
blind gray model, each loaded once and only when needed; tiny models stand in for the shipped
ones in a temporary weights folder."""

import pathlib
import re

import numpy as np
import pytest
from PIL import Image

from dxnet_jax import denoise
from dxnet_jax import image_files
from dxnet_jax import pretrained
from dxnet_jax.data import paths

from configs import denoise as denoise_config
from configs import denoise_blind

SHARED = paths.data_root()
GRAY, COLOUR = denoise.DEFAULT_GRAY, denoise.DEFAULT_COLOUR
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason=f'shared data absent: {SHARED}')


@pytest.fixture(scope='module')
def weights(tmp_path_factory, write_tiny_model):
  """Weights folders: 'both' (the two default names and a sigma-50 gray model), 'gray_only'
  and 'none' (a sigma-50 gray model only)."""
  root = tmp_path_factory.mktemp('weights')
  for folder, names in (('both', (GRAY, COLOUR)), ('gray_only', (GRAY,)), ('none', ())):
    for name in names:
      arg = 'rgb' if name == COLOUR else 'gray'
      write_tiny_model(root / folder, name, denoise_blind.get_config(arg))
    config = denoise_config.get_config('dxnet_444,sigma=50')
    write_tiny_model(root / folder, 'gray_s50', config)
  return root


@pytest.fixture(scope='module')
def images(tmp_path_factory):
  """Real crops: colour (CBSD68), gray (Set12), and the gray one stored as three channels."""
  root = tmp_path_factory.mktemp('images')
  Image.open(SHARED / 'CBSD68/101085.png').crop((100, 100, 164, 148)).save(root / 'colour.png')
  gray = Image.open(SHARED / 'Set12/01.png').crop((64, 64, 128, 112))
  gray.save(root / 'gray.png')
  gray.convert('RGB').save(root / 'gray_rgb.png')
  return root


@pytest.fixture
def loads(monkeypatch):
  """The names `pretrained.load` is called with, in order."""
  calls, load = [], pretrained.load
  monkeypatch.setattr(pretrained, 'load', lambda name, *a, **k: calls.append(name) or load(name))
  return calls


def _lines(out):
  """{input file name: its result line's note} from the command's stdout."""
  return {
      pathlib.Path(m.group(1)).name: m.group(2)
      for m in re.finditer(r'^(\S+) -> \S+(.*)$', out, re.M)
  }


def test_each_image_goes_to_the_default_model_of_its_kind(
    weights, images, tmp_path, monkeypatch, capsys, loads
):
  monkeypatch.setenv(pretrained.ENV_VAR, str(weights / 'both'))
  inputs = [str(images / n) for n in ('colour.png', 'gray.png', 'gray_rgb.png')]
  assert denoise.main([*inputs, '--out', str(tmp_path / 'auto')]) == 0
  notes = _lines(capsys.readouterr().out)
  assert loads == [COLOUR, GRAY]  # each once, at the first image that needs it
  for name, model in (('colour.png', COLOUR), ('gray.png', GRAY), ('gray_rgb.png', GRAY)):
    assert re.fullmatch(rf'  model {model}  sigma [\d.]+ \(estimated\)', notes[name]), notes
  # The same outputs as naming the model.
  for name, model in (('colour.png', COLOUR), ('gray.png', GRAY)):
    out = tmp_path / model
    assert denoise.main(['--model', model, str(images / name), '--out', str(out)]) == 0
    stem = name[:-4]
    want = image_files.read(out / f'{stem}_denoised.png').pixels
    got = image_files.read(tmp_path / 'auto' / f'{stem}_denoised.png').pixels
    np.testing.assert_array_equal(got, want)
  assert 'model' not in _lines(capsys.readouterr().out)['gray.png']  # --model: no name
  gray_rgb = image_files.read(tmp_path / 'auto' / 'gray_rgb_denoised.png').pixels
  gray = image_files.read(tmp_path / 'auto' / 'gray_denoised.png').pixels
  assert gray_rgb.shape == (48, 64, 3) and gray.shape == (48, 64, 1)
  for c in range(3):
    np.testing.assert_array_equal(gray_rgb[..., c], gray[..., 0])


def test_a_model_no_input_needs_is_never_loaded(weights, images, tmp_path, monkeypatch, loads):
  monkeypatch.setenv(pretrained.ENV_VAR, str(weights / 'both'))
  argv = [str(images / 'gray.png'), str(images / 'gray_rgb.png'), '--out', str(tmp_path)]
  assert denoise.main(argv) == 0
  assert loads == [GRAY]


def test_a_given_level_goes_to_both_models_and_is_checked_first(
    weights, images, tmp_path, monkeypatch, capsys
):
  monkeypatch.setenv(pretrained.ENV_VAR, str(weights / 'both'))
  inputs = [str(images / 'colour.png'), str(images / 'gray.png')]
  assert denoise.main(['--sigma', '30', *inputs, '--out', str(tmp_path / 'o')]) == 0
  notes = _lines(capsys.readouterr().out)
  assert notes['colour.png'] == f'  model {COLOUR}  sigma 30 (given)'
  assert notes['gray.png'] == f'  model {GRAY}  sigma 30 (given)'
  assert denoise.main(['--sigma', '80', *inputs, '--out', str(tmp_path / 'x')]) == 2
  error = capsys.readouterr().err.strip().splitlines()
  assert len(error) == 1 and 'outside the range 0-75' in error[0]
  assert not (tmp_path / 'x').exists()


def test_a_missing_default_model_is_one_line_naming_it_and_model(
    weights, images, tmp_path, monkeypatch, capsys
):
  monkeypatch.setenv(pretrained.ENV_VAR, str(weights / 'gray_only'))
  assert denoise.main([str(images / 'gray.png'), '--out', str(tmp_path / 'g')]) == 0
  capsys.readouterr()
  argv = [str(images / 'gray.png'), str(images / 'colour.png'), '--out', str(tmp_path / 'c')]
  assert denoise.main(argv) == 2
  last = capsys.readouterr().err.strip().splitlines()[-1]
  assert last.startswith('dxnet-denoise: error: ') and 'colour.png is a colour image' in last
  assert f'default colour model {COLOUR} is not installed' in last and '--model NAME' in last
  monkeypatch.setenv(pretrained.ENV_VAR, str(weights / 'none'))
  assert denoise.main([str(images / 'gray.png'), '--out', str(tmp_path / 'n')]) == 2
  error = capsys.readouterr().err.strip().splitlines()
  assert len(error) == 1 and f'neither default model ({GRAY}' in error[0]
  assert COLOUR in error[0] and '--model NAME' in error[0]
  assert not (tmp_path / 'n').exists()
  # An old non-blind model still runs by name, on gray and colour images alike.
  argv = ['--model', 'gray_s50', str(images / 'colour.png'), str(images / 'gray.png')]
  assert denoise.main(argv + ['--out', str(tmp_path / 's50')]) == 0
  assert image_files.read(tmp_path / 's50' / 'colour_denoised.png').pixels.shape == (48, 64, 3)


def test_help_names_the_defaults_and_how_channels_are_matched():
  text = ' '.join(denoise._parser().format_help().split())
  assert f'default: {COLOUR} for colour images, {GRAY} for gray ones' in text
  assert 'a colour image (three channels, not all equal)' in text
  assert 'a gray one (one channel, or three equal channels)' in text
  assert 'a gray model denoises a colour image one channel at a time' in text
  assert 'a colour model takes a gray image as three equal channels' in text
