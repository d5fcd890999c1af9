"""Training-step time with glibc's default allocator vs `host_memory.keep_freed_memory`.

    python -m benchmarks.host_malloc [--nets dxnet_k12_12,densenet_bc_k12_16] [--rounds 3]

The allocator is a process-wide setting made before JAX starts, so each measurement is a fresh
process (`DXNET_HOST_MALLOC=system` or `keep`); the two settings alternate, `--rounds` times each,
and the table shows medians (after 5 warm-up steps per process): wall time per step, minor page
faults per step and kernel (system) CPU time per step, which is where the faults' cost shows, and
the compile time, which the single arena makes longer (threads contend for it).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

from benchmarks import timing

_CHILD = r"""
import json, resource, sys, time
from dxnet_jax.xla_cpu import host_memory
host_memory.keep_freed_memory()
from benchmarks import steps
work = steps.Workload(sys.argv[1], int(sys.argv[2]), tuple(json.loads(sys.argv[3])))
start = time.perf_counter()
run = steps.jax_step(work)[0]
compile_s = time.perf_counter() - start
for _ in range(5):  # the kept heap settles within a few steps
  run().block_until_ready()
n = int(sys.argv[4])
before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(n):
  run().block_until_ready()
wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({'wall': wall / n, 'faults': (after.ru_minflt - before.ru_minflt) / n,
                  'sys': (after.ru_stime - before.ru_stime) / n,
                  'user': (after.ru_utime - before.ru_utime) / n, 'compile': compile_s}))
"""

_IMAGES = {
    'dxnet_k12_12': (64, (32, 32, 3)),
    'densenet_bc_k12_16': (64, (32, 32, 3)),
    'dxnet_denoise_444': (16, (50, 50, 1)),
}


def _measure(net: str, setting: str, steps_per_run: int) -> dict:
  batch, image = _IMAGES[net]
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(
      os.environ,
      DXNET_HOST_MALLOC=setting,
      PYTHONPATH=root + os.pathsep + os.environ.get('PYTHONPATH', ''),
  )
  out = subprocess.run(
      [sys.executable, '-c', _CHILD, net, str(batch), json.dumps(image), str(steps_per_run)],
      env=env,
      capture_output=True,
      text=True,
      check=True,
  )
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--nets', default='dxnet_k12_12,densenet_bc_k12_16')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--steps', type=int, default=3, help='timed steps per process')
  args = parser.parse_args()
  print(f'# {timing.machine()}', flush=True)
  rows = []
  for net in args.nets.split(','):
    if net not in _IMAGES:
      raise SystemExit(f'--nets: {net!r} is not one of {sorted(_IMAGES)}')
    results = {'system': [], 'keep': []}
    for _ in range(args.rounds):
      for setting in results:
        results[setting].append(_measure(net, setting, args.steps))
    base = statistics.median(r['wall'] for r in results['system'])
    for setting, runs in results.items():
      med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
      rows.append(
          [
              net,
              setting,
              med['wall'],
              med['wall'] / base,
              med['faults'],
              med['sys'],
              med['user'],
              med['compile'],
          ]
      )
    timing.print_table(
        [
            'net',
            'DXNET_HOST_MALLOC',
            's/step',
            'ratio',
            'faults/step',
            'sys s/step',
            'user s/step',
            'compile s',
        ],
        rows,
    )


if __name__ == '__main__':
  main()
