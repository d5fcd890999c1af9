"""Forward and forward+backward time of each depthwise-convolution implementation.

    python -m benchmarks.depthwise [--kernel 9] [--reps 7] [--impls xla,shift,fft,shift_fft]
                                   [--calls 1] [--json FILE]

Shapes are those of the paper's nets: the CIFAR DxNet's three stages (batch 64, k=12 channels,
and the 24-channel stem xUnit) and the denoising DxNet (batch 32, 50x50 patches, k=16).
fwd+bwd computes the output and both gradients (input and kernel) for a fixed cotangent, as
inside a training step. Ratios are to 'xla' measured in the same run. On a GPU one call takes
well under a millisecond, so time `--calls 20` back-to-back calls per repetition (times are per
call).
"""

import argparse
import json

import jax
import jax.numpy as jnp

from benchmarks import timing
from dxnet_jax import host_memory
from dxnet_jax.ops import IMPLEMENTATIONS, default_impl, depthwise_conv2d

SHAPES = [  # (label, (N, H, W, C))
    ('CIFAR stage 1', (64, 32, 32, 12)),
    ('CIFAR stage 2', (64, 16, 16, 12)),
    ('CIFAR stage 3', (64, 8, 8, 12)),
    ('CIFAR stem', (64, 32, 32, 24)),
    ('denoising', (32, 50, 50, 16)),
]


def _forward(impl):
  return jax.jit(lambda x, k: depthwise_conv2d(x, k, impl))


def _forward_backward(impl):
  def f(x, k, cotangent):
    y, vjp = jax.vjp(lambda a, b: depthwise_conv2d(a, b, impl), x, k)
    return y, vjp(cotangent)

  return jax.jit(f)


def main():
  host_memory.keep_freed_memory()
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--kernel', type=int, default=9)
  parser.add_argument('--reps', type=int, default=7)
  parser.add_argument('--impls', default=','.join(IMPLEMENTATIONS))
  parser.add_argument('--calls', type=int, default=1, help='calls per timed repetition')
  parser.add_argument('--json', help='also write {stage: {impl: {fwd, fwd+bwd}}} (ms) here')
  args = parser.parse_args()
  impls = args.impls.split(',')

  print(f'# depthwise {args.kernel}x{args.kernel} conv, {timing.machine()}')
  print(
      f"# impl='auto' here is {default_impl()!r}; times are medians of {args.reps} "
      'interleaved repetitions, ms'
  )
  rows, measured = [], {}
  for label, shape in SHAPES:
    kx, kk = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(kx, shape)
    k = jax.random.normal(kk, (args.kernel, args.kernel, 1, shape[-1])) / args.kernel
    cot = jnp.ones(shape)
    fns = {}
    for impl in impls:
      fwd, fwd_bwd = _forward(impl), _forward_backward(impl)
      fns[(impl, 'fwd')] = _repeat(lambda fwd=fwd: fwd(x, k), args.calls)
      fns[(impl, 'fwd+bwd')] = _repeat(lambda fwd_bwd=fwd_bwd: fwd_bwd(x, k, cot), args.calls)
    t = {
        key: seconds / args.calls
        for key, seconds in timing.time_interleaved(fns, reps=args.reps).items()
    }
    base = impls[0]
    for impl in impls:
      f, fb = t[(impl, 'fwd')], t[(impl, 'fwd+bwd')]
      measured.setdefault(label, {})[impl] = {'fwd': f * 1e3, 'fwd+bwd': fb * 1e3}
      rows.append(
          [
              label,
              'x'.join(map(str, shape)),
              impl,
              f * 1e3,
              f / t[(base, 'fwd')],
              fb * 1e3,
              fb / t[(base, 'fwd+bwd')],
          ]
      )
  timing.print_table(
      [
          'stage',
          'N x H x W x C',
          'impl',
          'fwd ms',
          f'fwd / {impls[0]}',
          'fwd+bwd ms',
          f'fwd+bwd / {impls[0]}',
      ],
      rows,
  )
  if args.json:
    with open(args.json, 'w') as f:
      json.dump({'machine': timing.machine(), 'kernel': args.kernel, 'ms': measured}, f, indent=1)


def _repeat(fn, calls: int):
  """`fn` called `calls` times back to back; returns the last result (to be waited for)."""

  def run():
    for _ in range(calls - 1):
      fn()
    return fn()

  return run


if __name__ == '__main__':
  main()
