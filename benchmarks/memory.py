"""Peak training-step memory from XLA's compiled memory analysis, with and without remat.

    python -m benchmarks.memory [--nets densenet_bc_k12_16,dxnet_k12_12] [--batch 64]
        [--image 32,32,3] [--time] [--settings 0,1]

For each net and setting the full training step (benchmarks/steps.py) is compiled and XLA's
`memory_analysis()` read: peak = temp + argument + output bytes (donated arguments alias outputs,
so this over-counts the state once; the alias column says by how much). Settings: remat off/on
(the models' `remat=True`: with the CPU's parts, `xla_cpu.remat.ordered_remat` around each dense layer; and
`remat='speed'`, its faster, larger variant, last), the same
with flax's plain `nn.remat` for comparison, and XLA:CPU's default vs memory-optimised scheduler.
`--time` also times each step (interleaved medians) for the time ratio to the first setting.
"""

import argparse
import contextlib
from unittest import mock

import flax.linen as nn

from benchmarks import steps, timing
from dxnet_jax import kernels
from dxnet_jax.xla_cpu import dense_block

MiB = 2**20
# XLA:CPU's scheduler that orders instructions to lower peak live memory.
MEMORY_OPTIMIZED_SCHEDULER = {'xla_cpu_scheduler_type': 'CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED'}


def _settings():
  """(label, remat, compiler options, use flax's nn.remat instead of ordered_remat)."""
  mem = MEMORY_OPTIMIZED_SCHEDULER
  return [
      ('remat off', False, {}, False),
      ('remat on', True, {}, False),
      ('remat off, mem. scheduler', False, mem, False),
      ('remat on, mem. scheduler', True, mem, False),
      ('flax nn.remat', True, {}, True),
      ('flax nn.remat, mem. scheduler', True, mem, True),
      ("remat='speed'", 'speed', {}, False),
  ]


def _flax_remat(module_class, static_argnums, sync):
  """flax's `nn.remat` in `ordered_remat`'s place (it has no `sync` choice)."""
  del sync
  return nn.remat(module_class, static_argnums=static_argnums)


def main():
  kernels.prepare_process('cpu')
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--nets', default='densenet_bc_k12_16,dxnet_k12_12')
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--image', default='32,32,3', help='H,W,C of one input image')
  parser.add_argument('--time', action='store_true')
  parser.add_argument('--reps', type=int, default=3)
  parser.add_argument(
      '--settings', default='', help='comma-separated indices into the settings list (default: all)'
  )
  args = parser.parse_args()
  print(f'# training-step memory (XLA memory analysis), batch {args.batch}; {timing.machine()}')
  rows = []
  for name in args.nets.split(','):
    work = steps.Workload(name, args.batch, tuple(map(int, args.image.split(','))))
    results, runs = [], {}
    chosen = _settings()
    if args.settings:
      chosen = [chosen[int(i)] for i in args.settings.split(',')]
    for label, remat, options, flax_remat in chosen:
      swap = (
          mock.patch.object(dense_block, 'ordered_remat', _flax_remat)
          if flax_remat
          else contextlib.nullcontext()
      )
      with swap:
        run, compiled, _ = steps.jax_step(
            work,
            remat=remat,
            compiler_options=dict(options),
            kernels='cpu',
        )
      m = compiled.memory_analysis()
      results.append((label, m))
      runs[label] = run
      print(f'# compiled {name} [{label}]', flush=True)
    times = timing.time_interleaved(runs, reps=args.reps) if args.time else {}
    base = results[0][1]
    peak = lambda m: m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes
    for label, m in results:
      row = [
          name,
          label,
          m.temp_size_in_bytes / MiB,
          m.argument_size_in_bytes / MiB,
          m.output_size_in_bytes / MiB,
          m.alias_size_in_bytes / MiB,
          peak(m) / MiB,
          peak(base) / peak(m),
      ]
      if times:
        row += [times[label], times[label] / times[results[0][0]]]
      rows.append(row)
  headers = [
      'net',
      'setting',
      'temp MiB',
      'args MiB',
      'out MiB',
      'alias MiB',
      'peak MiB',
      'peak reduction x',
  ]
  if args.time:
    headers += ['s/step', 'time ratio']
  timing.print_table(headers, rows)


if __name__ == '__main__':
  main()
