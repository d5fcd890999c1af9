"""keep_freed_memory: jitted steps stop page-faulting their buffers in (glibc only)."""
import json
import os
import subprocess
import sys

import pytest

from dxnet_jax import host_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A jitted op with a fresh 64 MB output on every call: minor page faults per call, counted after
# warm-up (the kept heap grows over the first 7-10 calls, as buffers are freed asynchronously),
# in a fresh process (the allocator settings must precede JAX's worker threads).
_PROBE = r'''
import json, resource
from dxnet_jax import host_memory
applied = host_memory.keep_freed_memory()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: x * 2.0 + 1.0)
x = jnp.ones((16, 1024, 1024), jnp.float32)
for _ in range(15):
  f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
  f(x).block_until_ready()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
print(json.dumps({'applied': applied, 'faults': faults, 'pages': x.nbytes // 4096}))
'''


def _probe(choice):
  env = dict(os.environ, DXNET_HOST_MALLOC=choice, JAX_PLATFORMS='cpu',
             PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  out = subprocess.run([sys.executable, '-c', _PROBE], env=env, capture_output=True, text=True,
                       timeout=300, check=True).stdout
  return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(host_memory._glibc() is None, reason='needs glibc (Linux)')
def test_keep_stops_page_faults_that_system_allocator_takes_every_call():
  system = _probe('system')
  keep = _probe('keep')
  assert not system['applied'] and keep['applied']
  # glibc's mmap for a 64 MB block faults in every page on every call ...
  assert system['faults'] > 0.5 * system['pages']
  # ... kept memory is reused: almost none.
  assert keep['faults'] < 0.1 * keep['pages']


def test_unknown_setting_is_a_clear_error(monkeypatch):
  monkeypatch.setenv(host_memory.ENV_VAR, 'fast')
  with pytest.raises(ValueError, match='DXNET_HOST_MALLOC.*keep.*system'):
    host_memory.keep_freed_memory()


def test_system_setting_leaves_the_allocator_alone(monkeypatch):
  monkeypatch.setenv(host_memory.ENV_VAR, 'system')
  assert host_memory.keep_freed_memory() is False
