"""The noise-level-conditioned (blind) denoisers: models, their config and data, evaluation."""

import functools
import importlib.util
import json
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from dxnet_jax import data as data_lib
from dxnet_jax import evaluate
from dxnet_jax import models
from dxnet_jax.data import paths

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = paths.data_root()
TINY = dict(blocks=(1, 1), growth_rate=4, stem_features=8)
TEST_SETS = {'BSD68', 'Set12', 'CBSD68'}


def _config(arg):
  path = REPO / 'configs' / 'denoise_blind.py'
  spec = importlib.util.spec_from_file_location('denoise_blind', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _tiny(name, **options):
  return models.create(name, kernels='xla', **TINY, **options)


@functools.lru_cache(maxsize=None)
def _randomised(name, unshuffle=False, seed=1):
  """Variables of a tiny blind denoiser with every parameter drawn at random, so the
  (zero-initialised) output conv acts; BatchNorm statistics at their initial values. Made from
  the variables' shapes (no initialiser compiled), once for the tests that share them; no shape
  depends on the image size."""
  model = _tiny(name, unshuffle=unshuffle)
  channels = models.input_shape(name)[-1]
  abstract = models.init_variables(model, (1, 24, 24, channels), abstract=True)
  rng = np.random.default_rng(seed)
  params = jax.tree.map(
      lambda a: 0.3 * rng.standard_normal(a.shape, np.float32), abstract['params']
  )
  stats = jax.tree_util.tree_map_with_path(
      lambda path, a: np.full(a.shape, float(path[-1].key == 'var'), np.float32),
      abstract['batch_stats'],
  )
  return {'params': params, 'batch_stats': stats}


def _apply(model, variables, x):
  """`model.apply` as one jitted program, not eagerly (where each op compiles on its own)."""
  return np.asarray(jax.jit(model.apply)(variables, x))


@pytest.mark.parametrize(
    'name, channels, count',
    [('dxnet_denoise_blind', 1, 140_929), ('dxnet_denoise_blind_rgb', 3, 144_387)],
)
def test_registry_models_take_the_image_and_its_level_map(name, channels, count):
  assert models.model_task(name) == 'denoising'
  assert models.input_shape(name) == (50, 50, channels + 1)
  assert models.parameter_count(name) == count
  model = models.create(name, kernels='xla')
  out = jax.eval_shape(
      lambda: model.init_with_output(
          jax.random.key(0), jnp.zeros((2, 50, 50, channels + 1)), train=False
      )[0]
  )
  assert out.shape == (2, 50, 50, channels)


def test_the_output_follows_the_level_map_and_at_level_fills_it():
  model = _tiny('dxnet_denoise_blind')
  variables = _randomised('dxnet_denoise_blind')
  image = np.random.default_rng(0).random((1, 24, 24, 1), np.float32)
  outputs = {s: _apply(models.at_level(model, s), variables, image) for s in (5.0, 50.0)}
  assert np.abs(outputs[5.0] - outputs[50.0]).max() > 1e-4
  level_map = np.full((1, 24, 24, 1), 50 / 255, np.float32)
  with_map = _apply(model, variables, np.concatenate([image, level_map], -1))
  np.testing.assert_allclose(with_map, outputs[50.0], atol=1e-6)
  with pytest.raises(ValueError, match='at_level'):
    model.apply(variables, image)


def test_an_untrained_net_returns_its_input():
  model = _tiny('dxnet_denoise_blind_rgb')
  variables = models.init_variables(model, (1, 16, 16, 4))
  image = np.random.default_rng(1).random((1, 16, 16, 3), np.float32)
  np.testing.assert_allclose(_apply(models.at_level(model, 30), variables, image), image)


@pytest.mark.parametrize('height, width', [(24, 24), (23, 17)])
def test_the_unshuffle_front_end_keeps_any_image_size(height, width):
  model = _tiny('dxnet_denoise_blind_rgb', unshuffle=True)
  variables = _randomised('dxnet_denoise_blind_rgb', unshuffle=True)
  assert variables['params']['stem_conv']['kernel'].shape[2] == 13  # 4 x 3 channels + map
  image = np.random.default_rng(2).random((1, height, width, 3), np.float32)
  out = _apply(models.at_level(model, 25), variables, image)
  assert out.shape == image.shape
  x = np.random.default_rng(3).random((2, 6, 8, 5))
  np.testing.assert_array_equal(models.pixel_shuffle(models.pixel_unshuffle(x, 2), 2), x)


def test_every_kernels_setting_computes_the_same_blind_net():
  image = np.random.default_rng(4).random((1, 20, 20, 1), np.float32)
  variables = _randomised('dxnet_denoise_blind')
  want = _apply(models.at_level(_tiny('dxnet_denoise_blind'), 20), variables, image)
  cpu = models.create('dxnet_denoise_blind', kernels='cpu', **TINY)
  got = _apply(models.at_level(cpu, 20), variables, image)
  np.testing.assert_allclose(got, want, atol=2e-5)


@pytest.mark.parametrize('arg, channels', [('gray', 1), ('rgb', 3)])
def test_the_config_trains_on_sigma_0_to_75_away_from_the_test_sets(arg, channels):
  config = _config(arg)
  assert tuple(config.data.sigma) == (0.0, 75.0)
  assert config.data.level_map and config.data.channels == channels
  assert config.input_shape == (50, 50, channels + 1)
  assert not TEST_SETS & set(config.data.train_dirs)
  assert config.data.validation_set not in TEST_SETS - {'Set12'}
  assert models.model_task(config.model) == 'denoising'
  assert _config(f'{arg},steps=30').num_steps == 30


@pytest.mark.skipif(not SHARED.is_dir(), reason=f'shared data absent: {SHARED}')
@pytest.mark.filterwarnings('ignore::dxnet_jax.data.images.DataWarning')
def test_the_pipeline_appends_each_patch_sigma_as_its_level_map():
  config = _config('rgb')
  config.data.prefetch = 0
  config.data.patches_per_epoch = 256
  config.data.train_dirs = ('BSD200',)
  data = data_lib.build(config, global_batch_size=128, seed=0)
  batch = next(data.train.iterate(0))
  inputs, targets = batch['inputs'], batch['targets']
  assert inputs.shape == (128, 50, 50, 4) and targets.shape == (128, 50, 50, 3)
  level = inputs[..., 3]
  assert np.all(level == level[:, :1, :1])  # constant per patch
  sigma = level[:, 0, 0] * 255
  assert 0 <= sigma.min() and sigma.max() <= 75 and sigma.max() - sigma.min() > 50
  noise_std = (inputs[..., :3] - targets).std(axis=(1, 2, 3)) * 255
  np.testing.assert_allclose(noise_std, sigma, rtol=0.05, atol=0.2)
  validation = next(iter(data.validation()))
  real = validation['mask'] > 0  # Set5's five crops; the other rows pad the batch
  assert real.sum() == 5
  np.testing.assert_allclose(validation['inputs'][real][..., 3], 25 / 255, rtol=1e-6)
  assert data.info['level_map']


def test_evaluation_fills_the_map_with_the_sigma_scored():
  model = _tiny('dxnet_denoise_blind')
  variables = _randomised('dxnet_denoise_blind')
  with pytest.raises(ValueError, match='--sigma'):
    evaluate.model_predict(model, variables)
  image = np.random.default_rng(5).random((16, 16, 1), np.float32)
  got = evaluate.model_predict(model, variables, 15.0)(image)
  want = _apply(models.at_level(model, 15.0), variables, image[None])[0]
  np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.fixture(scope='module')
def blind_model_dir(tmp_path_factory):
  """A folder of shipped-model layout holding a tiny randomised blind gray denoiser."""
  from dxnet_jax import pretrained  # pylint: disable=g-import-not-at-top

  root = tmp_path_factory.mktemp('weights')
  config = _config('gray')
  config.model.update(TINY)
  config.model.kernels = 'xla'
  variables = _randomised('dxnet_denoise_blind')
  folder = root / 'blind_tiny'
  folder.mkdir()
  (folder / pretrained.MANIFEST).write_text(json.dumps({'config': config.to_dict()}))
  (folder / pretrained.WEIGHTS).write_bytes(pretrained.to_bytes(variables, 'float32'))
  return root


def _noisy_gray_file(folder, sigma):
  clean = np.asarray(Image.open(SHARED / 'Set12' / '02.png'))[64:160, 64:160]
  noisy = clean + np.random.default_rng(0).standard_normal(clean.shape) * sigma
  path = folder / 'noisy.png'
  Image.fromarray(np.clip(np.round(noisy), 0, 255).astype(np.uint8)).save(path)
  return path


@pytest.mark.skipif(not SHARED.is_dir(), reason=f'shared data absent: {SHARED}')
def test_denoise_estimates_the_level_per_image_and_uses_a_given_one(
    blind_model_dir, tmp_path, monkeypatch, capsys
):
  from dxnet_jax import denoise  # pylint: disable=g-import-not-at-top
  from dxnet_jax import pretrained  # pylint: disable=g-import-not-at-top

  monkeypatch.setenv(pretrained.ENV_VAR, str(blind_model_dir))
  path = _noisy_gray_file(tmp_path, 20)
  assert denoise.main(['--model', 'blind_tiny', str(path), '--out', str(tmp_path / 'auto')]) == 0
  estimated = re.search(r'sigma ([\d.]+) \(estimated\)', capsys.readouterr().out)
  assert estimated and abs(float(estimated.group(1)) - 20) < 2
  out = tmp_path / 'given'
  assert denoise.main(['--model', 'blind_tiny', '--sigma', '30', str(path), '--out', str(out)]) == 0
  assert 'sigma 30 (given)' in capsys.readouterr().out
  model, variables, _ = pretrained.load('blind_tiny')
  pixels = np.asarray(Image.open(path), np.float32)[None, ..., None] / 255
  want = _apply(models.at_level(model, 30), variables, pixels)[0, ..., 0]
  want = np.floor(np.clip(want, 0, 1) * 255 + 0.5)
  got = np.asarray(Image.open(out / 'noisy_denoised.png'), np.float32)
  assert np.abs(got - want).max() <= 1  # float rounding may flip a half


@pytest.mark.skipif(not SHARED.is_dir(), reason=f'shared data absent: {SHARED}')
def test_denoise_names_a_level_outside_the_trained_range(
    blind_model_dir, tmp_path, monkeypatch, capsys
):
  from dxnet_jax import denoise  # pylint: disable=g-import-not-at-top
  from dxnet_jax import pretrained  # pylint: disable=g-import-not-at-top

  monkeypatch.setenv(pretrained.ENV_VAR, str(blind_model_dir))
  path = _noisy_gray_file(tmp_path, 20)
  argv = ['--model', 'blind_tiny', '--sigma', '80', str(path), '--out', str(tmp_path / 'o')]
  assert denoise.main(argv) == 2
  error = capsys.readouterr().err.strip().splitlines()
  assert len(error) == 1 and 'outside the range 0-75' in error[0]
