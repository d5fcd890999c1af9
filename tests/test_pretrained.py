"""Shipped pretrained models: every one loads in one call, matches its manifest, and runs."""

import json
import pathlib
import re
import shutil

import jax
import numpy as np
import pytest
from PIL import Image

from dxnet_jax import metrics
from dxnet_jax import pretrained
from dxnet_jax.data import paths

REPO = pathlib.Path(__file__).resolve().parents[1]
NAMES = pretrained.available()
TASKS = ('denoising', 'super_resolution', 'classification')


def _crop(name, box):
  return np.asarray(Image.open(paths.data_root() / name).crop(box))


def test_every_task_has_a_shipped_model():
  assert {pretrained.manifest(n)['task'] for n in NAMES} == set(TASKS)


@pytest.mark.parametrize('name', NAMES)
def test_manifest_records_command_budget_and_numbers(name):
  info = pretrained.manifest(name)
  assert info['command'].startswith(
      ('python -m dxnet_jax.main --config configs/', 'python launch/timeboxed.py ')
  )
  configs = re.findall(r'configs/[\w/]+\.py', info['command'])
  assert configs and all((REPO / c).is_file() for c in configs), configs
  assert info['wall_seconds'] > 0 and info['results']['steps'] > 0
  assert (pretrained.root() / name / pretrained.WEIGHTS).stat().st_size < pretrained.MAX_BYTES


@pytest.mark.parametrize('name', NAMES)
def test_load_gives_variables_matching_the_model(name):
  model, variables, config = pretrained.load(name)
  abstract = jax.eval_shape(
      lambda: model.init(
          jax.random.key(0), np.zeros((1,) + tuple(config.input_shape), np.float32), train=False
      )
  )
  want = jax.tree.map(lambda x: x.shape, {k: abstract[k] for k in variables})
  assert jax.tree.map(np.shape, variables) == want
  assert pretrained.manifest(name)['parameters'] == sum(
      x.size for x in jax.tree.leaves(variables['params'])
  )


def test_denoiser_beats_the_noisy_input_on_a_real_crop():
  name = next(n for n in NAMES if pretrained.manifest(n)['model'] == 'dxnet_denoise_444')
  model, variables, config = pretrained.load(name)
  clean = _crop('Set12/01.png', (64, 64, 128, 128))[..., None]
  rng = np.random.default_rng(0)
  noisy = clean / 255.0 + rng.standard_normal(clean.shape) * config.data.sigma / 255.0
  out = model.apply(variables, noisy[None].astype(np.float32), train=False)[0]
  noisy_psnr = metrics.psnr(metrics.to_uint8(noisy), clean)
  assert metrics.psnr(metrics.to_uint8(out), clean) > noisy_psnr + 2.0


def test_sr_and_classifier_shapes():
  sr = next(n for n in NAMES if pretrained.manifest(n)['task'] == 'super_resolution')
  model, variables, _ = pretrained.load(sr)
  assert model.apply(variables, np.zeros((1, 8, 12, 3), np.float32)).shape == (1, 32, 48, 3)
  cls = next(n for n in NAMES if pretrained.manifest(n)['task'] == 'classification')
  model, variables, _ = pretrained.load(cls)
  logits = model.apply(variables, np.zeros((2, 32, 32, 3), np.float32), train=False)
  assert logits.shape == (2, 10) and np.all(np.isfinite(logits))


def test_unknown_name_lists_the_available_ones():
  with pytest.raises(
      ValueError, match=r"Unknown pretrained model 'nope'.*Available: .*" + NAMES[0]
  ):
    pretrained.load('nope')


def test_env_override_and_mismatched_files(tmp_path, monkeypatch):
  name = next(n for n in NAMES if pretrained.manifest(n)['model'] == 'dxnet_denoise_444')
  shutil.copytree(pretrained.root() / name, tmp_path / 'good')
  shutil.copytree(pretrained.root() / name, tmp_path / 'wrong_model')
  shutil.copytree(pretrained.root() / name, tmp_path / 'corrupt')
  monkeypatch.setenv(pretrained.ENV_VAR, str(tmp_path))
  info = json.loads((tmp_path / 'wrong_model' / 'model.json').read_text())
  info['config']['model']['blocks'] = [4, 4, 5]
  (tmp_path / 'wrong_model' / 'model.json').write_text(json.dumps(info))
  (tmp_path / 'corrupt' / pretrained.WEIGHTS).write_bytes(b'not msgpack at all')
  assert pretrained.available() == ['corrupt', 'good', 'wrong_model']
  pretrained.load('good')
  with pytest.raises(ValueError, match='does not match model'):
    pretrained.load('wrong_model')
  with pytest.raises(ValueError, match='corrupt'):
    pretrained.load('corrupt')
  monkeypatch.setenv(pretrained.ENV_VAR, str(tmp_path / 'missing'))
  assert pretrained.available() == []
  with pytest.raises(ValueError, match='Available: none'):
    pretrained.load('good')


def test_cifar_classifiers_beat_chance_on_held_out_images():
  """The last images of each class folder were held out of training (the run's validation)."""
  root = paths.data_root() / 'cifar10' / 'train'
  classes = sorted(p.name for p in root.iterdir())
  images = np.stack(
      [
          np.asarray(Image.open(root / c / f'{j:04d}.jpg').convert('RGB'))
          for c in classes
          for j in range(4980, 5000)
      ]
  ).astype(np.float32)
  labels = np.repeat(np.arange(len(classes)), 20)
  for name in (n for n in NAMES if pretrained.manifest(n)['task'] == 'classification'):
    model, variables, config = pretrained.load(name)
    x = (images / 255.0 - np.asarray(config.data.mean)) / np.asarray(config.data.std)
    logits = model.apply(variables, x.astype(np.float32), train=False)
    assert np.mean(np.argmax(logits, -1) == labels) > 0.25, name  # chance: 0.10
