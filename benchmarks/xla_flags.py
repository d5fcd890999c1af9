"""Training-step time under XLA:CPU compiler options, each compiled separately, timed in one run.

    python -m benchmarks.xla_flags [--net dxnet_k12_12] [--batch 64] [--image 32,32,3] [--reps 3]

Each candidate is the same training step (benchmarks/steps.py) compiled with one set of XLA
`compiler_options`; candidates that XLA rejects are reported, not fatal. Prints step time, the
ratio to the default options and the first step's loss (the options must not change results).
"""

import argparse

import numpy as np

from benchmarks import memory, steps, timing
from dxnet_jax import kernels

CANDIDATES = {
    'default': {},
    'use_onednn': {'xla_cpu_use_onednn': True},
    'onednn_custom_call': {'xla_cpu_experimental_onednn_custom_call': True},
    'fast_math': {'xla_cpu_enable_fast_math': True},
    'vector_width_512': {'xla_cpu_prefer_vector_width': 512},
    'concurrency_scheduler': {'xla_cpu_enable_concurrency_optimized_scheduler': True},
    'memory_scheduler': dict(memory.MEMORY_OPTIMIZED_SCHEDULER),
    'no_xnnpack': {'xla_cpu_use_xnnpack': False},
    'xnn_graph_greedy': {
        'xla_cpu_experimental_xnn_graph_fusion_mode': 'XNN_GRAPH_FUSION_MODE_GREEDY'
    },
    'xnn_graph_slinky': {
        'xla_cpu_experimental_xnn_graph_fusion_mode': 'XNN_GRAPH_FUSION_MODE_GREEDY_SLINKY'
    },
    'onednn_fusions': {
        'xla_cpu_use_onednn': True,
        'xla_cpu_experimental_onednn_fusion_type': 'LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE',
    },
    'ynn_no_reduce': {
        'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION,'
        'LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE'
    },
    'ynn_dots_convs_only': {
        'xla_cpu_experimental_ynn_fusion_type': 'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,'
        'LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION'
    },
    'no_ynn': {'xla_cpu_experimental_ynn_fusion_type': ''},
    'fast_runtime_preset': {'xla_cpu_opt_preset': 'CPU_OPT_PRESET_FAST_RUNTIME'},
    'tiling_propagation': {'xla_cpu_experimental_enable_tiling_propagation': True},
    'no_fusion_emitters': {'xla_cpu_use_fusion_emitters': False},
}


def main():
  kernels.prepare_process()
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--net', default='dxnet_k12_12')
  parser.add_argument('--batch', type=int, default=64)
  parser.add_argument('--image', default='32,32,3', help='H,W,C of one input image')
  parser.add_argument('--reps', type=int, default=3)
  parser.add_argument('--candidates', default=','.join(CANDIDATES))
  args = parser.parse_args()
  print(f'# {args.net} training step, batch {args.batch}; {timing.machine()}')
  work = steps.Workload(args.net, args.batch, tuple(map(int, args.image.split(','))))
  runs, losses, rejected = {}, {}, {}
  for name in args.candidates.split(','):
    try:
      run, _, _ = steps.jax_step(work, compiler_options=dict(CANDIDATES[name]))
    except Exception as e:  # pylint: disable=broad-except
      rejected[name] = str(e).splitlines()[0][:120]
      print(f'# {name}: rejected ({rejected[name]})', flush=True)
      continue
    losses[name] = float(np.asarray(run()))
    runs[name] = run
    print(f'# compiled {name}', flush=True)
  times = timing.time_interleaved(runs, reps=args.reps, warmup=0)
  base = times.get('default')
  rows = [
      [name, str(CANDIDATES[name]), t, t / base if base else float('nan'), losses[name]]
      for name, t in times.items()
  ]
  timing.print_table(['candidate', 'compiler options', 's/step', 'ratio', 'first loss'], rows)
  for name, why in rejected.items():
    print(f'{name}: rejected: {why}')


if __name__ == '__main__':
  main()
