"""Model library: the paper's sizes, shapes, remat equivalence and config errors."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dxnet_jax import models
from dxnet_jax.models import create, init_variables, parameter_count


def _dncnn_count(depth=17, features=64, channels=1):
  """DnCNN-S (Zhang et al. 2017) in closed form: a biased 3x3 conv in, depth-2 unbiased 3x3
  conv + BatchNorm (scale, bias) layers, a biased 3x3 conv out."""
  first = 9 * channels * features + features
  middle = (depth - 2) * (9 * features * features + 2 * features)
  return first + middle + 9 * features * channels + channels


# Published counts, each with half a unit of its last printed digit: DenseNet-BC (L=100, k=12)
# 0.8M (Huang et al. 2017, table 2); DenseNet-121 7,978,856 (torchvision's densenet121); DnCNN-S
# 556K (Zhang et al. 2017) and its closed form; the DxNet paper's 0.5M, 1.0M (CIFAR, 12-12-12 and
# 19-19-19) and ~139K (DxNet 4-4-4 denoiser, "a quarter of DnCNN": 2%). DxNet16 x4 SR: the paper
# prints 0.86M; this layout (the PyTorch build's count below) has 843,131, 2% fewer: the paper
# does not give its reconstruction tail's widths, so 0.84-0.88M.
PUBLISHED = {
    'densenet_bc_k12_16': (0.8e6, 0.05e6),
    'densenet_bc_k12_26': (1.7e6, 0.05e6),
    'densenet121': (7_978_856, 0),
    'dncnn': (_dncnn_count(), 0),
    'dxnet_k12_12': (0.5e6, 0.05e6),
    'dxnet_k12_19': (1.0e6, 0.1e6),
    'dxnet16_sr': (0.86e6, 0.02e6),
    'dxnet_denoise_444': (139e3, 0.02 * 139e3),
}


# The tests below that compile nets check that XLA compiles them, or compare two programs; they
# time nothing. XLA's backend at optimisation level 0 compiles in half the time of the suite's
# level 1 (tests/conftest.py; densenet_bc_k12_16's forward pass: 1.9 vs 4.1 CPU seconds), results
# moving by float rounding. A run that sets DXNET_TEST_XLA_OPT_LEVEL compiles as it asks.
COMPILE_ONLY = (
    {} if 'DXNET_TEST_XLA_OPT_LEVEL' in os.environ else {'xla_backend_optimization_level': 0}
)


@functools.lru_cache(maxsize=None)
def _count(name):
  return parameter_count(name)  # traced once per name and worker (shapes only, no compile)


# The tests that count parameters run in one xdist worker (setup.cfg: --dist loadgroup), where
# each named net is traced once for all of them (a net's Python takes 1-5 s to trace).
COUNTS = pytest.mark.xdist_group('parameter_counts')


@COUNTS
@pytest.mark.parametrize('name', sorted(PUBLISHED))
def test_parameter_counts_match_the_papers(name):
  count, tolerance = PUBLISHED[name]
  assert abs(_count(name) - count) <= tolerance, (_count(name), count)


def test_dncnn_count_is_the_published_556k():
  assert round(_dncnn_count(), -3) == 556_000


# The same nets built layer for layer in PyTorch (benchmarks/torch_nets.py): torch counts its
# parameters itself. dxnet105 has no published figure; this is its reference.
TORCH_NETS = {
    'densenet_bc_k12_16': lambda t: t.DenseNetClassifier(10, (16, 16, 16), 12),
    'densenet_bc_k12_26': lambda t: t.DenseNetClassifier(10, (26, 26, 26), 12),
    'dxnet_k12_12': lambda t: t.DenseNetClassifier(10, (12, 12, 12), 12, xunit=True),
    'dxnet_k12_19': lambda t: t.DenseNetClassifier(10, (19, 19, 19), 12, xunit=True),
    'densenet121': lambda t: t.DenseNetClassifier(1000, (6, 12, 24, 16), 32, stem='imagenet'),
    'dxnet105': lambda t: t.DenseNetClassifier(
        1000, (6, 12, 20, 12), 32, stem='imagenet', xunit=True
    ),
    'dxnet_denoise_444': lambda t: t.DenseDenoiser(1, (4, 4, 4), 16, xunit=True),
    'dxnet16_sr': lambda t: t.DenseSuperResolution(3, (4, 4, 4, 6, 8, 8), 16, xunit=True),
}


@COUNTS
@pytest.mark.parametrize('name', sorted(TORCH_NETS))
def test_parameter_counts_equal_pytorch_builds_of_the_same_nets(name):
  from benchmarks import torch_nets

  assert _count(name) == torch_nets.count_params(TORCH_NETS[name](torch_nets))


@COUNTS
def test_xunit_saves_parameters_against_relu_densenet():
  # The paper's claim in sizes: DxNet 12-12-12 is about 30% smaller than DenseNet-BC 16-16-16.
  assert _count('dxnet_k12_12') < 0.72 * _count('densenet_bc_k12_16')


def _tiny_shape(spec):
  size = 32 if spec.task == 'classification' else 8
  return (2, size, size, spec.input_shape[-1])


@functools.lru_cache(maxsize=None)
def _traced(name):
  """(output, variables) of a named model's initialisation on its tiny input, as shapes: one
  trace per worker for the two tests below, which xdist runs together (a net's Python takes
  seconds to trace)."""
  model = create(name)
  key = jax.random.key(0)
  return jax.eval_shape(
      lambda x: model.init_with_output({'params': key, 'dropout': key}, x, train=False),
      jax.ShapeDtypeStruct(_tiny_shape(models.MODELS[name]), jnp.float32),
  )


NAMED = [
    pytest.param(n, marks=pytest.mark.xdist_group(f'named_{n}')) for n in sorted(models.MODELS)
]


@pytest.mark.parametrize('name', NAMED)
def test_every_named_model_traces_to_the_right_output_shape(name):
  spec = models.MODELS[name]
  model = create(name)
  shape = _tiny_shape(spec)
  # One trace: the initialisation's own forward pass gives the output (tracing init, then apply,
  # traced the net twice).
  out, _ = _traced(name)
  if spec.task == 'classification':
    assert out.shape == (2, spec.kwargs['num_classes'])
  elif spec.task == 'super_resolution':
    assert out.shape == (2, 4 * shape[1], 4 * shape[2], shape[3])
  elif models.restoration.is_level_conditioned(model):  # the noise-level map is one more input
    assert out.shape == (*shape[:-1], shape[-1] - 1)
  else:
    assert out.shape == shape
  assert out.dtype == jnp.float32


@pytest.mark.slow
@pytest.mark.parametrize('name', NAMED)
def test_every_named_model_jit_compiles_and_runs(name):
  spec = models.MODELS[name]
  model = create(name)
  shape = _tiny_shape(spec)
  _, abstract = _traced(name)
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  lowered = apply.lower(abstract, jax.ShapeDtypeStruct(shape, jnp.float32))
  compiled = lowered.compile(compiler_options=COMPILE_ONLY)
  # Small constant parameters (BatchNorm variances included) keep every value finite; the compiled
  # program, not the initialiser, is what this test is about.
  variables = jax.tree.map(lambda s: jnp.full(s.shape, 0.01, s.dtype), abstract)
  out = compiled(variables, jax.random.uniform(jax.random.key(1), shape))
  assert np.all(np.isfinite(np.asarray(out)))


# Small members of each family, compiled and trained for real in the fast suite.
TINY = {
    'dxnet_k12_12': dict(blocks=(2, 1), growth_rate=4),
    'densenet_bc_k12_16': dict(blocks=(2, 1), growth_rate=4, dropout_rate=0.2),
    'dxnet_denoise_444': dict(blocks=(2, 1), growth_rate=4, stem_features=8),
    'dxnet16_sr': dict(blocks=(2, 1), growth_rate=4, stem_features=8, tail_features=8),
    'xdncnn_gaussian': dict(depth=3, features=8),
}


def _tiny_model(name, **kw):
  return create(name, **TINY[name], **kw)


@functools.lru_cache(maxsize=None)
def _tiny_variables(name, shape):
  """The initialised variables of a plain tiny net, compiled once per worker for the tests that
  share it."""
  return init_variables(_tiny_model(name), shape)


def _apply(model, variables, x, **kwargs):
  """`model.apply` as one jitted program: the same ops as eager mode, where each op compiles on
  its own (a tiny DxNet's forward took 7-8 s eagerly on 2 cores, ~1 s jitted)."""
  return jax.jit(lambda v, x: model.apply(v, x, **kwargs))(variables, x)


@functools.lru_cache(maxsize=None)
def _plain_model(name):
  """One module object per name: jit's cache knows a static module by identity of its parts."""
  return _tiny_model(name)


_STEPS = {}


def _loss_and_grads(model, variables, x):
  """Training-mode loss, statistics and parameter gradients: compiled once per model (each has
  one input shape), so the cases that share a plain net share its step."""

  def loss_and_grads(variables, x):
    def loss(params):
      out, updates = model.apply(
          {**variables, 'params': params},
          x,
          train=True,
          mutable=['batch_stats'],
          rngs={'dropout': jax.random.key(3)},
      )
      return jnp.mean(jnp.square(out)), updates

    return jax.value_and_grad(loss, has_aux=True)(variables['params'])

  if model not in _STEPS:
    lowered = jax.jit(loss_and_grads).lower(variables, x)
    _STEPS[model] = lowered.compile(compiler_options=COMPILE_ONLY)
  return _STEPS[model](variables, x)


# The tests of the tiny dxnet_k12_12 run in one xdist worker, which compiles its initialiser
# and its plain training step once for all of them.
TINY_DXNET = pytest.mark.xdist_group('tiny_dxnet_k12_12')


# Each case compiles two tiny training steps (~50 s on 2 cores; the plain dxnet_k12_12's is
# shared): one net per case, chosen so the two modes between them meet an xUnit, dropout, and a
# net without BatchNorm.
@pytest.mark.slow
@pytest.mark.parametrize(
    'name,remat',
    [
        pytest.param('dxnet_k12_12', True, marks=TINY_DXNET),
        pytest.param('dxnet_k12_12', 'speed', marks=TINY_DXNET),
        ('densenet_bc_k12_16', 'speed'),
        ('dxnet16_sr', 'speed'),
        ('dxnet_denoise_444', True),
    ],
)
def test_remat_gives_the_same_parameters_outputs_gradients_and_statistics(
    name, remat, random_variables
):
  """Whole-layer (True) and bottleneck-only ('speed') recomputation change nothing but cost.

  DenseNet-BC runs with dropout (the recomputation must draw the same mask), the SR net without
  BatchNorm.
  """
  spec = models.MODELS[name]
  shape = (2, 8, 8, spec.input_shape[-1])
  x = jax.random.uniform(jax.random.key(1), shape)
  plain, rematted = _plain_model(name), _tiny_model(name, remat=remat)
  abstract = init_variables(plain, shape, abstract=True)
  assert abstract == init_variables(rematted, shape, abstract=True)
  v_plain = random_variables(abstract)  # no initialiser compiled
  (l0, u0), g0 = _loss_and_grads(plain, v_plain, x)
  (l1, u1), g1 = _loss_and_grads(rematted, v_plain, x)
  np.testing.assert_allclose(l0, l1, rtol=1e-5)
  assert jax.tree.structure(u0) == jax.tree.structure(u1)
  assert jax.tree.structure(g0) == jax.tree.structure(g1)
  for a, b in zip(jax.tree.leaves(u0), jax.tree.leaves(u1), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # Some leaves are analytically zero (a bias right before BatchNorm) and hold only round-off
  # (~1e-9): they are compared on the scale of 1% of the model's largest gradient. The two
  # programs sum the later layers' gradient pieces in different orders (float32 round-off up to
  # ~1.2e-5 of a leaf's scale was seen); a wrong gradient is off by far more.
  flat0, flat1 = (jnp.concatenate([a.ravel() for a in jax.tree.leaves(g)]) for g in (g0, g1))
  assert float(jnp.linalg.norm(flat0 - flat1) / jnp.linalg.norm(flat0)) < 1e-5
  floor = 1e-2 * float(jnp.max(jnp.abs(flat0)))
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1), strict=True):
    scale = max(float(jnp.max(jnp.abs(a))), floor)
    assert float(jnp.max(jnp.abs(a - b))) / scale < 3e-5


@TINY_DXNET
def test_xunit_gates_lie_in_unit_interval():
  model = _tiny_model('dxnet_k12_12')
  shape = (2, 8, 8, 3)
  variables = _tiny_variables('dxnet_k12_12', shape)
  x = 10.0 * jax.random.normal(jax.random.key(2), shape)
  _, state = _apply(model, variables, x, train=False, mutable=['intermediates'])
  gates = jax.tree.leaves(state['intermediates'])
  assert len(gates) == 1 + 3  # stem xUnit + one per dense layer
  for g in gates:
    assert float(jnp.min(g)) >= 0.0 and float(jnp.max(g)) <= 1.0


def test_gaussian_xunit_gate_is_gaussian_of_its_preactivation():
  """The 2018 xUnit's gate is exp(-g^2) of g = BN(dwconv(ReLU(BN(x)))), recomputed here in numpy
  from its parameters and statistics (all away from their initial values)."""
  from dxnet_jax import kernels
  from dxnet_jax import layers

  channels, k = 3, 3
  unit = kernels.make_parts('xla', xunit_design='gaussian', xunit_kernel=k).xunit()
  x = np.asarray(jax.random.normal(jax.random.key(2), (2, 6, 5, channels)))
  variables = unit.init(jax.random.key(0), x)
  rng = np.random.default_rng(0)
  variables = jax.tree.map(
      lambda a: np.abs(rng.normal(1.0, 0.3, a.shape)).astype(np.float32), variables
  )
  y, state = unit.apply(variables, x, mutable=['intermediates'])
  (gate,) = jax.tree.leaves(state['intermediates'])
  p, s = variables['params'], variables['batch_stats']

  def bn(v, name):
    scale = p[name]['scale'] / np.sqrt(s[name]['var'] + layers.BN_EPSILON)
    return (v - s[name]['mean']) * scale + p[name]['bias']

  g = np.maximum(bn(x, 'input_bn'), 0)
  padded = np.pad(g, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)))
  kernel = p['depthwise']['kernel'][:, :, 0, :]
  conv = sum(
      padded[:, i : i + g.shape[1], j : j + g.shape[2]] * kernel[i, j]
      for i in range(k)
      for j in range(k)
  )
  g = bn(conv + p['depthwise']['bias'], 'depthwise_bn')
  np.testing.assert_allclose(gate, np.exp(-np.square(g)), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(y, x * np.exp(-np.square(g)), rtol=1e-4, atol=1e-6)


@TINY_DXNET
def test_classifier_features_and_head_give_the_logits():
  model = _tiny_model('dxnet_k12_12')
  shape = (2, 8, 8, 3)
  variables = _tiny_variables('dxnet_k12_12', shape)
  x = jax.random.uniform(jax.random.key(4), shape)
  feats = _apply(model, variables, x, method='features')
  head = variables['params']['head']
  logits = jnp.mean(feats, axis=(1, 2)) @ head['kernel'] + head['bias']
  np.testing.assert_allclose(logits, _apply(model, variables, x), rtol=1e-5, atol=1e-5)


def test_denoiser_is_residual_and_sr_adds_bicubic_upscaling(random_variables):
  den = _tiny_model('dxnet_denoise_444')
  shape = (1, 8, 8, 1)
  # Shapes only (no initialiser compiled); the running statistics away from their initial values.
  v = random_variables(init_variables(den, shape, abstract=True))
  zero = jax.tree.map(jnp.zeros_like, v['params'])
  x = jax.random.uniform(jax.random.key(5), shape)
  # With every weight zero the predicted noise is zero: the input passes through.
  np.testing.assert_allclose(_apply(den, {**v, 'params': zero}, x), x, atol=1e-6)
  sr = _tiny_model('dxnet16_sr')
  v = init_variables(sr, (1, 4, 4, 3), abstract=True)
  zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), v['params'])
  lr = jax.random.uniform(jax.random.key(6), (1, 4, 4, 3))
  np.testing.assert_allclose(
      _apply(sr, {**v, 'params': zero}, lr),
      jax.image.resize(lr, (1, 16, 16, 3), 'bicubic'),
      atol=1e-6,
  )


def test_pixel_shuffle_matches_pytorch_channel_order():
  # PyTorch: out[c, h*r + i, w*r + j] = in[c*r*r + i*r + j, h, w].
  x = jnp.arange(2 * 2 * 8).reshape(1, 2, 2, 8)
  y = models.pixel_shuffle(x, 2)
  for c in range(2):
    for i in range(2):
      for j in range(2):
        assert int(y[0, i, j, c]) == int(x[0, 0, 0, c * 4 + i * 2 + j])


@TINY_DXNET
def test_bf16_compute_keeps_float32_parameters_and_agrees():
  shape = (2, 8, 8, 3)
  x = jax.random.uniform(jax.random.key(7), shape)
  f32, bf16 = _tiny_model('dxnet_k12_12'), _tiny_model('dxnet_k12_12', dtype='bfloat16')
  v = _tiny_variables('dxnet_k12_12', shape)
  v16 = init_variables(bf16, shape, abstract=True)  # the dtypes bfloat16 initialises
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(v16['params']))
  out32 = _apply(f32, v, x)
  out16 = _apply(bf16, v, x)
  assert out16.dtype == jnp.float32
  # bfloat16 keeps 8 significant bits: a unit roundoff of 2^-8 (0.4%). The largest difference
  # measured was 0.35-0.45% of the largest logit (three inputs); 4 roundoffs leaves room for
  # that, while float32 arithmetic (a dtype that is not applied) differs by under 1e-5.
  error = float(jnp.max(jnp.abs(out16 - out32)) / jnp.max(jnp.abs(out32)))
  assert 1e-4 < error < 4 * 2.0**-8, error


@pytest.mark.parametrize(
    'overrides, message',
    [
        (dict(blocks=()), 'blocks must be a non-empty'),
        (dict(blocks=(4, 0, 4)), 'blocks must be a non-empty'),
        (dict(growth_rate=0), 'growth_rate'),
        (dict(compression=1.5), 'compression'),
        (dict(activation='gelu'), 'activation'),
        (dict(xunit_kernel=4), 'odd'),
        (dict(num_classes=0), 'num_classes'),
    ],
)
def test_bad_network_descriptions_fail_clearly(overrides, message):
  with pytest.raises(ValueError, match=message):
    init_variables(create('dxnet_k12_12', **overrides), (1, 8, 8, 3), abstract=True)


def test_unknown_model_option_or_name_fails_clearly():
  with pytest.raises(ValueError, match='Unknown model'):
    create('dxnet_k12_13')
  with pytest.raises(ValueError, match='no option'):
    create('dxnet_k12_12', growthrate=12)
  with pytest.raises(ValueError, match='dtype'):
    create('dxnet_k12_12', dtype='float8')
  with pytest.raises(ValueError, match='name'):
    create({'blocks': (1, 1)})


def test_create_accepts_a_config_mapping():
  model = create({'name': 'dxnet_k12_12', 'blocks': [2, 2, 2], 'num_classes': 100})
  assert model.blocks == (2, 2, 2) and model.num_classes == 100


@pytest.mark.slow  # traces every named model, the full-size ones included
@COUNTS
def test_models_cli_prints_every_model(capsys, monkeypatch):
  from dxnet_jax.models import __main__ as cli

  # The CLI's own `parameter_count`, memoised: the nets the tests above counted are not traced
  # again (the counts themselves are checked there and below).
  assert cli.parameter_count is parameter_count
  monkeypatch.setattr(cli, 'parameter_count', _count)
  cli.main(['--json'])
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == len(models.MODELS)
  import json

  rows = {r['name']: r for r in map(json.loads, lines)}
  assert rows['densenet121']['params'] == 7_978_856
