"""Suite-wide settings (test-only; nothing here changes what dxnet_jax computes).

XLA:CPU's LLVM backend at its default optimisation level spends most of this suite's time:
compiling the jitted init of a 2-layer DxNet (a 1,900-line HLO module) took 22 s on the CI's
2-core machine, against 3.4 s at `--xla_backend_optimization_level=1` (2.2 s at 0). The tests
run tiny nets for a few steps, so generated-code speed hardly matters, while results agree
within float rounding (every cross-check compares two programs compiled the same way).
The flag goes into XLA_FLAGS before any test module imports JAX, so the subprocesses the tests
start (which copy os.environ, or append their device count to its XLA_FLAGS) inherit it too.
Set DXNET_TEST_XLA_OPT_LEVEL to another level (or '' to leave XLA's default) to run the suite
as compiled for production.
"""

import os
import pathlib
import sys

import pytest

# Config files import their shared pieces as `configs.common`, from the repository root.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

_LEVEL = os.environ.get('DXNET_TEST_XLA_OPT_LEVEL', '1')
_FLAGS = os.environ.get('XLA_FLAGS', '')
if _LEVEL and 'xla_backend_optimization_level' not in _FLAGS:
  os.environ['XLA_FLAGS'] = f'{_FLAGS} --xla_backend_optimization_level={_LEVEL}'.strip()


# One persistent JAX compilation cache for the whole run, shared by the xdist workers and every
# subprocess the tests start: many tests start `python -m dxnet_jax.main` (or a script) several
# times on the same tiny config, and each start would otherwise compile the same train and eval
# steps again. The cache only stores executables that XLA would compile identically; it lives in
# a fresh folder per run, made by the first process that loads this file (the xdist controller,
# whose environment the workers inherit), and removed by it at the end.
_CACHE_OWNER = 'DXNET_TEST_JAX_CACHE' not in os.environ
if _CACHE_OWNER and 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  import tempfile

  os.environ['DXNET_TEST_JAX_CACHE'] = tempfile.mkdtemp(prefix='dxnet-test-jax-cache-')
  os.environ['JAX_COMPILATION_CACHE_DIR'] = os.environ['DXNET_TEST_JAX_CACHE']
  # dxnet_jax leaves a JAX_COMPILATION_CACHE_DIR as it is; a subprocess started without one
  # falls back to $DXNET_JAX_CACHE, which stays inside the run's folder, never the user's.
  os.environ.setdefault('DXNET_JAX_CACHE', os.environ['DXNET_TEST_JAX_CACHE'])
  # The native XLA:CPU kernels (ops/native_build.py) are built there too, once per run, rather
  # than into the user's ~/.cache.
  os.environ.setdefault(
      'DXNET_JAX_NATIVE_CACHE', os.path.join(os.environ['DXNET_TEST_JAX_CACHE'], 'native')
  )
else:
  _CACHE_OWNER = False


def pytest_unconfigure(config):  # pylint: disable=unused-argument
  if _CACHE_OWNER:
    import shutil

    shutil.rmtree(os.environ['DXNET_TEST_JAX_CACHE'], ignore_errors=True)


def pytest_collection_modifyitems(items):
  """Modules holding slow tests first (order otherwise kept, so a module's tests and its
  fixtures stay together): pytest-xdist hands out tests in collection order, so a long test or
  group collected last (the sweep's, one worker's for minutes) would run alone at the end while
  the other worker idles; started first, the short ones fill in beside it."""
  slow_modules = {item.module for item in items if item.get_closest_marker('slow')}
  items.sort(key=lambda item: item.module not in slow_modules)


def _random_variables(abstract, seed=0):
  """Generic values for a model's abstract variables (`init_variables(..., abstract=True)`),
  made on the host: no initialiser is compiled. A jitted init compiles the whole forward pass
  (as long as compiling the training step of a tiny net), which tests that compare two programs
  on the same variables need not pay. Kernels ~ N(0, 1/fan_in) as He-style initialisers draw
  them; BatchNorm scales and running variances in [0.5, 1.5]; biases and running means ~
  N(0, 0.1): no value sits at an initial constant, so a part that mixes up scale and bias, or
  running and batch statistics, changes the result."""
  import jax
  import numpy as np

  rng = np.random.default_rng(seed)

  def leaf(path, shape):
    name = path[-1].key
    if name == 'kernel':
      value = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape.shape[:-1])), shape.shape)
    elif name in ('scale', 'var'):
      value = rng.uniform(0.5, 1.5, shape.shape)
    elif name in ('bias', 'mean'):
      value = rng.normal(0.0, 0.1, shape.shape)
    else:
      raise ValueError(f'no rule for the variable {jax.tree_util.keystr(path)}')
    return jax.numpy.asarray(value, shape.dtype)

  return jax.tree_util.tree_map_with_path(leaf, abstract)


@pytest.fixture(scope='session')
def random_variables():
  return _random_variables


def _write_tiny_model(root, name, config):
  """A tiny net (two 1-layer blocks, k=4) of the model of `config` with `_random_variables`,
  written where `pretrained` finds `name` under `root`, with the model.json and model card
  `pretrained.export` writes: a stand-in for a shipped model that loads in a second."""
  import json  # pylint: disable=g-import-not-at-top
  from dxnet_jax import models  # pylint: disable=g-import-not-at-top
  from dxnet_jax import pretrained  # pylint: disable=g-import-not-at-top

  config.model.update(blocks=(1, 1), growth_rate=4, stem_features=8)
  model = models.create(config.model.to_dict(), kernels='xla')
  shape = (1, 24, 24, config.input_shape[-1])
  variables = _random_variables(models.init_variables(model, shape, abstract=True))
  variables = {k: v for k, v in variables.items() if k in ('params', 'batch_stats')}
  info = {
      'name': name,
      'model': config.model.name,
      'task': config.task,
      'parameters': models.count_params(variables['params']),
      'weights_dtype': 'float32',
      'command': 'a test',
      'config': config.to_dict(),
  }
  folder = pathlib.Path(root) / name
  folder.mkdir(parents=True)
  (folder / pretrained.WEIGHTS).write_bytes(pretrained.to_bytes(variables, 'float32'))
  (folder / pretrained.MANIFEST).write_text(json.dumps(info, indent=1) + '\n')
  (folder / pretrained.CARD).write_text(pretrained.model_card(info))
  return folder


@pytest.fixture(scope='session')
def write_tiny_model():
  """`_write_tiny_model(root, name, config)`: a tiny random-weight stand-in for a shipped model."""
  return _write_tiny_model
