"""Forward and forward+backward time of each form of the xUnit's depthwise convolution.

    python -m benchmarks.depthwise [--kernel 9] [--reps 7] [--impls xla,fft,native,...]
                                   [--calls 1] [--json FILE]

Forms: 'xla' (`layers.depthwise_conv2d`, XLA's grouped convolution: the 'xla' kernels), 'fft'
(`depthwise_fft`: the 'gpu' kernels), 'cpu' (what the 'cpu' kernels run: the native C++ kernel
or FFTs over batch slices), 'native' (the C++ kernel alone; CPU only), and two forms kept only
for comparison: 'shift' (a sum of kh*kw shifted multiply-adds; XLA fuses its forward into one
loop, but its kernel gradient is kh*kw full-size reductions) and 'shift_fft' (the 'shift'
forward with FFT gradients).

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
from dxnet_jax import kernels
from dxnet_jax.depthwise_fft import depthwise_conv2d_fft
from dxnet_jax.layers import depthwise_conv2d as xla_depthwise


def _shift(x, kernel):
  """Sum over taps (i, j) of the padded input shifted by (i, j) times that tap's weights."""
  kh, kw, _, _ = kernel.shape
  _, h, w, _ = x.shape
  xp = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
  out = jnp.zeros_like(x)
  for i in range(kh):
    for j in range(kw):
      out = out + xp[:, i : i + h, j : j + w, :] * kernel[i, j, 0]
  return out


@jax.custom_vjp
def _shift_fft(x, kernel):
  return _shift(x, kernel)


def _shift_fft_forward(x, kernel):
  return _shift(x, kernel), (x, kernel)


def _shift_fft_backward(residuals, g):
  x, kernel = residuals
  _, vjp = jax.vjp(depthwise_conv2d_fft, x, kernel)
  return vjp(g)


_shift_fft.defvjp(_shift_fft_forward, _shift_fft_backward)


def _forms():
  forms = {'xla': xla_depthwise, 'fft': depthwise_conv2d_fft, 'shift': _shift}
  forms['shift_fft'] = _shift_fft
  if jax.default_backend() == 'cpu':
    from dxnet_jax.xla_cpu import conv, native_conv  # pylint: disable=g-import-not-at-top

    forms['cpu'] = conv.depthwise_conv2d
    forms['native'] = native_conv.depthwise_conv2d_native
  return forms


SHAPES = [  # (label, (N, H, W, C))
    ('CIFAR stage 1', (64, 32, 32, 12)),
    ('CIFAR stage 2', (64, 16, 16, 12)),
    ('CIFAR stage 3', (64, 8, 8, 12)),
    ('CIFAR stem', (64, 32, 32, 24)),
    ('denoising', (32, 50, 50, 16)),
]


def _forward_backward(convolve):
  def f(x, k, cotangent):
    y, vjp = jax.vjp(convolve, x, k)
    return y, vjp(cotangent)

  return jax.jit(f)


def main():
  kernels.prepare_process()
  forms = _forms()
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--kernel', type=int, default=9)
  parser.add_argument('--reps', type=int, default=7)
  parser.add_argument('--impls', default=','.join(forms), help=f'forms among {list(forms)}')
  parser.add_argument('--calls', type=int, default=1, help='calls per timed repetition')
  parser.add_argument('--json', help='also write {stage: {impl: {fwd, fwd+bwd}}} (ms) here')
  args = parser.parse_args()
  impls = args.impls.split(',')
  unknown = set(impls) - set(forms)
  if unknown:
    raise SystemExit(f'--impls: unknown {sorted(unknown)}; here: {list(forms)}')

  print(f'# depthwise {args.kernel}x{args.kernel} conv, {timing.machine()}')
  print(
      f"# kernels='auto' here is {kernels.resolve()!r}; times are medians of {args.reps} "
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
      fwd, fwd_bwd = jax.jit(forms[impl]), _forward_backward(forms[impl])
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
