"""Optional packages: without them the core still imports, and each feature that needs one says
which extra installs it."""

import json
import pkgutil
import subprocess
import sys

import pytest

import dxnet_jax
from dxnet_jax import _optional

# Every optional package, made unimportable in a fresh interpreter (`sys.modules[name] = None`).
OPTIONAL = (
    'tensorflow',
    'tensorflow_datasets',
    'tensorboard',
    'matplotlib',
    'skimage',
    'nbformat',
    'nbclient',
)

# feature -> (the call that needs an optional package, the extra that must be named)
FEATURES = {
    'tfds source': ("sources.tfds_builder('cifar10', None, None, False)", 'tfds'),
    'tfds images': ("restoration.tfds_images(None, 'train', 1)", 'tfds'),
    'imagenet pipeline': ('imagenet._tf()', 'tfds'),
    'bundled photos': ("embedded.load('skimage:test', 1)", 'quickstart'),
    'cam overlay': ('cam.overlay(np.zeros((4, 4)), np.zeros((4, 4)))', 'plots'),
    'figures': ('figures.pyplot()', 'plots'),
    'notebook runner': ("notebook.execute('tour.ipynb')", 'test'),
}

_SCRIPT = """
import importlib, json, sys
for name in json.loads(sys.argv[1]):
  sys.modules[name] = None
failed = {}
for module in json.loads(sys.argv[2]):
  try:
    importlib.import_module(module)
  except Exception as error:
    failed[module] = repr(error)
import numpy as np
from dxnet_jax.analysis import cam, figures, notebook
from dxnet_jax.data import embedded, imagenet, restoration, sources
messages = {}
for feature, call in json.loads(sys.argv[3]).items():
  try:
    eval(call)
    messages[feature] = None
  except ImportError as error:
    messages[feature] = str(error)
print(json.dumps({'failed_imports': failed, 'messages': messages}))
"""


def _all_modules():
  return sorted(
      info.name
      for info in pkgutil.walk_packages(dxnet_jax.__path__, 'dxnet_jax.')
      if not info.name.endswith('__main__')
  )


@pytest.fixture(scope='module')
def without_extras():
  """Imports every dxnet_jax module and calls each feature with all optional packages absent."""
  calls = {feature: call for feature, (call, _) in FEATURES.items()}
  args = [json.dumps(OPTIONAL), json.dumps(_all_modules()), json.dumps(calls)]
  done = subprocess.run(
      [sys.executable, '-c', _SCRIPT, *args], capture_output=True, text=True, timeout=300
  )
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.splitlines()[-1])


def test_every_module_imports_without_the_optional_packages(without_extras):
  assert 'dxnet_jax.train.loop' in _all_modules()
  assert without_extras['failed_imports'] == {}


@pytest.mark.parametrize('feature', sorted(FEATURES))
def test_feature_names_the_extra_that_installs_its_package(without_extras, feature):
  message = without_extras['messages'][feature]
  assert message is not None, f'{feature} ran without its optional package'
  assert f'pip install "dxnet_jax[{FEATURES[feature][1]}]"' in message
  assert any(repr(name) in message for name in OPTIONAL), message


def test_require_returns_the_module_or_names_the_extra():
  assert _optional.require('json', 'all', 'reading JSON') is json
  with pytest.raises(
      ImportError, match=r'fancy plots needs .*no_such_package_x.*dxnet_jax\[plots\]'
  ):
    _optional.require('no_such_package_x.sub', 'plots', 'fancy plots')
