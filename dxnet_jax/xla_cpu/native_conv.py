"""Convolutions through the native XLA:CPU kernels (xla_cpu/native/): the dense layers' kxk
convolution and the xUnit's depthwise one, stride 1, 'SAME', computed in float32.

Why: on the CPU these two were where dxnet_jax trailed PyTorch's oneDNN most, whichever way XLA
computed them (docs/performance.md). Each is one C++ kernel that accumulates register tiles
straight from the input, plus a second for the kernel gradient; the data gradient is the same
convolution with the filter turned by 180 degrees (and, for the dense one, its channel axes
swapped).

Every native call has a pure-JAX JVP rule (`lax.conv_general_dilated`), so forward-over-reverse
derivatives (Hessian-vector products of the flatness analysis) and reverse-over-reverse both
work; first-order gradients take the native backward.
"""

import functools

import jax
import jax.numpy as jnp

from dxnet_jax.xla_cpu import native_build

_DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')
# Filter widths the depthwise kernel is compiled for (depthwise_conv.cc).
DEPTHWISE_WIDTHS = (3, 5, 7, 9, 11)


def _xla_dense(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME', dimension_numbers=_DIMENSIONS)


def _xla_depthwise(x, kernel):
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), 'SAME', dimension_numbers=_DIMENSIONS, feature_group_count=x.shape[-1]
  )


def _dense_flipped(kernel):
  """[k, k, Cin, Cout] -> the [k, k, Cout, Cin] filter whose convolution is the data gradient."""
  return jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))


def _depthwise_flipped(kernel):
  return kernel[::-1, ::-1]


def _native_pair(target, xla_conv, flipped):
  """A native convolution (custom call `target`; `target + '_kernel_grad'` for its kernel
  gradient) with a native backward and pure-JAX JVPs."""

  def ffi(name, shape, *args):
    out = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.ffi.ffi_call(name, out, vmap_method='sequential')(*args)

  @jax.custom_jvp
  def conv(x, kernel):
    return ffi(target, x.shape[:-1] + kernel.shape[-1:], x, kernel)

  @conv.defjvp
  def _(primals, tangents):
    (x, kernel), (dx, dkernel) = primals, tangents
    return conv(x, kernel), xla_conv(dx, kernel) + xla_conv(x, dkernel)

  def xla_kernel_grad(x, g, shape):
    return jax.vjp(lambda k: xla_conv(x, k), jnp.zeros(shape, x.dtype))[1](g)[0]

  @functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
  def kernel_grad(x, g, shape):
    # The kernel's shape reaches the C++ side as a zero array of that shape (no data read).
    return ffi(target + '_kernel_grad', shape, x, g, jnp.zeros(shape, jnp.float32))

  @kernel_grad.defjvp
  def _(shape, primals, tangents):
    (x, g), (dx, dg) = primals, tangents
    return kernel_grad(x, g, shape), xla_kernel_grad(dx, g, shape) + xla_kernel_grad(x, dg, shape)

  @jax.custom_vjp
  def convolve(x, kernel):
    return conv(x, kernel)

  def forward(x, kernel):
    return conv(x, kernel), (x, kernel)

  def backward(residuals, g):
    x, kernel = residuals
    g = g.astype(jnp.float32)
    return conv(g, flipped(kernel)), kernel_grad(x, g, kernel.shape)

  convolve.defvjp(forward, backward)
  return convolve


_dense = _native_pair('dxnet_conv2d', _xla_dense, _dense_flipped)
_depthwise = _native_pair('dxnet_depthwise_conv2d', _xla_depthwise, _depthwise_flipped)


# Input dtypes the native kernels take: they compute in float32 and return the input dtype, as
# the 'fft' and 'shift' depthwise forms do.
DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


def _runs_here(dtype) -> bool:
  return (
      jnp.dtype(dtype) in map(jnp.dtype, DTYPES)
      and jax.default_backend() == 'cpu'
      and native_build.available()
  )


def supports(x_dtype, kernel_shape) -> bool:
  """Whether `conv2d_native` runs here: CPU, a `DTYPES` input, odd square kernel, kernels built."""
  k, k2 = kernel_shape[:2]
  return k == k2 and k % 2 == 1 and _runs_here(x_dtype)


def supports_depthwise(x_dtype, kernel_shape) -> bool:
  """Whether `depthwise_conv2d_native` runs here: CPU, a `DTYPES` input, width in
  DEPTHWISE_WIDTHS, kernels built."""
  kh, kw = kernel_shape[:2]
  return kh % 2 == 1 and kw in DEPTHWISE_WIDTHS and _runs_here(x_dtype)


# Where the native kernel loses on the CPU (isolated forward+backward times in
# docs/performance.md, "Native kernels"): 1-3 input channels widened to 32 or more (the
# restoration nets' stems; XLA's convolution 0.7-0.9x native's time) and 1-3 output channels
# (the tile's vector lanes mostly idle; the matmul form 0.6-0.8x).
MIN_OUTPUTS = 4
NARROW_INPUTS, WIDE_OUTPUTS = 4, 32


def preferred(kernel_shape, dtype) -> bool:
  """Whether the CPU's parts take the native kernel for a [k, k, Cin, Cout] convolution of `dtype`
  inputs: where it runs (`supports`) and was not measured slower."""
  _, _, cin, cout = kernel_shape
  if cout < MIN_OUTPUTS or (cin < NARROW_INPUTS and cout >= WIDE_OUTPUTS):
    return False
  return supports(dtype, kernel_shape)


def _in_float32(op, x, kernel):
  if jax.default_backend() != 'cpu':
    raise ValueError(
        'The native kernels run on the CPU only (XLA:CPU custom calls); this process computes '
        f"on {jax.default_backend()!r}: use kernels='auto' or 'xla'."
    )
  if not native_build.available():
    raise RuntimeError(
        f'The native convolution needs the native kernels: {native_build.unavailable_reason()}.'
        ' Install a C++ compiler (g++), or let the CPU parts fall back to their pure-JAX forms.'
    )
  dtype = jnp.result_type(x, kernel)
  if dtype not in map(jnp.dtype, DTYPES):
    raise ValueError(
        f'The native kernels take {[jnp.dtype(d).name for d in DTYPES]} inputs, got {dtype}.'
    )
  return op(x.astype(jnp.float32), kernel.astype(jnp.float32)).astype(dtype)


def conv2d_native(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`x [N, H, W, Cin]` convolved with `kernel [k, k, Cin, Cout]` (odd k, stride 1, 'SAME')."""
  k, k2, cin, _ = kernel.shape
  if k != k2 or k % 2 == 0 or cin != x.shape[-1]:
    raise ValueError(
        f'Expected an odd square [k, k, {x.shape[-1]}, Cout] kernel, got ' f'{kernel.shape}.'
    )
  return _in_float32(_dense, x, kernel)


def depthwise_conv2d_native(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Depthwise `x [N, H, W, C]` with `kernel [kh, kw, 1, C]` (odd kh, kw in DEPTHWISE_WIDTHS);
  the caller (`conv.depthwise_conv2d`) has checked the shapes."""
  if kernel.shape[1] not in DEPTHWISE_WIDTHS:
    raise ValueError(
        f'The native depthwise kernel supports filter widths {DEPTHWISE_WIDTHS}, got '
        f'{kernel.shape[1]}; `conv.depthwise_conv2d` takes the FFT form for the others.'
    )
  return _in_float32(_depthwise, x, kernel)
