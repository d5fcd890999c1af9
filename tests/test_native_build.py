"""The native kernels' build: several processes needing it at once build it once."""

import os
import pathlib
import stat
import subprocess
import sys
import textwrap

import pytest

# A stand-in compiler: answers --version and -E with the real one, and "compiles" and "links" by
# logging the call, sleeping (so concurrent builds overlap) and writing the output file.
FAKE_CXX = """\
#!/bin/bash
for arg in "$@"; do
  if [ "$arg" = --version ] || [ "$arg" = -E ]; then exec g++ "$@"; fi
done
echo "$$ $*" >> "{log}"
sleep 1
out=""
while [ $# -gt 0 ]; do
  if [ "$1" = -o ]; then out="$2"; fi
  shift
done
echo built > "$out"
"""

BUILD = textwrap.dedent("""
    from dxnet_jax.xla_cpu import native_build
    print(native_build.build().name)
""")


@pytest.mark.slow  # several Python processes
def test_concurrent_processes_build_the_library_once(tmp_path):
  log = tmp_path / 'calls.log'
  cxx = tmp_path / 'fake-g++'
  cxx.write_text(FAKE_CXX.format(log=log))
  cxx.chmod(cxx.stat().st_mode | stat.S_IXUSR)
  env = dict(
      os.environ,
      CXX=str(cxx),
      DXNET_JAX_NATIVE_CACHE=str(tmp_path / 'native'),
      DXNET_JAX_CACHE=str(tmp_path / 'jax'),
      PYTHONPATH=os.pathsep.join([str(pathlib.Path(__file__).parents[1]), *sys.path]),
  )
  procs = [
      subprocess.Popen([sys.executable, '-c', BUILD], env=env, stdout=subprocess.PIPE, text=True)
      for _ in range(3)
  ]
  names = {proc.communicate()[0].strip() for proc in procs}
  assert all(proc.returncode == 0 for proc in procs)
  assert len(names) == 1 and (tmp_path / 'native' / names.pop()).read_text() == 'built\n'
  calls = log.read_text().splitlines()
  sources = sorted(
      p.name for p in (pathlib.Path(__file__).parents[1] / 'dxnet_jax/xla_cpu/native').glob('*.cc')
  )
  compiles = [c for c in calls if ' -c ' in c]
  links = [c for c in calls if ' -c ' not in c]
  assert sorted(c.split(' -c ')[1].split()[0].rsplit('/', 1)[1] for c in compiles) == sources
  assert len(links) == 1, calls
  # The sources compile at once, in separate processes.
  assert len({c.split()[0] for c in compiles}) == len(sources)
