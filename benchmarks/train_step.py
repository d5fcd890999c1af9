"""Training-step time of dxnet_jax vs a PyTorch implementation of the same nets, one table.

    python -m benchmarks.train_step [--nets cifar|restoration|imagenet|all|name,...] [--reps 5]

Each net's steps are timed interleaved in one process (median of `--reps` after a warm-up), so
the ratios hold even on a busy machine. JAX rows: the model as `dxnet_jax.models.create` builds
it, once per `--kernels` setting, and '+remat' with `remat=True` (each dense layer recomputed in
the backward pass). PyTorch runs channels_last at 1 and 2
intra-op threads; the faster is the reference (on a loaded 2-core machine 2 threads can be many
times slower than 1). On a GPU (JAX's default backend 'gpu' and a CUDA build of torch) PyTorch
runs channels_last on the GPU with `cudnn.benchmark`, one row 'torch cuda'. Parameter counts of
both implementations are asserted equal.
"""

import argparse
import json
import time

import jax

from benchmarks import steps, timing
from dxnet_jax import kernels as kernels_lib

WORKLOADS = {
    'cifar': [
        steps.Workload('densenet_bc_k12_16', 64, (32, 32, 3)),
        steps.Workload('dxnet_k12_12', 64, (32, 32, 3)),
    ],
    'restoration': [
        steps.Workload('dxnet_denoise_444', 16, (50, 50, 1)),
        steps.Workload('dxnet16_sr', 8, (24, 24, 3)),
    ],
    'imagenet': [
        steps.Workload('densenet121', 4, (224, 224, 3)),
        steps.Workload('dxnet105', 4, (224, 224, 3)),
    ],
}
HEADERS = [
    'net',
    'batch',
    'variant',
    'jax s/step',
    'jax img/s',
    'torch s/step',
    'torch best',
    'jax / torch',
]


def _workloads(spec: str):
  """'all', or comma-separated groups (cifar, restoration, imagenet) and net names."""
  known = {w.name: [w] for ws in WORKLOADS.values() for w in ws}
  known.update(WORKLOADS, all=[w for ws in WORKLOADS.values() for w in ws])
  unknown = [n for n in spec.split(',') if n not in known]
  if unknown:
    raise SystemExit(f'--nets: unknown {unknown}; choose from {sorted(known)}')
  return [w for n in spec.split(',') for w in known[n]]


def _compiled_step(work, label, **overrides):
  """`steps.jax_step(...)[0]`, printing how long building and compiling it took.

  On a GPU, compiling (cuDNN autotuning included) can take longer than timing; the printed
  seconds show where a time-limited run went.
  """
  start = time.perf_counter()
  run = steps.jax_step(work, **overrides)[0]
  print(f'# {work.name}: {label} compiled in {time.perf_counter() - start:.1f} s', flush=True)
  return run


def _jax_variants(work, kernels, remat=True, cpu_devices=1):
  """{label: run} for the JAX steps of one workload: one per `kernels` setting.

  '+remat' too unless `remat` is False, and the first setting's step split across
  `cpu_devices` virtual CPU devices when that is above 1.
  """
  variants = {}
  for setting in kernels:
    label = f'jax {setting}'
    variants[label] = _compiled_step(work, label, kernels=setting)
  base = kernels[0]
  if cpu_devices > 1 and jax.default_backend() == 'cpu':
    label = f'jax {base} {cpu_devices} CPU devices'
    variants[label] = _compiled_step(
        work, label, devices=jax.devices('cpu')[:cpu_devices], kernels=base
    )
  if not remat:
    return variants
  label = f'jax {base} +remat'
  try:
    variants[label] = _compiled_step(work, label, remat=True, kernels=base)
  except Exception as error:  # pylint: disable=broad-except
    # One variant failing to compile (a new JAX, an accelerator) must not lose the table.
    print(f'# {work.name}: {label} failed: {error!r}', flush=True)
  return variants


def main():
  kernels_lib.prepare_process()
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--nets', default='all')
  parser.add_argument('--reps', type=int, default=5)
  parser.add_argument(
      '--kernels',
      default=None,
      help="comma-separated `kernels` settings to time (default: what 'auto' picks here)",
  )
  parser.add_argument(
      '--torch-device', default='auto', help="'cpu', 'cuda' or 'auto' (cuda when JAX runs on a GPU)"
  )
  parser.add_argument(
      '--no-remat', action='store_true', help="skip the '+remat' rows (one compile less per net)"
  )
  parser.add_argument(
      '--cpu-devices',
      type=int,
      default=1,
      help='also time the step split across this many virtual CPU devices '
      '(data parallel on one host; CPU backend only)',
  )
  parser.add_argument('--json', help='also write the rows to this file')
  args = parser.parse_args()
  if args.cpu_devices > 1:
    # Before anything starts the backend (torch's device choice below asks JAX for it).
    jax.config.update('jax_num_cpu_devices', args.cpu_devices)
  torch_variants = _torch_variants(args.torch_device)
  settings = (args.kernels or kernels_lib.resolve()).split(',')
  print(f'# training step, {timing.machine()}')
  print(f'# medians of {args.reps} interleaved steps after one warm-up; ratio = jax / torch')
  rows = []
  for work in _workloads(args.nets):
    fns = _jax_variants(work, settings, remat=not args.no_remat, cpu_devices=args.cpu_devices)
    jax_params = steps.jax_param_count(work)
    for label, kwargs in torch_variants.items():
      fns[label], torch_params = steps.torch_step(work, **kwargs)
    assert torch_params == jax_params, (work.name, torch_params, jax_params)
    print(
        f'# {work.name}: {jax_params:,} parameters in both; timing {len(fns)} step functions',
        flush=True,
    )
    t = timing.time_interleaved(fns, reps=args.reps)
    torch_label = min(torch_variants, key=t.get)
    ref = t[torch_label]
    shape = f'{work.batch}x' + 'x'.join(map(str, work.image))
    for label, seconds in t.items():
      if label.startswith('torch'):
        continue
      rows.append(
          [work.name, shape, label, seconds, work.batch / seconds, ref, torch_label, seconds / ref]
      )
    for label in torch_variants:
      if label != torch_label:
        rows.append(
            [work.name, shape, f'{label} (not the best)', t[label], '', ref, torch_label, '']
        )
    # The table so far after every net: a long run stopped early still leaves its rows.
    timing.print_table(HEADERS, rows)
    if args.json:
      with open(args.json, 'w') as f:
        json.dump({'machine': timing.machine(), 'headers': HEADERS, 'rows': rows}, f, indent=1)


def _torch_variants(device: str) -> dict:
  """{label: torch_step kwargs}: two CPU thread counts, or the GPU."""
  if device == 'auto':
    device = 'cuda' if jax.default_backend() == 'gpu' else 'cpu'
  if device == 'cpu':
    return {f'torch {n}t': {'threads': n} for n in (1, 2)}
  return {f'torch {device}': {'device': device}}


if __name__ == '__main__':
  main()
