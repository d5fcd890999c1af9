"""The `kernels` setting: every setting builds the same parameters and computes the same function.

Also the layering rule that keeps the models readable: no model module knows of XLA:CPU.
"""

import ast
import functools
import inspect
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dxnet_jax import kernels, layers, models
from dxnet_jax.models import densenet
from dxnet_jax.xla_cpu import dense_block

PACKAGE = pathlib.Path(kernels.__file__).parent

# One small member of each family, in every remat mode it has: xUnits, dropout, BatchNorm
# statistics (train mode), a net without BatchNorm, and both xUnit designs.
CASES = [
    ('dxnet_k12_12', dict(blocks=(2, 1), growth_rate=4), (False, True, 'speed')),
    ('densenet_bc_k12_16', dict(blocks=(2, 1), growth_rate=4, dropout_rate=0.2), (False, 'speed')),
    ('dxnet_denoise_444', dict(blocks=(2, 1), growth_rate=4, stem_features=8), (False, True)),
    ('dxnet16_sr', dict(blocks=(2, 1), growth_rate=4, stem_features=8, tail_features=8), (False,)),
    ('xdncnn_gaussian', dict(depth=3, features=8), (False,)),
    ('dxnet105', dict(blocks=(1, 1), growth_rate=4), (False,)),
]


def _results(model, variables, x):
  """Training-mode loss, output, statistics and parameter gradients, and eval-mode output."""

  def loss(params):
    out, updates = model.apply(
        {**variables, 'params': params},
        x,
        train=True,
        mutable=['batch_stats'],
        rngs={'dropout': jax.random.key(3)},
    )
    return jnp.mean(jnp.square(out)), (out, updates)

  (value, (out, updates)), grads = jax.value_and_grad(loss, has_aux=True)(variables['params'])
  return value, out, updates, grads, model.apply(variables, x, train=False)


# These programs are compared with each other, not timed: XLA's backend at optimisation level 0
# compiles them in half the time of the suite's level 1 (tests/conftest.py; the tiny
# dxnet_k12_12's remat step: 3.8 vs 7.8 CPU seconds with 'xla', 5.5 vs 9.3 with 'cpu'), and their
# results moved by under 4e-7. A run that sets DXNET_TEST_XLA_OPT_LEVEL compiles as it asks.
FAST_COMPILE = (
    {} if 'DXNET_TEST_XLA_OPT_LEVEL' in os.environ else {'xla_backend_optimization_level': 0}
)


def compiled_run(f, *args):
  """`jax.jit(f)(*args)`, compiled with `FAST_COMPILE`."""
  return jax.jit(f).lower(*args).compile(compiler_options=FAST_COMPILE)(*args)


# Each case compiles the training step twice (~50 s on 2 cores): slow, but for the smallest net
# (a 3-layer xDnCNN), which keeps one equality check of the two settings in the quick tier.
QUICK = {('xdncnn_gaussian', False)}


def _case(name, overrides, remat):
  marks = [] if (name, remat) in QUICK else [pytest.mark.slow]
  # A net's remat modes in one xdist worker, where its initial variables are made once.
  return pytest.param(name, overrides, remat, marks=[*marks, pytest.mark.xdist_group(name)])


def _input(name):
  spec = models.MODELS[name]
  size = 32 if name == 'dxnet105' else (16 if spec.task == 'classification' else 10)
  return jax.random.uniform(jax.random.key(1), (2, size, size, spec.input_shape[-1]))


@functools.lru_cache(maxsize=None)
def _initial_variables(name):
  """The initialiser's values for the plain (no remat) 'xla' net of a case: every remat mode
  has the same variables (checked below), so a net's cases share one compiled init."""
  overrides = next(o for n, o, _ in CASES if n == name)
  return models.init_variables(models.create(name, **overrides, kernels='xla'), _input(name).shape)


@pytest.mark.parametrize(
    'name,overrides,remat', [_case(n, o, r) for n, o, modes in CASES for r in modes]
)
def test_xla_and_cpu_kernels_give_the_same_outputs_gradients_and_statistics(name, overrides, remat):
  x = _input(name)
  overrides = dict(overrides, remat=remat) if remat else overrides
  xla = models.create(name, **overrides, kernels='xla')
  cpu = models.create(name, **overrides, kernels='cpu')
  # The initialiser's values: the tolerance below was measured with them (other draws of the
  # same scales differ by up to ~1e-4 of the 1e-3 floor in gradients that are analytically zero).
  variables = _initial_variables(name)
  for model in (xla, cpu):
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(
        jnp.shape, models.init_variables(model, x.shape, abstract=True)
    )
  expected = compiled_run(lambda v, x: _results(xla, v, x), variables, x)
  actual = compiled_run(lambda v, x: _results(cpu, v, x), variables, x)
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
    scale = max(float(jnp.max(jnp.abs(b))), 1e-3)
    np.testing.assert_allclose(a / scale, b / scale, atol=2e-5, rtol=0)


def test_gpu_kernels_compute_the_depthwise_convolution_by_ffts(random_variables):
  model = models.create('dxnet_denoise_444', blocks=(1,), growth_rate=4, kernels='gpu')
  x = jax.random.uniform(jax.random.key(1), (2, 12, 12, 1))
  variables = random_variables(models.init_variables(model, x.shape, abstract=True))
  compiled = jax.jit(model.apply).lower(variables, x).compile()
  assert ' fft(' in compiled.as_text()
  reference = models.create('dxnet_denoise_444', blocks=(1,), growth_rate=4, kernels='xla')
  # Both jitted: applied eagerly, each op of the nets compiled on its own.
  np.testing.assert_allclose(
      compiled(variables, x), jax.jit(reference.apply)(variables, x), rtol=1e-5, atol=1e-6
  )


def test_auto_picks_by_backend_and_bad_settings_are_clear_errors():
  assert kernels.resolve('auto', 'cpu') == 'cpu'
  assert kernels.resolve('auto', 'gpu') == 'gpu'
  assert kernels.resolve('auto', 'tpu') == 'xla'
  assert kernels.resolve('xla', 'cpu') == 'xla'
  assert kernels.resolve() == 'cpu'  # the suite runs on the CPU
  with pytest.raises(ValueError, match="kernels='cpu' computes with XLA:CPU custom calls"):
    kernels.resolve('cpu', 'gpu')
  with pytest.raises(ValueError, match='kernels must be one of'):
    models.create('dxnet_k12_12', kernels='native')
  with pytest.raises(ValueError, match='Unknown dtype'):
    models.create('dxnet_k12_12', dtype='float8')
  with pytest.raises(ValueError, match='positive odd'):
    models.create('dxnet_k12_12', xunit_kernel=8)
  with pytest.raises(ValueError, match='Unknown xUnit design'):
    models.create('dxnet_k12_12', xunit_design='spatial')
  with pytest.warns(UserWarning, match="'depthwise_impl' is ignored"):
    models.create('dxnet_denoise_444', depthwise_impl='fft')


@pytest.mark.slow  # two training steps compiled per remat mode
@pytest.mark.parametrize('remat', [False, True, 'speed'])  # one case each: xdist spreads them
def test_the_cpu_dense_block_computes_what_the_plain_block_computes(remat, random_variables):
  """Shared statistics, gradients summed once and ordered recomputation change nothing else."""
  parts = kernels.make_parts('cpu')
  assert parts.dense_block.func is dense_block.DenseBlock
  plain_parts = parts.replace(dense_block=None)
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 6))
  make = lambda p: densenet.DenseTrunk((3,), 4, p, xunit=True, remat=remat)
  ours, plain = make(parts), make(plain_parts)
  shapes = jax.eval_shape(plain.init, jax.random.key(1), x)
  assert shapes == jax.eval_shape(ours.init, jax.random.key(1), x)
  variables = random_variables(shapes)  # an eager init compiled each of its ops on its own

  def grads(model):
    def loss(params):
      y, _ = model.apply({**variables, 'params': params}, x, True, mutable=['batch_stats'])
      return jnp.mean(jnp.square(y))

    return compiled_run(jax.value_and_grad(loss), variables['params'])

  got, want = grads(ours), grads(plain)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def _module_sources():
  return [PACKAGE / 'layers.py', *sorted((PACKAGE / 'models').glob('*.py'))]


@pytest.mark.parametrize('path', _module_sources(), ids=lambda p: p.name)
def test_models_know_nothing_of_xla_cpu_nor_the_backend(path):
  tree = ast.parse(path.read_text())
  for node in ast.walk(tree):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      names = [getattr(node, 'module', None) or ''] + [a.name for a in node.names]
      assert not any('xla_cpu' in n for n in names), f'{path.name} imports {names}'
    if isinstance(node, ast.Attribute):
      assert node.attr != 'default_backend', f'{path.name}:{node.lineno} asks for the backend'
    assert not isinstance(node, ast.Global), f'{path.name}:{node.lineno} uses a global'
  # Module-level names are constants or definitions, never switches (a bool that code reads).
  for node in tree.body:
    if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(
        getattr(node, 'value', None), ast.Constant
    ):
      assert not isinstance(node.value.value, bool), f'{path.name}:{node.lineno} is a switch'


@pytest.mark.parametrize('module', [densenet.DenseBlock, layers.XUnit], ids=lambda m: m.__name__)
def test_the_dense_block_and_the_xunit_fit_on_one_screen(module):
  assert len(inspect.getsource(module).splitlines()) <= 40
