"""`dxnet-evaluate --level`: the noise level a blind denoiser is told, given or estimated."""

import importlib.util
import json
import pathlib

import jax
import numpy as np
import pytest
from PIL import Image

from dxnet_jax import evaluate
from dxnet_jax import models
from dxnet_jax import noise_level
from dxnet_jax import pretrained
from dxnet_jax.data import paths

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = dict(blocks=(1, 1), growth_rate=4, stem_features=8, kernels='xla')


def _blind_config():
  path = REPO / 'configs' / 'denoise_blind.py'
  spec = importlib.util.spec_from_file_location('denoise_blind', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config('gray')
  config.model.update(TINY)
  return config


def _random_variables(model, shape):
  """Variables drawn from their shapes (no init compiled): parameters at random, so the
  (zero-initialised) output conv acts; the output conv small, so the output stays mostly within
  [0, 1], and the stem's weights on the level map large, so the level told changes the 8-bit
  output; BatchNorm statistics at mean 0, variance 1."""
  abstract = models.init_variables(model, shape, abstract=True)
  rng = np.random.default_rng(3)

  def draw(path, x):
    name = jax.tree_util.keystr(path)
    if 'batch_stats' in name:
      return np.full(x.shape, 1.0 if name.endswith("['var']") else 0.0, np.float32)
    scale = 0.005 if 'output_conv' in name else 0.3
    return (scale * rng.standard_normal(x.shape)).astype(np.float32)

  variables = jax.tree_util.tree_map_with_path(draw, abstract)
  variables['params']['stem_conv']['kernel'][:, :, -1] *= 100.0
  return variables


@pytest.fixture(scope='module')
def tiny_blind():
  config = _blind_config()
  model = models.create(config.model.to_dict())
  return config, model, _random_variables(model, (1, 16, 16, 2))


def _noisy_crop(sigma, seed=0):
  clean = np.asarray(Image.open(paths.data_root() / 'Set12' / '05.png'), np.float32)[:64, :64]
  noise = np.random.default_rng(seed).standard_normal(clean.shape) * sigma
  return ((clean + noise) / 255)[..., None].astype(np.float32)


@pytest.mark.slow
def test_auto_tells_the_model_the_estimated_level(tiny_blind):
  _, model, variables = tiny_blind
  for sigma in (10, 40):
    noisy = _noisy_crop(sigma)
    estimate = noise_level.estimate_sigma(noisy)
    assert abs(estimate - sigma) < 3
    got = evaluate.model_predict(model, variables, sigma=25.0, level='auto')(noisy)
    want = evaluate.model_predict(model, variables, sigma=25.0, level=estimate)(noisy)
    np.testing.assert_allclose(got, want, atol=1e-6)
    told_truth = evaluate.model_predict(model, variables, sigma=25.0)(noisy)
    assert np.abs(got - told_truth).max() > 1e-5  # 25 is not what auto told it


def test_auto_keeps_the_estimate_within_the_trained_range(tiny_blind):
  _, model, variables = tiny_blind
  noisy = _noisy_crop(40)
  got = evaluate.model_predict(model, variables, 40.0, 'auto', level_range=(0.0, 20.0))(noisy)
  want = evaluate.model_predict(model, variables, 40.0, 20.0)(noisy)
  np.testing.assert_allclose(got, want, atol=1e-6)


def test_level_is_refused_for_a_model_trained_at_one_level():
  model = models.create('dxnet_denoise_444', blocks=(1,), growth_rate=4, kernels='xla')
  with pytest.raises(ValueError, match='--level is for noise-level-conditioned'):
    evaluate.model_predict(model, {}, 25.0, 'auto')


def test_the_command_scores_a_blind_model_told_the_estimated_level(
    tiny_blind, tmp_path, monkeypatch
):
  config, model, variables = tiny_blind
  folder = tmp_path / 'blind_tiny'
  folder.mkdir()
  (folder / pretrained.MANIFEST).write_text(json.dumps({'config': config.to_dict()}))
  (folder / pretrained.WEIGHTS).write_bytes(pretrained.to_bytes(variables, 'float32'))
  monkeypatch.setenv(pretrained.ENV_VAR, str(tmp_path))
  images = tmp_path / 'images'
  images.mkdir()
  clean = np.asarray(Image.open(paths.data_root() / 'Set12' / '05.png'))
  Image.fromarray(clean[:48, :48]).save(images / 'a.png')
  Image.fromarray(clean[100:148, 60:108]).save(images / 'b.png')
  rows = {}
  for level in (None, 'auto', '7'):
    argv = ['--pretrained', 'blind_tiny', '--set', str(images), '--sigma', '30', '--json']
    argv += [] if level is None else ['--level', level]
    rows[level], _ = evaluate.run(evaluate._parse(argv))  # pylint: disable=protected-access
  psnr = {level: row['psnr'] for level, (row,) in rows.items()}
  assert len(set(psnr.values())) == 3, psnr  # three levels told, three results
