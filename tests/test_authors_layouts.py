"""The authors' layouts as variants: their DxNet denoiser's parameter count as their code gives
it, their xDnCNN cell, the same function under the 'xla' and 'cpu' kernels, and the studies that
compare them with our readings."""

import functools
import pathlib

import jax
import numpy as np
import pytest
from test_kernels import _results, compiled_run

from dxnet_jax import models, sweep

REPO = pathlib.Path(__file__).resolve().parents[1]

# Small members of the authors' layouts: every part they add (biased x-module convolutions, the
# BatchNorm after each xUnit, the 5x5 output convolution, the BN -> conv cell order).
CASES = [
    ('dxnet_denoise_444_authors', dict(blocks=(2, 1), growth_rate=4, stem_features=8), False),
    ('dxnet_denoise_444_authors', dict(blocks=(2, 1), growth_rate=4, stem_features=8), True),
    ('xdncnn_authors', dict(depth=3, features=8), False),
]


def test_the_authors_dxnet_denoiser_has_their_codes_parameter_count():
  # Their Generator(in_channels=1, num_features=64, gen_blocks=[4, 4, 4], growth_rate=16,
  # bn_size=2) counts 134,657 trainable parameters; ours reads the same paper as 140,353.
  assert models.parameter_count('dxnet_denoise_444_authors') == 134_657
  assert models.parameter_count('dxnet_denoise_444') == 140_353


def test_the_authors_layout_differs_from_ours_where_their_code_does():
  model = models.create('dxnet_denoise_444_authors', kernels='xla')
  params = models.init_variables(model, (1, 16, 16, 1), abstract=True)['params']
  assert params['stem_xunit']['depthwise']['kernel'].shape == (7, 7, 1, 64)
  assert params['output_conv']['kernel'].shape == (5, 5, 128, 1)
  assert 'final_bn' not in params and 'stem_bn' in params
  layer = params['trunk']['block0']['layer0']
  assert layer['conv2']['bias'].shape == (16,) and 'x_module_bn' in layer


def test_the_authors_xdncnn_cell_is_bn_then_a_biased_conv_then_the_xunit():
  model = models.create('xdncnn_authors', kernels='xla')
  params = models.init_variables(model, (1, 16, 16, 1), abstract=True)['params']
  assert 'bn0' not in params and params['bn1']['scale'].shape == (64,)
  assert all(params[f'conv{i}']['bias'].shape == (64,) for i in range(8))
  assert params['xunit1']['depthwise']['kernel'].shape == (9, 9, 1, 64)
  assert set(params['xunit1']) == {'input_bn', 'depthwise', 'depthwise_bn'}  # Gaussian
  assert models.parameter_count('xdncnn', cell_order='bn_conv') == 337_473 + 7 * 64


@pytest.mark.parametrize('name,option', [('dxnet_denoise_444', 'layout'), ('xdncnn', 'cell_order')])
def test_an_unknown_layout_or_cell_order_is_a_clear_error(name, option):
  model = models.create(name, **{option: 'theirs'}, kernels='xla')
  with pytest.raises(ValueError, match=f"{option} must be one of .*'theirs'"):
    models.init_variables(model, (1, 8, 8, 1), abstract=True)


@functools.lru_cache(maxsize=None)
def _initial_variables(name, shape):
  """The initialiser's values of a case's plain 'xla' net, shared by its remat modes (same
  variables, checked below) in one xdist worker."""
  overrides = next(o for n, o, _ in CASES if n == name)
  return models.init_variables(models.create(name, **overrides, kernels='xla'), shape)


@pytest.mark.parametrize(
    'name,overrides,remat',
    [
        pytest.param(*case, marks=[pytest.mark.slow, pytest.mark.xdist_group(f'authors_{case[0]}')])
        for case in CASES
    ],
)
def test_xla_and_cpu_kernels_compute_the_authors_layouts_alike(name, overrides, remat):
  x = jax.random.uniform(jax.random.key(1), (2, 10, 10, 1))
  overrides = dict(overrides, remat=remat) if remat else overrides
  xla = models.create(name, **overrides, kernels='xla')
  cpu = models.create(name, **overrides, kernels='cpu')
  variables = _initial_variables(name, x.shape)
  for model in (xla, cpu):
    assert jax.tree.map(np.shape, variables) == jax.tree.map(
        np.shape, models.init_variables(model, x.shape, abstract=True)
    )
  expected = compiled_run(lambda v, x: _results(xla, v, x), variables, x)
  actual = compiled_run(lambda v, x: _results(cpu, v, x), variables, x)
  for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    # The running means behind a BatchNorm's output are zero up to rounding (about 1e-7).
    scale = max(float(np.max(np.abs(b))), 1e-2)
    np.testing.assert_allclose(a / scale, b / scale, atol=2e-5, rtol=0)


@pytest.mark.parametrize(
    'study,labels',
    [
        ('authors_layout.py', ['dxnet_444', 'dxnet_444_authors']),
        ('xunit_cell_order.py', ['dxnet_7', 'dxnet_7_bn_conv', 'gaussian_7', 'gaussian_7_bn_conv']),
    ],
)
def test_the_studies_compare_the_readings_at_equal_steps(monkeypatch, study, labels):
  monkeypatch.chdir(REPO)
  loaded = sweep.load_study(f'configs/studies/{study}')
  assert sorted({run.label for run in loaded.runs}) == labels
  assert len(loaded.runs) == 3 * len(labels)
  configs = {run.label: loaded.configs[run.name] for run in loaded.runs}
  assert {c['num_steps'] for c in configs.values()} == {400}
  models_by_label = {label: c['model'] for label, c in configs.items()}
  if study == 'authors_layout.py':
    assert models_by_label['dxnet_444_authors']['name'] == 'dxnet_denoise_444_authors'
    assert models_by_label['dxnet_444']['name'] == 'dxnet_denoise_444'
  else:
    assert models_by_label['gaussian_7_bn_conv']['cell_order'] == 'bn_conv'
    assert 'cell_order' not in models_by_label['gaussian_7']
