"""Every experiment config loads and builds its model, optimizer and (mock or real) data."""

import functools
import importlib.util
from pathlib import Path

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from dxnet_jax import data as data_lib
from dxnet_jax import models
from dxnet_jax.data import paths
from dxnet_jax.train import checks
from dxnet_jax.train import optim

CONFIG_DIR = Path(__file__).resolve().parents[1] / 'configs'
CONFIGS = sorted(CONFIG_DIR.rglob('*.py'))


def load(path, arg=None):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config() if arg is None else module.get_config(arg)


def test_every_experiment_of_the_paper_has_a_config():
  names = {p.stem for p in CONFIGS}
  for dataset in ('cifar10', 'svhn'):
    for model in ('densenet_bc_16', 'densenet_bc_26', 'dxnet_12', 'dxnet_19'):
      assert f'{dataset}_{model}' in names
  assert {
      'imagenet_dxnet105',
      'imagenet_densenet121',
      'sr_dxnet16',
      'sr_dxnet32',
      'sr_densenet16',
      'sr_densenet32',
      'denoise_dxnet_444',
      'xunit_designs',
      'quickstart',
  } <= names


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory):
  """tfds metadata with split sizes, so mock_data's splits exist offline."""
  root = tmp_path_factory.mktemp('tfds')
  for name, splits in {
      'svhn_cropped': ('train', 'test', 'extra'),
      'imagenet2012': ('train', 'validation'),
  }.items():
    builder = tfds.builder(name, data_dir=root)
    builder.info.set_splits(
        tfds.core.SplitDict(
            [tfds.core.SplitInfo(name=s, shard_lengths=[8], num_bytes=0) for s in splits]
        )
    )
    builder.data_path.mkdir(parents=True, exist_ok=True)
    builder.info.write_to_directory(builder.data_path)
  return str(root)


@pytest.fixture(scope='module')
def cifar_folder(tmp_path_factory):
  """A CIFAR-shaped folder (train/<class>/*.png) standing in for the 50,000 shared JPEGs."""
  root = tmp_path_factory.mktemp('cifar')
  rng = np.random.default_rng(0)
  for c in range(10):
    folder = root / 'train' / f'class{c}'
    folder.mkdir(parents=True)
    for i in range(4):
      Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f'{i}.png')
  return str(root)


@functools.lru_cache(maxsize=None)
def _restoration_data(task, data_json):
  """Real shared-data pipelines, built once per distinct data config."""
  import ml_collections  # pylint: disable=g-import-not-at-top

  config = ml_collections.ConfigDict({'task': task, 'data': __import__('json').loads(data_json)})
  return data_lib.build(config, global_batch_size=8, seed=0)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_config_builds_model_optimizer_and_data(path, tfds_dir, cifar_folder):
  config = load(path)
  checks.validate_config(config, device_count=1)
  model = models.create(config.model)
  abstract = models.init_variables(model, (1,) + tuple(config.input_shape), abstract=True)
  tx = optim.make_optimizer(config.optim, total_steps=1000)
  jax.eval_shape(tx.init, abstract['params'])
  with config.unlocked():
    config.data.prefetch = 0
  if config.task == 'classification':
    if config.data.source == 'folder':
      config.data.root, config.data.holdout = cifar_folder, 10
      data = data_lib.build(config, global_batch_size=8, seed=0)
    else:
      config.data.data_dir = tfds_dir
      with tfds.testing.mock_data(num_examples=8, data_dir=tfds_dir):
        data = data_lib.build(config, global_batch_size=8, seed=0)
        batch = next(data.train.iterate(0))
    if config.data.source == 'folder':
      batch = next(data.train.iterate(0))
  else:
    if not paths.data_root().is_dir():
      pytest.skip(f'shared data not found at {paths.data_root()}')
    data = _restoration_data(config.task, config.data.to_json())
    batch = next(data.train.iterate(0))
  assert batch['inputs'].shape[0] == 8
  if config.task != 'super_resolution':
    assert (
        batch['inputs'].shape[1:]
        == tuple(
            config.data.patch_size if config.task == 'denoising' else config.data.image_size
            for _ in range(2)
        )
        + batch['inputs'].shape[3:]
    )


@pytest.mark.parametrize('arg', ['15', '25', '50'])
def test_denoising_configs_take_the_noise_level(arg):
  config = load(CONFIG_DIR / 'denoise_dxnet_444.py', arg)
  assert config.data.sigma == float(arg)


@pytest.mark.parametrize('arg', ['relu,5', 'dxnet,9', 'gaussian,7'])
def test_xunit_design_sweep_configs(arg):
  config = load(CONFIG_DIR / 'xunit_designs.py', arg)
  design, depth = arg.split(',')
  assert config.model.depth == int(depth)
  assert (config.model.activation == 'relu') == (design == 'relu')
  checks.validate_config(config, device_count=1)


def test_a_bad_config_argument_fails_clearly():
  with pytest.raises(ValueError, match='sigma'):
    load(CONFIG_DIR / 'denoise_dxnet_444.py', '0')
  with pytest.raises(ValueError, match='design'):
    load(CONFIG_DIR / 'xunit_designs.py', 'swish,5')


@pytest.mark.parametrize('arg', ['dxnet_denoise_444,fft', 'densenet_denoise_555'])
def test_gpu_denoising_config_takes_model_and_depthwise_impl(arg):
  config = load(CONFIG_DIR / 'gpu' / 'denoise.py', arg)
  model_name, _, impl = arg.partition(',')
  assert config.model.name == model_name and config.batch_size == 64
  assert config.model.get('depthwise_impl') == (impl or None)
  checks.validate_config(config, device_count=1)
  models.init_variables(models.create(config.model), (1, 40, 40, 1), abstract=True)


def test_gpu_denoising_config_refuses_other_tasks():
  with pytest.raises(ValueError, match='denoising model'):
    load(CONFIG_DIR / 'gpu' / 'denoise.py', 'dxnet_k12_12')
