"""The persistent compilation cache: where it lives, whom it leaves alone, what it never reuses."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from dxnet_jax import compilation_cache

REPO = pathlib.Path(__file__).resolve().parents[1]

# Compiles a tiny DxNet's forward pass with each kernels setting named in argv, counting the
# persistent cache's hits and misses per setting. The variables are host arrays of the init's
# shapes (abstract init), so the forward pass is the one program each setting compiles.
_COMPILE = """
import json, sys
import jax, numpy as np
from jax import monitoring
import dxnet_jax
from dxnet_jax import models
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
events = []
monitoring.register_event_listener(lambda name, **_: events.append(name))
counts = {}
for kernels in sys.argv[1:]:
  del events[:]
  model = models.create('dxnet_denoise_444', blocks=(1,), growth_rate=4, stem_features=8,
                        kernels=kernels)
  abstract = models.init_variables(model, (1, 16, 16, 1), abstract=True)
  variables = jax.tree.map(lambda a: np.ones(a.shape, a.dtype), abstract)
  x = np.ones((1, 16, 16, 1), np.float32)
  jax.block_until_ready(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))
  counts[kernels] = {k: events.count('/jax/compilation_cache/' + k)
                     for k in ('cache_hits', 'cache_misses')}
print(json.dumps({'dir': jax.config.jax_compilation_cache_dir, 'counts': counts}))
"""


def _python(code, env, *args):
  env = {k: v for k, v in os.environ.items() if not k.startswith('JAX_COMPILATION_CACHE')} | env
  env['PYTHONPATH'] = str(REPO)
  done = subprocess.run(
      [sys.executable, '-c', code, *args], env=env, capture_output=True, text=True, check=False
  )
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(done.stdout.strip().splitlines()[-1])


def test_folder_follows_the_environment_variable(monkeypatch, tmp_path):
  monkeypatch.delenv(compilation_cache.ENV_VAR, raising=False)
  assert compilation_cache.folder() == compilation_cache.default_folder()
  assert compilation_cache.default_folder().parts[-3:] == ('.cache', 'dxnet_jax', 'jax')
  monkeypatch.setenv(compilation_cache.ENV_VAR, str(tmp_path))
  assert compilation_cache.folder() == tmp_path
  for off in ('off', 'OFF', '0'):
    monkeypatch.setenv(compilation_cache.ENV_VAR, off)
    assert compilation_cache.folder() is None


def test_machine_key_follows_the_cpu_flags(tmp_path):
  avx2, avx512 = tmp_path / 'avx2', tmp_path / 'avx512'
  avx2.write_text('processor\t: 0\nflags\t\t: fpu sse2 avx2\n')
  avx512.write_text('processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n')
  key = compilation_cache.machine_key
  assert key(avx2) == key(avx2) != key(avx512)


@pytest.mark.slow  # three processes import JAX
def test_import_enables_the_cache_unless_the_user_chose(tmp_path):
  show = 'import json, jax, dxnet_jax; print(json.dumps(jax.config.jax_compilation_cache_dir))'
  ours = _python(show, {compilation_cache.ENV_VAR: str(tmp_path / 'ours')})
  assert ours == str(tmp_path / 'ours' / compilation_cache.machine_key())
  assert _python(show, {compilation_cache.ENV_VAR: 'off'}) is None
  theirs = {'JAX_COMPILATION_CACHE_DIR': str(tmp_path / 'theirs')}
  assert _python(show, {compilation_cache.ENV_VAR: str(tmp_path / 'ours'), **theirs}) == str(
      tmp_path / 'theirs'
  )


@pytest.mark.slow  # two processes compile a net with each of two settings
def test_entries_are_never_shared_between_kernels_settings(tmp_path):
  env = {compilation_cache.ENV_VAR: str(tmp_path)}
  first = _python(_COMPILE, env, 'xla', 'cpu')
  assert first['dir'].startswith(str(tmp_path))
  # The 'cpu' forward pass, compiled after the 'xla' one wrote its entries, found none of them.
  assert first['counts']['xla']['cache_hits'] == 0 and first['counts']['xla']['cache_misses'] > 0
  assert first['counts']['cpu']['cache_hits'] == 0 and first['counts']['cpu']['cache_misses'] > 0
  # A second process finds each setting's own entries: the cache is in use.
  second = _python(_COMPILE, env, 'cpu', 'xla')
  for kernels in ('cpu', 'xla'):
    assert second['counts'][kernels]['cache_hits'] > 0
    assert second['counts'][kernels]['cache_misses'] == 0


def test_remembered_values_are_computed_once_per_key_and_code(tmp_path, monkeypatch):
  monkeypatch.setenv(compilation_cache.ENV_VAR, str(tmp_path))
  calls = []
  compute = lambda value: lambda: calls.append(value) or value
  assert compilation_cache.remembered('radius', 'net a', compute(66)) == 66
  assert compilation_cache.remembered('radius', 'net a', compute(0)) == 66  # read, not computed
  assert compilation_cache.remembered('radius', 'net b', compute(5)) == 5
  assert calls == [66, 5]
  monkeypatch.setattr(compilation_cache, 'code_version', lambda: 'changed sources')
  assert compilation_cache.remembered('radius', 'net a', compute(67)) == 67
  monkeypatch.setenv(compilation_cache.ENV_VAR, 'off')
  assert compilation_cache.remembered('radius', 'net a', compute(68)) == 68
  assert calls == [66, 5, 67, 68]
  assert len(list((tmp_path / 'values' / 'radius').glob('*.json'))) == 3
