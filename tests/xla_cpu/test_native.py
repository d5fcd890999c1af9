"""The native XLA:CPU convolutions equal XLA's, in every derivative; the build degrades cleanly."""

import ctypes
import pathlib
import platform
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dxnet_jax import models
from dxnet_jax.xla_cpu import conv, native_build, native_conv

pytestmark = pytest.mark.skipif(
    not native_build.available(), reason=f'no native kernels: {native_build.unavailable_reason()}'
)


def _lax_dense(x, kernel):
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )


def _lax_depthwise(x, kernel):
  return jax.lax.conv_general_dilated(
      x,
      kernel,
      (1, 1),
      'SAME',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=x.shape[-1],
  )


def _random(shape, seed):
  return jax.random.normal(jax.random.PRNGKey(seed), shape)


def _assert_value_and_grads_match(ours, ref, x, kernel, tol=1e-5):
  y = ref(x, kernel)
  g = _random(y.shape, 7)
  (y1, vjp1), (y0, vjp0) = jax.vjp(ours, x, kernel), jax.vjp(ref, x, kernel)
  for a, b in zip((y1, *vjp1(g)), (y0, *vjp0(g))):
    assert a.shape == b.shape and a.dtype == b.dtype
    scale = float(jnp.abs(b).max()) or 1.0
    np.testing.assert_allclose(a / scale, b / scale, atol=tol, rtol=0)


# Channel counts below, at and above a vector (4, 8 or 16 floats by CPU) and several vector
# blocks (50); maps narrower than the register tile, wider than it with a remainder, and smaller
# than the window; the CIFAR dense layer's 48 -> 12 shape.
@pytest.mark.parametrize(
    'shape,k,cout',
    [
        ((2, 7, 9, 5), 3, 12),
        ((2, 5, 4, 12), 3, 48),
        ((1, 3, 2, 3), 5, 17),
        ((2, 1, 1, 4), 3, 2),
        ((3, 8, 11, 48), 3, 12),
        ((2, 6, 11, 20), 1, 50),
        ((1, 4, 19, 6), 9, 7),
    ],
)
def test_dense_convolution_matches_xla(shape, k, cout):
  x, kernel = _random(shape, 0), _random((k, k, shape[-1], cout), 1)
  _assert_value_and_grads_match(jax.jit(native_conv.conv2d_native), _lax_dense, x, kernel)


@pytest.mark.parametrize(
    'shape,ksize',
    [
        ((2, 7, 9, 5), (9, 9)),
        ((2, 5, 4, 12), (3, 3)),
        ((1, 3, 2, 17), (5, 7)),
        ((2, 1, 1, 4), (3, 3)),
        ((3, 8, 8, 12), (9, 9)),
        ((2, 6, 11, 33), (1, 11)),
        ((2, 20, 21, 24), (9, 9)),
    ],
)
def test_depthwise_convolution_matches_xla(shape, ksize):
  x, kernel = _random(shape, 0), _random((*ksize, 1, shape[-1]), 1)
  _assert_value_and_grads_match(
      jax.jit(native_conv.depthwise_conv2d_native), _lax_depthwise, x, kernel
  )


def test_kernel_gradients_are_bitwise_repeatable():
  # Partial sums are added in a fixed order whatever thread ran them: a resumed training run
  # must repeat an uninterrupted one exactly (tests/test_train.py).
  x, g = _random((16, 16, 16, 24), 0), _random((16, 16, 16, 12), 1)
  dense = jax.jit(
      lambda x, g: jax.vjp(native_conv.conv2d_native, x, jnp.ones((3, 3, 24, 12)))[1](g)[1]
  )
  depthwise_grad = jax.jit(
      lambda x: jax.vjp(native_conv.depthwise_conv2d_native, x, jnp.ones((9, 9, 1, 24)))[1](x)[1]
  )
  for f, args in ((dense, (x, g)), (depthwise_grad, (x,))):
    first = np.asarray(f(*args))
    for _ in range(5):
      np.testing.assert_array_equal(np.asarray(f(*args)), first)


@pytest.mark.parametrize(
    'ours,ref,kernel_shape',
    [
        (native_conv.conv2d_native, _lax_dense, (3, 3, 3, 2)),
        (native_conv.depthwise_conv2d_native, _lax_depthwise, (5, 5, 1, 3)),
    ],
)
def test_second_derivatives_match_xla(ours, ref, kernel_shape):
  # The flatness analysis takes Hessian-vector products (forward over reverse); reverse over
  # reverse must work too.
  x, kernel = _random((2, 6, 6, 3), 0), _random(kernel_shape, 1)
  v = jnp.ones_like(kernel)

  def loss(conv):
    return lambda k: jnp.sum(jnp.sin(conv(x, k)))

  for f in (
      lambda conv: jax.jvp(jax.grad(loss(conv)), (kernel,), (v,))[1],
      lambda conv: jax.grad(lambda k: jnp.vdot(jax.grad(loss(conv))(k), v))(kernel),
  ):
    np.testing.assert_allclose(f(ours), f(ref), rtol=1e-4, atol=1e-4)


def test_vmap_and_half_precision_inputs():
  x, kernel = _random((3, 5, 5, 4), 0), _random((3, 3, 4, 2), 1)
  batched = jax.vmap(native_conv.conv2d_native, (0, None))(x[:, None], kernel)[:, 0]
  np.testing.assert_allclose(batched, _lax_dense(x, kernel), rtol=1e-5, atol=1e-5)
  y = native_conv.depthwise_conv2d_native(
      x.astype(jnp.bfloat16), _random((3, 3, 1, 4), 2).astype(jnp.bfloat16)
  )
  assert y.dtype == jnp.bfloat16
  with pytest.raises(ValueError, match='inputs, got int32'):
    native_conv.conv2d_native(x.astype(jnp.int32), kernel.astype(jnp.int32))
  with pytest.raises(ValueError, match='filter widths'):
    native_conv.depthwise_conv2d_native(x, jnp.ones((3, 13, 1, 4)))


def form(kernel_shape, dtype=jnp.float32):
  """How the CPU's `conv.conv2d` computes a stride-1 convolution of `kernel_shape`: 'native',
  'xla' (XLA's convolution) or 'matmul' (products), read off the lowered program."""
  x = jax.ShapeDtypeStruct((1, 8, 8, kernel_shape[2]), dtype)
  kernel = jax.ShapeDtypeStruct(kernel_shape, dtype)
  hlo = jax.jit(lambda x, k: conv.conv2d(x, k)).lower(x, kernel).as_text()  # traced anew
  if 'dxnet_conv2d' in hlo:
    return 'native'
  return 'xla' if 'convolution' in hlo else 'matmul'


def test_native_on_another_backend_is_a_clear_error(monkeypatch):
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  with pytest.raises(ValueError, match='run on the CPU only'):
    native_conv.conv2d_native(jnp.ones((1, 4, 4, 3)), jnp.ones((3, 3, 3, 2)))
  assert not native_conv.preferred((3, 3, 48, 12), jnp.float32)


def test_the_cpu_parts_take_the_native_kernels_where_they_were_measured_faster():
  assert form((3, 3, 48, 12)) == 'native'  # a dense layer's 3x3 convolution
  assert form((3, 3, 32, 16)) == 'native'  # the restoration nets' layers
  assert form((3, 3, 3, 24)) == 'native'  # the CIFAR stem
  assert form((1, 1, 48, 24)) == 'native'  # a bottleneck
  # Measured slower natively: 1-3 channels widened to 64 (XLA's), 1-3 outputs (matmul form).
  assert form((3, 3, 1, 64)) == 'xla'
  assert form((3, 3, 128, 1)) == 'matmul'
  x, kernel = _random((1, 6, 6, 2), 0), _random((3, 13, 1, 2), 1)
  # A width the kernel is not built for falls back to the FFT form.
  np.testing.assert_allclose(
      conv.depthwise_conv2d(x, kernel), _lax_depthwise(x, kernel), rtol=1e-5, atol=1e-5
  )
  model = models.create('dxnet_k12_12', blocks=(1, 1, 1), growth_rate=4, kernels='cpu')
  v = models.init_variables(model, (2, 16, 16, 3), abstract=True)  # lowered, never run
  hlo = jax.jit(lambda v, x: model.apply(v, x)).lower(v, jnp.zeros((2, 16, 16, 3))).as_text()
  assert 'dxnet_conv2d' in hlo and 'dxnet_depthwise_conv2d' in hlo


@pytest.mark.slow
def test_a_dxnet_trains_the_same_with_native_and_pure_jax_convolutions(
    monkeypatch, random_variables
):
  # One dense layer per block still has the stem's, the dense layers' and the transitions' 3x3
  # and 1x1 convolutions and the xUnits' depthwise ones, all native (asserted below).
  tiny = dict(blocks=(1, 1), growth_rate=4, kernels='cpu')
  x, y = _random((4, 16, 16, 3), 0), jnp.arange(4) % 10
  # Values drawn on the host: a jitted init compiled the whole net once more.
  v = random_variables(
      models.init_variables(models.create('dxnet_k12_12', **tiny), x.shape, abstract=True)
  )

  def value_and_grad():
    model = models.create('dxnet_k12_12', **tiny)

    def loss(params):
      logits, _ = model.apply({**v, 'params': params}, x, train=True, mutable=['batch_stats'])
      return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), y])

    lowered = jax.jit(jax.value_and_grad(loss)).lower(v['params'])
    return lowered.as_text(), lowered.compile()(v['params'])

  hlo, native = value_and_grad()
  assert 'dxnet_conv2d' in hlo and 'dxnet_depthwise_conv2d' in hlo
  monkeypatch.setattr(native_conv, 'preferred', lambda *a: False)
  monkeypatch.setattr(native_conv, 'supports_depthwise', lambda *a: False)
  hlo, reference = value_and_grad()
  assert 'dxnet_conv2d' not in hlo and 'dxnet_depthwise_conv2d' not in hlo
  assert jax.tree.structure(native) == jax.tree.structure(reference)
  for a, b in zip(jax.tree.leaves(native), jax.tree.leaves(reference), strict=True):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


@pytest.fixture
def fresh_load():
  """`native_build.load` recomputed for the test, then restored for the rest of the session."""
  native_build.load.cache_clear()
  yield native_build.load
  native_build.load.cache_clear()
  native_build.load()


def test_disabled_or_missing_compiler_falls_back_with_a_reason(fresh_load, monkeypatch):
  monkeypatch.setenv('DXNET_JAX_NATIVE', '0')
  assert fresh_load() is None and 'DXNET_JAX_NATIVE=0' in native_build.unavailable_reason()
  assert form((3, 3, 48, 12)) == 'matmul'
  assert not native_conv.supports_depthwise(jnp.float32, (9, 9, 1, 12))
  with pytest.raises(RuntimeError, match='needs the native kernels'):
    native_conv.conv2d_native(jnp.ones((1, 4, 4, 3)), jnp.ones((3, 3, 3, 2)))
  monkeypatch.setenv('DXNET_JAX_NATIVE', '1')
  monkeypatch.setenv('CXX', '/nonexistent/g++')
  with pytest.raises(RuntimeError, match="CXX='/nonexistent/g\\+\\+' is not an executable"):
    native_build.build()
  # As in a fresh process (XLA keeps the kernels this one registered): no build, no kernels.
  monkeypatch.setattr(native_build, '_registered', None)
  native_build.load.cache_clear()
  assert fresh_load() is None
  assert "CXX='/nonexistent/g++' is not an executable" in native_build.unavailable_reason()


def test_builds_once_into_the_cache_and_reports_compiler_errors(tmp_path, monkeypatch):
  # The caching is what is tested here, so a one-function source stands in for the kernels (a
  # build of which took 10-20 s of CPU); the session's build of the real ones serves every
  # other test of this file, and test_builds_for_older_cpus_compute_the_same builds them anew.
  monkeypatch.setenv('DXNET_JAX_NATIVE_CACHE', str(tmp_path / 'cache'))
  good = tmp_path / 'good'
  good.mkdir()
  (good / 'one.cc').write_text('extern "C" int DxnetOne() { return 1; }\n')
  monkeypatch.setattr(native_build, 'SOURCES', good)
  library = native_build.build()
  assert library.parent == tmp_path / 'cache' and library.suffix == '.so'
  stamp = library.stat().st_mtime_ns
  assert native_build.build() == library and library.stat().st_mtime_ns == stamp
  broken = tmp_path / 'src'
  broken.mkdir()
  (broken / 'bad.cc').write_text('this is not C++;\n')
  monkeypatch.setattr(native_build, 'SOURCES', pathlib.Path(broken))
  with pytest.raises(RuntimeError, match='failed to build the kernels'):
    native_build.build()
  # Nothing but the library and the builds' lock files (which stay, as file locks must).
  left = sorted(p.name for p in (tmp_path / 'cache').iterdir() if p.suffix != '.lock')
  assert left == [library.name]


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() != 'x86_64', reason='x86-64 targets')
@pytest.mark.parametrize('march', ['x86-64-v3', 'x86-64'])  # AVX2 (8 floats), SSE2 (4 floats)
def test_builds_for_older_cpus_compute_the_same(march, tmp_path, monkeypatch):
  # CI and users' machines may lack this machine's AVX-512: each vector width is its own code.
  monkeypatch.setenv('DXNET_JAX_NATIVE_MARCH', march)
  monkeypatch.setenv('DXNET_JAX_NATIVE_CACHE', str(tmp_path))
  library = native_build.build()
  assert library.parent == tmp_path
  avx512 = subprocess.run(['objdump', '-d', str(library)], capture_output=True, text=True).stdout
  assert '%zmm' not in avx512
  # Run in this process (a fresh Python and JAX cost more than the checks) beside the session's
  # build: XLA takes one handler per target name, so this build's kernels get names of their own.
  loaded = ctypes.cdll.LoadLibrary(str(library))
  prefix = march.replace('-', '_') + '_'
  for name, symbol in native_build.TARGETS.items():
    capsule = jax.ffi.pycapsule(getattr(loaded, symbol))
    jax.ffi.register_ffi_target(prefix + name, capsule, platform='cpu')
  pair = native_conv._native_pair  # pylint: disable=protected-access
  dense = pair(prefix + 'dxnet_conv2d', _lax_dense, native_conv._dense_flipped)
  depthwise = pair(
      prefix + 'dxnet_depthwise_conv2d', _lax_depthwise, native_conv._depthwise_flipped
  )
  # Both kernels' vector loops and remainders: 20 and 13 channels, 13 columns.
  x, kernel = _random((2, 9, 13, 20), 0), _random((3, 3, 20, 13), 1)
  assert f'{prefix}dxnet_conv2d' in jax.jit(dense).lower(x, kernel).as_text()
  _assert_value_and_grads_match(jax.jit(dense), _lax_dense, x, kernel)
  x, kernel = _random((2, 9, 13, 13), 0), _random((9, 9, 1, 13), 1)
  _assert_value_and_grads_match(jax.jit(depthwise), _lax_depthwise, x, kernel)


def test_pointwise_convolutions_take_the_native_kernel_with_the_same_results():
  x = _random((2, 6, 7, 40), 0)
  kernel = _random((1, 1, 40, 12), 1)
  assert form((1, 1, 40, 12)) == 'native'
  _assert_value_and_grads_match(jax.jit(conv.conv2d), _lax_dense, x, kernel, tol=1e-4)
  # One output channel stays with the matmul form (measured faster).
  assert form((1, 1, 40, 1)) == 'matmul'
