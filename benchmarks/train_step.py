"""Training-step time of dxnet_jax vs a PyTorch implementation of the same nets, one table.

    python -m benchmarks.train_step [--nets cifar|restoration|imagenet|all|name,...] [--reps 5]

Each net's steps are timed interleaved in one process (median of `--reps` after a warm-up), so
the ratios hold even on a busy machine. JAX rows: the model as `dxnet_jax.models.create` builds
it (for DxNets once per depthwise implementation), and '+remat' with `remat=True`
(`ops.remat.ordered_remat` around each dense layer). PyTorch runs channels_last at 1 and 2
intra-op threads; the faster is the reference (on a loaded 2-core machine 2 threads can be many
times slower than 1). Parameter counts of both implementations are asserted equal.
"""
import argparse

from benchmarks import steps, timing
from dxnet_jax.ops import IMPLEMENTATIONS, default_impl

WORKLOADS = {
    'cifar': [steps.Workload('densenet_bc_k12_16', 64, (32, 32, 3)),
              steps.Workload('dxnet_k12_12', 64, (32, 32, 3))],
    'restoration': [steps.Workload('dxnet_denoise_444', 16, (50, 50, 1)),
                    steps.Workload('dxnet16_sr', 8, (24, 24, 3))],
    'imagenet': [steps.Workload('densenet121', 4, (224, 224, 3)),
                 steps.Workload('dxnet105', 4, (224, 224, 3))],
}


def _workloads(spec: str):
  if spec == 'all':
    return [w for ws in WORKLOADS.values() for w in ws]
  if spec in WORKLOADS:
    return WORKLOADS[spec]
  known = {w.name: w for ws in WORKLOADS.values() for w in ws}
  return [known[n] for n in spec.split(',')]


def _jax_variants(work, impls):
  """{label: run} for the JAX steps of one workload."""
  has_xunit = bool(steps.impl_kwargs(work.name, 'auto'))
  variants = {}
  for impl in (impls if has_xunit else [None]):
    label = f'jax {impl}' if impl else 'jax'
    if impl == default_impl():
      label += ' (auto)'
    variants[label] = steps.jax_step(work, **steps.impl_kwargs(work.name, impl))[0]
  impl = default_impl() if has_xunit else None
  label = f'jax {impl} +remat' if impl else 'jax +remat'
  variants[label] = steps.jax_step(work, remat=True, **steps.impl_kwargs(work.name, impl))[0]
  return variants


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--nets', default='all')
  parser.add_argument('--reps', type=int, default=5)
  parser.add_argument('--impls', default=','.join(IMPLEMENTATIONS),
                      help='depthwise implementations to time inside the DxNets')
  args = parser.parse_args()
  print(f'# training step, {timing.machine()}')
  print(f'# medians of {args.reps} interleaved steps after one warm-up; ratio = jax / torch')
  rows = []
  for work in _workloads(args.nets):
    fns = _jax_variants(work, args.impls.split(','))
    jax_params = steps.jax_param_count(work)
    for threads in (1, 2):
      fns[f'torch {threads}t'], torch_params = steps.torch_step(work, threads=threads)
    assert torch_params == jax_params, (work.name, torch_params, jax_params)
    print(f'# {work.name}: {jax_params:,} parameters in both; timing {len(fns)} steps',
          flush=True)
    t = timing.time_interleaved(fns, reps=args.reps)
    torch_label = min(('torch 1t', 'torch 2t'), key=t.get)
    ref = t[torch_label]
    shape = f'{work.batch}x' + 'x'.join(map(str, work.image))
    for label, seconds in t.items():
      if label.startswith('torch'):
        continue
      rows.append([work.name, shape, label, seconds, work.batch / seconds, ref,
                   torch_label, seconds / ref])
    rows.append([work.name, shape, 'torch (other threads)',
                 t['torch 2t' if torch_label == 'torch 1t' else 'torch 1t'], '', ref,
                 torch_label, ''])
  timing.print_table(['net', 'batch', 'variant', 'jax s/step', 'jax img/s', 'torch s/step',
                      'torch best', 'jax / torch'], rows)


if __name__ == '__main__':
  main()
