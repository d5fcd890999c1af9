"""Every experiment config loads and builds its model, optimizer and (mock or real) data."""

import functools
import importlib.util
import json
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

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / 'configs'

# Every experiment config with each of its variants, as `file:argument` strings.
CONFIG_STRINGS = [
    *(f'cifar10.py:{m}' for m in ('densenet_bc_16', 'densenet_bc_26', 'dxnet_12', 'dxnet_19')),
    'cifar10.py:densenet_bc_16,budget',
    'cifar10.py:dxnet_12,budget',
    *(f'svhn.py:{m}' for m in ('densenet_bc_16', 'densenet_bc_26', 'dxnet_12', 'dxnet_19')),
    'imagenet.py:densenet121',
    'imagenet.py:dxnet105',
    *(f'sr.py:{m}' for m in ('dxnet16', 'dxnet32', 'densenet16', 'densenet32')),
    'sr.py:dxnet16,budget',
    *(f'denoise.py:{m}' for m in ('dxnet_444', 'dxnet_666', 'densenet_444', 'densenet_555')),
    'denoise.py:densenet_666',
    'denoise.py:dncnn',
    'denoise.py:dxnet_444_rgb',
    'denoise_blind.py:gray',
    'denoise_blind.py:rgb',
    'denoise.py:dxnet_444,sigma=25,budget',
    'denoise.py:densenet_555,gpu',
    'xunit_designs.py:relu,17',
    'xunit_designs.py:gaussian,5,features=32,budget',
    'quickstart.py',
]

# Where each config of the earlier one-file-per-experiment layout lives now. Their values are
# in tests/data/legacy_configs.json; a home must give the same config, but for the fields the
# `kernels` setting replaced.
HOMES = {
    **{
        f'{d}_{m}.py': f'{"svhn" if d == "svhn" else "cifar10"}.py:{m}'
        for d in ('cifar10', 'svhn')
        for m in ('densenet_bc_16', 'densenet_bc_26', 'dxnet_12', 'dxnet_19')
    },
    'imagenet_densenet121.py': 'imagenet.py:densenet121',
    'imagenet_dxnet105.py': 'imagenet.py:dxnet105',
    **{f'sr_{m}.py': f'sr.py:{m}' for m in ('dxnet16', 'dxnet32', 'densenet16', 'densenet32')},
    **{
        f'denoise_{m}.py{a}': f'denoise.py:{m}{a.replace(":", ",sigma=")}'
        for m in ('dxnet_444', 'dxnet_666', 'densenet_444', 'densenet_555', 'densenet_666', 'dncnn')
        for a in ('', ':25')
    },
    'budget/cifar10_densenet_bc_k12_455.py': 'cifar10.py:densenet_bc_16,budget',
    'budget/cifar10_dxnet_k12_444.py': 'cifar10.py:dxnet_12,budget',
    'budget/denoise_densenet_555.py': 'denoise.py:densenet_555,budget',
    'budget/denoise_dxnet_444.py': 'denoise.py:dxnet_444,budget',
    'budget/sr_densenet16.py': 'sr.py:densenet16,budget',
    'budget/sr_dxnet16.py': 'sr.py:dxnet16,budget',
    'gpu/denoise.py:dxnet_denoise_444,fft': 'denoise.py:dxnet_444,gpu',
    'gpu/denoise.py:densenet_denoise_555': 'denoise.py:densenet_555,gpu',
    'quickstart.py': 'quickstart.py',
    # The xUnit nets' cell order became the authors' (BN, biased Conv, xUnit); the earlier one
    # is an argument away.
    'xunit_designs.py': 'xunit_designs.py:dxnet,9,cell_order=conv_bn',
    'xunit_designs.py:relu,17': 'xunit_designs.py:relu,17',
    **{
        f'xunit_designs.py:{a}': f'xunit_designs.py:{a},cell_order=conv_bn'
        for a in ('gaussian,9', 'dxnet,5')
    },
}


def load(config_string: str):
  """`get_config(arg)` of `configs/<file>[:arg]`, as `python -m dxnet_jax.main` loads it."""
  name, _, arg = config_string.partition(':')
  path = CONFIG_DIR / name
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def test_every_earlier_config_has_a_home_with_the_same_recipe():
  legacy = json.loads((REPO / 'tests' / 'data' / 'legacy_configs.json').read_text())
  assert set(HOMES) == set(legacy)
  for old, home in HOMES.items():
    config = json.loads(load(home).to_json_best_effort())
    expected = legacy[old]
    # The same network: a home may state a field at its default, and `kernels` replaced the
    # depthwise implementation.
    model, expected_model = config.pop('model'), expected.pop('model')
    expected_model.pop('depthwise_impl', None)
    assert _module_fields(model) == _module_fields(expected_model), (old, home)
    # Data fields added since, at their defaults.
    assert config['data'].pop('level_map', False) is False, (old, home)
    assert config == expected, (old, home)


def _module_fields(model_config):
  module = models.create({k: v for k, v in model_config.items() if k != 'kernels'})
  fields = {
      f: getattr(module, f)
      for f in module.__dataclass_fields__
      if f not in ('parent', 'name', 'parts')
  }
  return fields, model_config.get('xunit_design', 'dxnet'), model_config.get('xunit_kernel', 9)


def test_every_config_file_is_tested():
  files = {p.name for p in CONFIG_DIR.glob('*.py')} - {'__init__.py', 'common.py'}
  assert files == {s.partition(':')[0] for s in CONFIG_STRINGS}


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


# Full-size nets (tracing one costs seconds, even abstractly) and the first builds of a kind of
# data pipeline: over the quick tier's limit.
SLOW_CONFIGS = {
    'svhn.py:dxnet_12',
    'svhn.py:dxnet_19',
    'svhn.py:densenet_bc_16',
    'svhn.py:densenet_bc_26',
    'imagenet.py:dxnet105',
    'imagenet.py:densenet121',
    'cifar10.py:dxnet_12',
    'cifar10.py:dxnet_19',
    'sr.py:dxnet16',
    'sr.py:dxnet32',
    'sr.py:dxnet16,budget',
    'denoise_blind.py:gray',
}


@pytest.mark.parametrize(
    'config_string',
    [pytest.param(c, marks=pytest.mark.slow) if c in SLOW_CONFIGS else c for c in CONFIG_STRINGS],
)
def test_config_builds_model_optimizer_and_data(config_string, tfds_dir, cifar_folder):
  config = load(config_string)
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
  assert load(f'denoise.py:densenet_444,sigma={arg}').data.sigma == float(arg)
  assert load(f'denoise.py:sigma={arg},dxnet_666').model.name == 'dxnet_denoise_666'


@pytest.mark.parametrize('arg', ['relu,5', 'dxnet,9', 'gaussian,7,features=16'])
def test_xunit_design_sweep_configs(arg):
  config = load(f'xunit_designs.py:{arg}')
  design, depth = arg.split(',')[:2]
  assert config.model.depth == int(depth)
  assert (config.model.activation == 'relu') == (design == 'relu')
  checks.validate_config(config, device_count=1)


@pytest.mark.parametrize(
    'config_string,message',
    [
        ('denoise.py:dxnet_444,sigma=0', 'sigma must be in'),
        ('denoise.py:dxnet_555', 'Unknown denoising model'),
        ('denoise.py:dxnet_444,noise=3', "'noise' is unknown"),
        ('denoise.py:dxnet_444,sigma=high', 'expected a float'),
        ('sr.py:dxnet16,extra_token', 'is not one of'),
        ('xunit_designs.py:swish,5', 'design must be one of'),
        ('cifar10.py:dxnet_19,budget', 'Unknown budget CIFAR-10 model'),
        ('cifar10.py:dxnet_12,budget=maybe', 'expected true or false'),
    ],
)
def test_a_bad_config_argument_fails_clearly(config_string, message):
  with pytest.raises(ValueError, match=message):
    load(config_string)


def test_fig4_xunit_nets_use_the_authors_cell_order_and_relu_nets_dncnns():
  for design, order in (('dxnet', 'bn_conv'), ('gaussian', 'bn_conv'), ('relu', 'conv_bn')):
    model = models.create(load(f'xunit_designs.py:{design},3,features=8').model)
    assert model.cell_order == order, design
  ours = models.create(load('xunit_designs.py:dxnet,3,cell_order=conv_bn').model)
  assert ours.cell_order == 'conv_bn'
