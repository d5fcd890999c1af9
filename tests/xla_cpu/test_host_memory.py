"""keep_freed_memory: jitted steps stop page-faulting their buffers in (glibc only)."""

import json
import os
import subprocess
import sys

import pytest

from dxnet_jax.xla_cpu import host_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A jitted op with a fresh 64 MB output on every call: minor page faults per call (the median of
# 7 calls, counted after warm-up: the kept heap grows over the first 7-10 calls, as buffers are
# freed asynchronously, and a CI rehearsal once saw 2 of 5 later calls still fault every page),
# in a fresh process (the allocator settings must precede JAX's worker threads).
_PROBE = r"""
import json, resource
from dxnet_jax.xla_cpu import host_memory
applied = host_memory.keep_freed_memory()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: x * 2.0 + 1.0)
x = jnp.ones((16, 1024, 1024), jnp.float32)
for _ in range(15):
  f(x).block_until_ready()
per_call = []
for _ in range(7):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  f(x).block_until_ready()
  per_call.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
faults = sorted(per_call)[len(per_call) // 2]
print(json.dumps({'applied': applied, 'faults': faults, 'pages': x.nbytes // 4096}))
"""


def _probe(choice):
  env = dict(
      os.environ,
      DXNET_HOST_MALLOC=choice,
      JAX_PLATFORMS='cpu',
      PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
  )
  out = subprocess.run(
      [sys.executable, '-c', _PROBE],
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
      check=True,
  ).stdout
  return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow  # a Python process per allocator
@pytest.mark.skipif(host_memory._glibc() is None, reason='needs glibc (Linux)')
def test_keep_stops_page_faults_that_system_allocator_takes_every_call():
  system = _probe('system')
  keep = _probe('keep')
  assert not system['applied'] and keep['applied']
  # glibc's mmap for a 64 MB block faults in every page on every call ...
  assert system['faults'] > 0.5 * system['pages']
  # ... kept memory is reused: few (the VM's memory reclaim can take back some of the kept
  # pages between calls; one CI rehearsal under load saw 20% once, against over 50% without).
  assert keep['faults'] < 0.3 * keep['pages']


def test_unknown_setting_is_a_clear_error(monkeypatch):
  monkeypatch.setenv(host_memory.ENV_VAR, 'fast')
  with pytest.raises(ValueError, match='DXNET_HOST_MALLOC.*auto.*keep.*system'):
    host_memory.keep_freed_memory()


def test_system_setting_leaves_the_allocator_alone(monkeypatch):
  monkeypatch.setenv(host_memory.ENV_VAR, 'system')
  assert host_memory.keep_freed_memory() is False


class _RecordingLibc:
  """Stands in for glibc: records mallopt calls and accepts them."""

  def __init__(self):
    self.calls = []

  def mallopt(self, param, value):
    self.calls.append((param, value))
    return 1


@pytest.fixture
def fresh_state(monkeypatch):
  """No earlier keep_freed_memory call in this process, no pinned platforms, a fake glibc."""
  import jax

  monkeypatch.setattr(host_memory, '_state', {'applied': None})
  monkeypatch.delenv('JAX_PLATFORMS', raising=False)
  libc = _RecordingLibc()
  monkeypatch.setattr(host_memory, '_glibc', lambda: libc)
  pinned = jax.config.jax_platforms
  jax.config.update('jax_platforms', None)
  yield libc
  jax.config.update('jax_platforms', pinned)


@pytest.mark.parametrize(
    'platforms, expected',
    [('cpu', None), ('cuda', 'cuda'), ('cuda,cpu', 'cuda'), (' tpu ', 'tpu'), ('cpu,cuda', None)],
)
def test_pinned_platforms_decide_the_expected_accelerator(
    fresh_state, monkeypatch, platforms, expected
):
  monkeypatch.setenv('JAX_PLATFORMS', platforms)
  assert host_memory.expected_accelerator() == expected


def test_an_installed_pjrt_plugin_means_an_accelerator(fresh_state, monkeypatch, tmp_path):
  import importlib

  plugin = tmp_path / 'jax_plugins' / 'xla_fake_gpu'
  plugin.mkdir(parents=True)
  (plugin / '__init__.py').write_text('')
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.delitem(sys.modules, 'jax_plugins', raising=False)
  importlib.invalidate_caches()
  assert host_memory.expected_accelerator() == 'xla_fake_gpu'
  # Pinning the CPU wins over an installed plugin.
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  assert host_memory.expected_accelerator() is None


def test_auto_applies_on_the_cpu_only(fresh_state, monkeypatch):
  monkeypatch.setenv('JAX_PLATFORMS', 'cuda')
  assert host_memory.keep_freed_memory() is False
  assert fresh_state.calls == []  # compilation on a GPU host would contend for one arena
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  assert host_memory.keep_freed_memory() is True
  assert (host_memory._M_ARENA_MAX, 1) in fresh_state.calls


def test_keep_applies_whatever_the_backend(fresh_state, monkeypatch):
  monkeypatch.setenv('JAX_PLATFORMS', 'cuda')
  monkeypatch.setenv(host_memory.ENV_VAR, 'keep')
  assert host_memory.keep_freed_memory() is True
  assert len(fresh_state.calls) == 3
