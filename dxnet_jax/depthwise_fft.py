"""The xUnit's depthwise convolution by FFTs: fast gradients where grouped convolutions are slow.

XLA's grouped convolution (`feature_group_count=C`) has a slow backward pass on CUDA (jax issue
13800) and on the CPU (jax issue 23713). By the convolution theorem the same function is
``irfft2(rfft2(x) * rfft2(flipped kernel))``, whose cost grows with log(H*W) instead of kh*kw,
and autodiff of the FFTs gives both gradients as FFTs too. It equals
`layers.depthwise_conv2d` up to float rounding.
"""

import jax
import jax.numpy as jnp


def depthwise_conv2d_fft(x: jax.Array, kernel: jax.Array, batch_slices: int = 1) -> jax.Array:
  """'SAME' per-channel convolution of `x [N, H, W, C]` with `kernel [kh, kw, 1, C]` (odd sizes).

  With length L = H + kh//2 per axis (x zero-padded at the end), the circular convolution's
  wrap-around only reads zeros for the outputs kept, so it equals the linear one. The kernel's
  spectrum is computed once; the image's per slice of `batch_slices` equal slices of the batch
  (independent FFTs, which a CPU runs side by side). Computes in float32 and returns the promoted
  input dtype.
  """
  kh, kw, _, _ = kernel.shape
  if kh % 2 == 0 or kw % 2 == 0:
    raise ValueError(f'Kernel size must be odd for SAME padding; got {kh}x{kw}.')
  n, h, w, _ = x.shape
  ph, pw = kh // 2, kw // 2
  size = (h + ph, w + pw)
  dtype = jnp.result_type(x, kernel)
  # Flipping turns the cross-correlation into a convolution; the kernel then sits at offset 0,
  # so output y[i] lands at index i + ph of the circular result.
  kernel_spectrum = jnp.fft.rfft2(kernel[::-1, ::-1, 0, :].astype(jnp.float32), s=size, axes=(0, 1))

  def convolve(xs):
    spectrum = jnp.fft.rfft2(xs.astype(jnp.float32), s=size, axes=(1, 2))
    y = jnp.fft.irfft2(spectrum * kernel_spectrum, s=size, axes=(1, 2))
    return y[:, ph : ph + h, pw : pw + w, :].astype(dtype)

  if batch_slices <= 1 or n % batch_slices:
    return convolve(x)
  rows = n // batch_slices
  return jnp.concatenate([convolve(x[i * rows : (i + 1) * rows]) for i in range(batch_slices)])
