"""Builds and loads the native XLA:CPU kernels in xla_cpu/native/ on first use.

Why on first use: the kernels are compiled with `-march=native` for the CPU that runs them
(AVX-512 where there is one; `DXNET_JAX_NATIVE_MARCH` picks another target) against the XLA FFI
headers that ship with the installed jaxlib, so a wheel built elsewhere would be either slow or
wrong. The shared library is cached under `$DXNET_JAX_NATIVE_CACHE` (default
`~/.cache/dxnet_jax/native`), keyed by the source, the compiler, the target CPU and the jaxlib
version; a build takes 10-30 s of CPU, once (its sources compile side by side, and processes
that need it at the same time wait for one build). Finding that key runs the compiler twice
(0.1 s), so the library's name is remembered beside the compiled programs
(`compilation_cache.remembered`), keyed by what changes it without running anything (the
sources' and compiler's sizes and times, the CPU's flags, the settings), for later processes.

Without a C++ compiler, or with `DXNET_JAX_NATIVE=0`, `load()` returns None with the reason in
`unavailable_reason()`, and callers use the pure-JAX implementations.
"""

import ctypes
import functools
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile

import filelock
import jax
import jaxlib
from absl import logging

SOURCES = pathlib.Path(__file__).parent / 'native'
FLAGS = ('-O3', '-std=c++17', '-shared', '-fPIC', '-w')
TARGETS = {  # XLA custom-call target name: exported symbol
    'dxnet_conv2d': 'DxnetConv2d',
    'dxnet_conv2d_kernel_grad': 'DxnetConv2dKernelGrad',
    'dxnet_depthwise_conv2d': 'DxnetDepthwiseConv2d',
    'dxnet_depthwise_conv2d_kernel_grad': 'DxnetDepthwiseConv2dKernelGrad',
}

_reason = None
# XLA takes one handler per target name and process: once registered, a library stays.
_registered = None


def cache_dir() -> pathlib.Path:
  default = pathlib.Path.home() / '.cache' / 'dxnet_jax' / 'native'
  return pathlib.Path(os.environ.get('DXNET_JAX_NATIVE_CACHE', default))


def _compiler() -> str:
  requested = os.environ.get('CXX')
  if requested:
    found = shutil.which(requested)
    if found is None:
      raise RuntimeError(f'CXX={requested!r} is not an executable C++ compiler (fix or unset CXX)')
    return found
  found = shutil.which('g++') or shutil.which('clang++')
  if found is None:
    raise RuntimeError('no C++ compiler found (install g++, or set CXX)')
  return found


def _run(cmd):
  return subprocess.run(cmd, capture_output=True, text=True, check=False)


def _march() -> str:
  """`-march=` value: this CPU's by default; `DXNET_JAX_NATIVE_MARCH` (e.g. x86-64-v3 for AVX2)
  builds for an older CPU, such as the oldest of a cluster sharing one cache directory."""
  return '-march=' + os.environ.get('DXNET_JAX_NATIVE_MARCH', 'native')


def _target_cpu(cxx: str) -> str:
  """The compiler's predefined macros for the target (__AVX512F__ and the like): part of the
  cache key, so a shared home directory never hands an AVX-512 build to a CPU without it."""
  return _run([cxx, _march(), '-E', '-dM', '-x', 'c++', os.devnull]).stdout


def _state(cxx: str) -> str:
  """What the library's key depends on, found without running `cxx`: the sources' and the
  compiler's sizes and times, the settings, jaxlib's version and the CPU's flags."""
  from dxnet_jax import compilation_cache  # pylint: disable=g-import-not-at-top

  files = [*sorted(SOURCES.glob('*.[ch]*')), pathlib.Path(cxx).resolve()]
  stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
  return repr([stats, _march(), FLAGS, jaxlib.__version__, compilation_cache.machine_key()])


def build() -> pathlib.Path:
  """Compiles the kernels (or finds the cached build) and returns the shared library's path.

  The library's name is remembered for this state (`compilation_cache.remembered`), so a later
  process finds it without running the compiler.
  """
  from dxnet_jax import compilation_cache  # pylint: disable=g-import-not-at-top

  cxx = _compiler()
  name = compilation_cache.remembered('native_library', _state(cxx), lambda: _build(cxx).name)
  library = cache_dir() / name
  return library if library.exists() else _build(cxx)


def _build(cxx: str) -> pathlib.Path:
  """The library of the full key (source texts, compiler version, target macros), built if new."""
  version = _run([cxx, '--version']).stdout
  sources = sorted(SOURCES.glob('*.cc'))
  texts = [p.read_text() for p in sorted(SOURCES.glob('*.[ch]*'))]
  key = hashlib.sha256(
      '\0'.join(
          [*texts, cxx, version, _target_cpu(cxx), ' '.join(FLAGS), jaxlib.__version__]
      ).encode()
  ).hexdigest()[:16]
  library = cache_dir() / f'dxnet_native-{key}.so'
  if library.exists():
    return library
  try:
    library.parent.mkdir(parents=True, exist_ok=True)
  except OSError as error:
    raise RuntimeError(
        f'cannot create the kernel cache {library.parent} ({error}); set '
        'DXNET_JAX_NATIVE_CACHE to a writable directory'
    ) from error
  # One build for all processes that need it at once (a sweep's workers, pytest-xdist's): the
  # others wait on the lock and find the library. Built beside the target and renamed into place,
  # so no process loads a half file.
  with filelock.FileLock(str(library) + '.lock'):
    if library.exists():
      return library
    with tempfile.TemporaryDirectory(dir=library.parent) as tmp:
      partial = pathlib.Path(tmp) / library.name
      _compile_and_link(cxx, sources, partial)
      os.replace(partial, library)
  return library


def _compile_and_link(cxx: str, sources, library: pathlib.Path) -> None:
  """Compiles each source in its own process (at once: one core each), then links them."""
  common = [*FLAGS, _march(), f'-I{jax.ffi.include_dir()}']
  objects = [library.parent / f'{source.stem}.o' for source in sources]
  compiles = [
      subprocess.Popen(
          [cxx, *common, '-c', str(source), '-o', str(obj)],
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for source, obj in zip(sources, objects)
  ]
  errors = [proc.communicate()[1] for proc in compiles]
  failures = [e for proc, e in zip(compiles, errors) if proc.returncode != 0]
  if not failures:
    out = _run([cxx, *common, *map(str, objects), '-o', str(library)])
    failures = [out.stderr] if out.returncode != 0 else []
  if failures:
    raise RuntimeError(f'{cxx} failed to build the kernels in {SOURCES}:\n{failures[0][-4000:]}')


@functools.cache
def load():
  """Builds, loads and registers the kernels with XLA:CPU; None (see `unavailable_reason`) if not."""
  global _reason
  _reason = None
  if os.environ.get('DXNET_JAX_NATIVE', '1') == '0':
    _reason = 'disabled by DXNET_JAX_NATIVE=0'
    return None
  global _registered
  if _registered is not None:
    return _registered
  try:
    library = _load_library()
  except (OSError, RuntimeError) as error:
    _reason = f'native kernels unavailable: {error}'
    logging.warning('dxnet_jax: %s; the CPU uses the pure-JAX convolutions instead.', _reason)
    return None
  for name, symbol in TARGETS.items():
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(library, symbol)), platform='cpu')
  _registered = library
  return library


def _load_library():
  path = build()
  try:
    return ctypes.cdll.LoadLibrary(str(path))
  except OSError:
    # A cached build that does not load (damaged, or from an incompatible toolchain): build anew.
    path.unlink(missing_ok=True)
    return ctypes.cdll.LoadLibrary(str(build()))


def available() -> bool:
  return load() is not None


def unavailable_reason() -> str | None:
  load()
  return _reason
