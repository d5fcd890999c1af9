"""Depthwise 2-D convolution for the xUnit, with implementations that are fast on CPU.

`depthwise_conv2d(x, kernel, impl)` convolves each channel of `x [N, H, W, C]` with its own
`kh x kw` filter (`kernel [kh, kw, 1, C]`, the layout of flax's
`nn.Conv(features=C, feature_group_count=C)`, so parameters stay checkpoint-compatible), with SAME
padding, stride 1 and odd kernel sizes. It is a cross-correlation, like every `lax` convolution.

Why several implementations: XLA's grouped convolution (`feature_group_count=C`) is very slow on
CPU (jax issue 23713; its backward pass is also slow on CUDA, jax issue 13800), and the xUnit's
9x9 depthwise convolution decides the speed of a DxNet. All implementations compute the same
function; the tests check forward values and both gradients against 'xla'.

- 'xla':   `lax.conv_general_dilated(..., feature_group_count=C)`. The reference.
- 'shift': a sum of kh*kw shifted multiply-adds over the zero-padded input. XLA fuses the forward
           into one loop (fast), but differentiating it gives kh*kw separate full-size reductions
           for the kernel gradient (slow).
- 'fft':   circular convolution by real 2-D FFTs over (H, W) of length (H + kh//2, W + kw//2),
           the smallest length where the wrap-around only reads zero padding. Cost grows with
           log(H*W) instead of kh*kw; autodiff of the FFTs gives both gradients as FFTs too.
- 'shift_fft': a custom VJP with the 'shift' forward and FFT gradients; its residual is `x`
           (the 'fft' residual is the complex spectrum of `x`, about 1.3x larger at 32x32).
- 'native': C++ XLA:CPU kernels (`ops.native_conv`, built on first use): channels as vector
           lanes, register tiles of output pixels, each input vector loaded once per filter row;
           kernel gradient per task, summed in a fixed order. CPU only; filter widths 3-11.

Tried and dropped (numbers in docs/performance.md): a hand-written VJP for 'fft' (no faster than
autodiff), FFT lengths of H + kh - 1 (slower: 40 vs 36 at 32x32), channels-first layouts for
'shift' and 'fft' (the transposes cost more than they save), a Toeplitz (banded-matrix) matmul
along W (2-3x slower than 'fft'), and a weight gradient as a grouped convolution over the batch
(as slow as 'xla').

`impl='auto'` picks per backend (`jax.default_backend()`), see `default_impl`. Measured on a
2-core AMD EPYC CPU shared with other jobs (jax 0.10.2; `python -m benchmarks.depthwise --reps 3`),
9x9 kernel, forward+backward (output and both gradients) time as a ratio to 'xla' in the same
run (lower is faster), medians of interleaved repetitions:

    stage, N x H x W x C           xla (ms)   shift   fft     shift_fft
    CIFAR stage 1, 64x32x32x12     379        0.48    0.078   0.085
    CIFAR stage 2, 64x16x16x12     134        0.36    0.045   0.047
    CIFAR stage 3, 64x8x8x12       102        0.14    0.033   0.057
    CIFAR stem,    64x32x32x24     398        0.96    0.19    0.16
    denoising,     32x50x50x16     869        0.75    0.065   0.091

Forward only, 'shift' is the fastest (0.03-0.07x 'xla'), 'fft' close (0.03-0.2x); the backward
decides. 'native' then took 0.34-0.44x the time of 'fft', forward+backward, at every shape above
(AVX-512 EPYC, `python -m benchmarks.depthwise --reps 7 --impls fft,native`; e.g. 4.5 vs 10.7 ms
at CIFAR stage 1), so 'auto' is 'native' on the CPU where the kernels build, else 'fft'.

On one NVIDIA H200 (jax 0.11.2, CUDA 13; `python -m benchmarks.depthwise --calls 20`, 20 calls
per repetition, medians of 7), forward+backward as a ratio to 'xla' (cuDNN's grouped
convolution):

    stage, N x H x W x C           xla (ms)   shift   fft     shift_fft
    CIFAR stage 1, 64x32x32x12     0.447      4.0     0.61    0.80
    CIFAR stage 2, 64x16x16x12     0.121      4.2     1.93    1.72
    CIFAR stage 3, 64x8x8x12       0.870      3.6     0.30    0.26
    CIFAR stem,    64x32x32x24     0.724      1.9     0.46    0.70
    denoising,     32x50x50x16     0.960      0.37    0.20    0.60

Summed over a DxNet 12-12-12's 36 xUnits and its stem, 'fft' takes 9.6 ms against 'xla''s 18.0
ms, and 5x less at the denoising shape, so 'auto' is 'fft' on GPU too. Larger maps (DxNet-105's
56x56 stem xUnit) were not measured on GPU. TPU was not measured: 'auto' keeps 'xla' there (a
native kernel); time the others with benchmarks/depthwise.py.

On the CPU, 'fft' (and 'shift_fft''s input gradient) runs in slices of the batch, so that its FFTs
run on all cores (`fft_batch_slices`).

Inputs may be bfloat16: 'shift' and 'fft' compute in float32 and return the promoted input dtype.
"""

from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax

from dxnet_jax.ops import native_build, native_conv

IMPLEMENTATIONS = ('xla', 'shift', 'fft', 'shift_fft', 'native')

# Per-backend default of impl='auto', from the measurements in the module docstring.
_AUTO = {'cpu': 'native', 'gpu': 'fft'}
_AUTO_OTHER = 'xla'
# What 'auto' takes where 'native' cannot run (no C++ compiler, not float32, an odd filter width).
_NATIVE_FALLBACK = 'fft'


def default_impl(backend: Optional[str] = None) -> str:
  """The implementation `impl='auto'` uses on `backend` (default: `jax.default_backend()`).

  'native' only where the native kernels build (`ops.native_build`); filter widths and dtypes it
  does not take (`native_conv.supports_depthwise`) get 'fft' there.
  """
  impl = _AUTO.get(backend or jax.default_backend(), _AUTO_OTHER)
  if impl == 'native' and not native_build.available():
    return _NATIVE_FALLBACK
  return impl


def depthwise_conv2d(x: jax.Array, kernel: jax.Array, impl: str = 'auto') -> jax.Array:
  """Depthwise SAME convolution (cross-correlation) of `x [N,H,W,C]` with `kernel [kh,kw,1,C]`.

  Args:
    x: input, NHWC.
    kernel: one `kh x kw` filter per channel, flax's grouped-conv layout; kh and kw odd.
    impl: one of `IMPLEMENTATIONS` or 'auto' (see `default_impl`).

  Returns:
    `[N, H, W, C]` in the promoted dtype of `x` and `kernel`.
  """
  _check(x, kernel)
  dtype = jnp.result_type(x, kernel)
  if impl == 'auto':
    impl = default_impl()
    if impl == 'native' and not native_conv.supports_depthwise(dtype, kernel.shape):
      impl = _NATIVE_FALLBACK
  if impl not in _IMPLS:
    raise ValueError(
        f'Unknown depthwise implementation {impl!r}; choose one of {IMPLEMENTATIONS} or "auto".'
    )
  return _IMPLS[impl](x.astype(dtype), kernel.astype(dtype))


def _check(x, kernel):
  if x.ndim != 4 or kernel.ndim != 4:
    raise ValueError(f'Expected x [N,H,W,C] and kernel [kh,kw,1,C]; got {x.shape}, {kernel.shape}.')
  kh, kw, one, c = kernel.shape
  if one != 1 or c != x.shape[-1]:
    raise ValueError(
        f'Kernel {kernel.shape} is not depthwise for {x.shape[-1]} channels: '
        f'expected [kh, kw, 1, {x.shape[-1]}].'
    )
  if kh % 2 == 0 or kw % 2 == 0:
    raise ValueError(f'Kernel size must be odd for SAME padding; got {kh}x{kw}.')


def _xla(x, kernel):
  return lax.conv_general_dilated(
      x,
      kernel,
      window_strides=(1, 1),
      padding='SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=x.shape[-1],
  )


def _shift(x, kernel):
  """Sum over taps (i, j) of the padded input shifted by (i, j) times that tap's weights."""
  kh, kw, _, _ = kernel.shape
  _, h, w, _ = x.shape
  ph, pw = kh // 2, kw // 2
  xp = jnp.pad(x.astype(jnp.float32), ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  k = kernel[:, :, 0, :].astype(jnp.float32)
  out = jnp.zeros(x.shape, jnp.float32)
  for i in range(kh):
    for j in range(kw):
      out = out + xp[:, i : i + h, j : j + w, :] * k[i, j]
  return out.astype(x.dtype)


# XLA:CPU runs each FFT op on one thread, so a 2-core step's FFTs left a core idle (a DxNet
# 12-12-12 step's FFTs took 1.3x *longer* on 2 cores than on 1). Split into independent FFTs over
# slices of the batch, they run side by side: 4 slices at maps of 32x32 and more made the DxNet
# step 0.95-0.975x and the denoiser's (50x50) 0.92x as long (docs/performance.md). At 16x16 the
# gain was within noise, at 8x8 it lost (1.3x slower on the depthwise convolution alone).
CPU_FFT_BATCH_SLICES = 4
CPU_FFT_MIN_PIXELS = 32 * 32


def fft_batch_slices(shape, backend: Optional[str] = None) -> int:
  """Batch slices `_fft` uses for an input of `shape` [N, H, W, C] (1 = one FFT).

  On the CPU from `CPU_FFT_MIN_PIXELS`: the largest divisor of N up to `CPU_FFT_BATCH_SLICES`.
  """
  n, h, w, _ = shape
  if (backend or jax.default_backend()) != 'cpu' or h * w < CPU_FFT_MIN_PIXELS:
    return 1
  return next(s for s in range(min(CPU_FFT_BATCH_SLICES, max(n, 1)), 0, -1) if n % s == 0)


def _fft(x, kernel):
  """Convolution theorem: y = irfft2(rfft2(x) * rfft2(flipped kernel)), cropped.

  With length L = H + kh//2 per axis (x zero-padded at the end), the circular convolution's
  wrap-around only ever reads zeros for the outputs kept, so it equals the linear one. The
  kernel's spectrum is computed once; the image's per batch slice (`fft_batch_slices`).
  """
  kh, kw, _, _ = kernel.shape
  _, h, w, _ = x.shape
  ph, pw = kh // 2, kw // 2
  size = (h + ph, w + pw)
  # Flipping turns the cross-correlation into a convolution; the kernel then sits at offset 0,
  # so output y[i] lands at index i + ph of the circular result.
  kf = jnp.fft.rfft2(kernel[::-1, ::-1, 0, :].astype(jnp.float32), s=size, axes=(0, 1))

  def convolve(xs):
    xf = jnp.fft.rfft2(xs.astype(jnp.float32), s=size, axes=(1, 2))
    y = jnp.fft.irfft2(xf * kf, s=size, axes=(1, 2))
    return y[:, ph : ph + h, pw : pw + w, :].astype(x.dtype)

  slices = fft_batch_slices(x.shape)
  if slices == 1:
    return convolve(x)
  n = x.shape[0] // slices
  return jnp.concatenate([convolve(x[i * n : (i + 1) * n]) for i in range(slices)])


def _fft_kernel_grad(x, g, kh, kw):
  """d(sum(g * depthwise(x, k)))/dk[a, b, c] = sum_{n,h,w} xpad[n, h+a, w+b, c] g[n, h, w, c].

  A cross-correlation of x and g, summed over the batch in the frequency domain so that only one
  small inverse FFT per channel is needed.
  """
  _, h, w, _ = x.shape
  ph, pw = kh // 2, kw // 2
  size = (h + kh - 1, w + kw - 1)
  xp = jnp.pad(x.astype(jnp.float32), ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  xf = jnp.fft.rfft2(xp, axes=(1, 2))
  gf = jnp.fft.rfft2(g.astype(jnp.float32), s=size, axes=(1, 2))
  corr = jnp.fft.irfft2(jnp.sum(xf * jnp.conj(gf), axis=0), s=size, axes=(0, 1))
  return corr[:kh, :kw, None, :]


@jax.custom_vjp
def _shift_fft(x, kernel):
  return _shift(x, kernel)


def _shift_fft_fwd(x, kernel):
  return _shift(x, kernel), (x, kernel)


def _shift_fft_bwd(res, g):
  x, kernel = res
  # The input gradient is the convolution of g with the kernel rotated by 180 degrees.
  dx = _fft(g, kernel[::-1, ::-1])
  dk = _fft_kernel_grad(x, g, kernel.shape[0], kernel.shape[1])
  return dx.astype(x.dtype), dk.astype(kernel.dtype)


_shift_fft.defvjp(_shift_fft_fwd, _shift_fft_bwd)

_IMPLS = {
    'xla': _xla,
    'shift': _shift,
    'fft': _fft,
    'shift_fft': _shift_fft,
    'native': native_conv.depthwise_conv2d_native,
}
assert tuple(_IMPLS) == IMPLEMENTATIONS
