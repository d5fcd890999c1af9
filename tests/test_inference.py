"""Tiled inference equals whole-image inference; the receptive-field radius is measured exactly."""

import jax
import numpy as np
import pytest

from dxnet_jax import inference
from dxnet_jax import models
from dxnet_jax import pretrained


@pytest.fixture(scope='module')
def denoiser(random_variables):
  """A two-layer DxNet denoiser: BatchNorm in inference mode, xUnits with FFT depthwise; generic
  weights and BatchNorm statistics made on the host (no init is compiled)."""
  model = models.create(
      'dxnet_denoise_444', blocks=(1, 1), growth_rate=4, stem_features=8, kernels='gpu'
  )
  return model, random_variables(models.init_variables(model, (1, 16, 16, 1), abstract=True), 0)


@pytest.fixture(scope='module')
def super_resolution(random_variables):
  """A one-layer x4 DxNet SR net: output = bicubic up-scaling + residual."""
  model = models.create('dxnet16_sr', blocks=(1,), growth_rate=4, stem_features=8, tail_features=8)
  return model, random_variables(models.init_variables(model, (1, 8, 8, 3), abstract=True), 1)


def _whole(model, variables, image):
  apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
  return np.asarray(apply(variables, image[None]))[0]


@pytest.mark.parametrize(
    'size, tile, margin',
    [(10, 4, 3), (100, 7, 16), (100, 30, 0), (64, 16, 24), (5, 8, 2), (41, 40, 1), (50, 10, 20)],
)
def test_spans_cover_the_axis_with_context_or_the_border(size, tile, margin):
  spans = inference.spans(size, tile, margin)
  assert len({s.stop - s.start for s in spans}) == 1  # one window shape: one compilation
  covered = []
  for s in spans:
    assert 0 <= s.start <= s.core_start < s.core_stop <= s.stop <= size
    assert s.core_start - s.start >= margin or s.start == 0
    assert s.stop - s.core_stop >= margin or s.stop == size
    covered.extend(range(s.core_start, s.core_stop))
  assert covered == list(range(size))


def test_radius_of_the_small_denoiser_is_the_sum_of_its_kernel_radii(denoiser):
  model, variables = denoiser
  # stem conv 1 + stem xUnit 4, each dense layer conv3x3 1 + xUnit 4, output conv 1.
  assert inference.receptive_field_radius(model, variables, 1) == 1 + 4 + 2 * 5 + 1


def test_radius_is_read_back_by_a_later_process(denoiser, tmp_path, monkeypatch):
  model, variables = denoiser
  monkeypatch.setenv('DXNET_JAX_CACHE', str(tmp_path))
  monkeypatch.setattr(inference, '_RADII', {})
  radius = inference.receptive_field_radius(model, variables, 1)
  monkeypatch.setattr(inference, '_RADII', {})  # as in a fresh process: only the disk knows it

  def measure(*args):
    raise AssertionError('measured again')

  monkeypatch.setattr(inference, '_measure_radius', measure)
  assert inference.receptive_field_radius(model, variables, 1) == radius
  with pytest.raises(AssertionError, match='measured again'):  # another key is measured
    inference.receptive_field_radius(model, variables, 1, scale=2)


@pytest.mark.parametrize(
    'height, width, tile',
    [
        (61, 83, 7),
        pytest.param(45, 45, 13, marks=pytest.mark.slow),
        (50, 33, 16),
        (20, 30, 64),
        (34, 70, 3),
    ],
)
def test_tiled_denoiser_equals_whole_image(denoiser, height, width, tile):
  model, variables = denoiser
  image = np.random.default_rng(height).random((height, width, 1), np.float32)
  tiled = inference.TiledModel(model, variables, channels=1, tile=tile)
  np.testing.assert_allclose(tiled(image), _whole(model, variables, image), atol=2e-5)


@pytest.mark.parametrize(
    'height, width, tile',
    [
        pytest.param(41, 57, 9, marks=pytest.mark.slow),
        pytest.param(30, 39, 12, marks=pytest.mark.slow),
        (9, 14, 32),
    ],
)
def test_tiled_super_resolution_equals_whole_image(super_resolution, height, width, tile):
  model, variables = super_resolution
  image = np.random.default_rng(width).random((height, width, 3), np.float32)
  tiled = inference.TiledModel(model, variables, channels=3, scale=4, tile=tile)
  # stem 1 + 4, dense layer 1 + 4, tail conv 1, and the 3x3 convs at 1x, 2x and 4x resolution,
  # which take the centre pixel's 4x4 output block to LR pixels c-2 .. c+2: 2.
  assert tiled.margin == 13
  out = tiled(image)
  assert out.shape == (4 * height, 4 * width, 3)
  np.testing.assert_allclose(out, _whole(model, variables, image), atol=2e-5)


def test_a_margin_below_the_radius_changes_the_seams(denoiser):
  model, variables = denoiser
  image = np.random.default_rng(0).random((60, 60, 1), np.float32)
  short = inference.TiledModel(model, variables, channels=1, tile=8, margin=4)
  assert np.abs(short(image) - _whole(model, variables, image)).max() > 1e-3


def test_one_compilation_for_every_image_at_least_a_window_large(denoiser):
  model, variables = denoiser
  tiled = inference.TiledModel(model, variables, channels=1, tile=10)
  window = 10 + 2 * tiled.margin
  for height, width in [(window + 5, window + 17), (2 * window + 1, window), (window, 3 * window)]:
    tiled(np.zeros((height, width, 1), np.float32))
  assert tiled._apply._cache_size() == 1  # pylint: disable=protected-access


def test_prepare_and_finish_fill_an_output_of_another_dtype(denoiser):
  model, variables = denoiser
  pixels = np.random.default_rng(3).integers(0, 65536, (47, 52, 1)).astype(np.uint16)
  tiled = inference.TiledModel(model, variables, channels=1, tile=9)
  out = np.zeros(pixels.shape, np.uint16)
  tiled(
      pixels,
      out,
      prepare=lambda w: w.astype(np.float32) / 65535,
      finish=lambda y: inference.quantize(y, np.uint16),
  )
  whole = _whole(model, variables, pixels.astype(np.float32) / 65535)
  assert np.abs(out.astype(np.int64) - inference.quantize(whole, np.uint16)).max() <= 1


@pytest.mark.slow
def test_gray_model_on_colour_and_colour_model_on_gray(denoiser, super_resolution):
  model, variables = denoiser
  rgb = np.random.default_rng(4).random((20, 24, 3), np.float32)
  out = np.empty_like(rgb)
  tiled = inference.TiledModel(model, variables, channels=1, tile=8)
  inference.apply_by_channels(tiled, rgb, out, prepare=lambda w: w, finish=lambda y: y)
  for c in range(3):
    np.testing.assert_allclose(
        out[..., c : c + 1], _whole(model, variables, rgb[..., c : c + 1]), atol=2e-5
    )
  model, variables = super_resolution
  gray = rgb[..., :1]
  out = np.empty((80, 96, 1), np.float32)
  tiled = inference.TiledModel(model, variables, channels=3, scale=4, tile=8)
  inference.apply_by_channels(tiled, gray, out, prepare=lambda w: w, finish=lambda y: y)
  expected = _whole(model, variables, np.repeat(gray, 3, -1)).mean(-1, keepdims=True)
  np.testing.assert_allclose(out, expected, atol=2e-5)


@pytest.mark.slow
def test_shipped_denoiser_radius_and_tiles():
  name = 'denoise_dxnet_444_s50_h200'
  assert name in pretrained.available()  # the package ships it (tests/test_pretrained.py)
  model, variables, _ = pretrained.load(name)
  # stem 1 + 4, twelve dense layers x (1 + 4), output conv 1.
  assert inference.receptive_field_radius(model, variables, 1) == 66
  image = np.random.default_rng(5).random((291, 300, 1), np.float32)
  tiled = inference.TiledModel(model, variables, channels=1, tile=150)
  assert len(tiled.windows(291, 300)) == 4
  np.testing.assert_allclose(tiled(image), _whole(model, variables, image), atol=2e-5)


def test_psnr_in_strips_equals_the_metric():
  rng = np.random.default_rng(6)
  a = rng.integers(0, 256, (700, 9, 3)).astype(np.uint8)
  b = rng.integers(0, 256, (700, 9, 3)).astype(np.uint8)
  from dxnet_jax import metrics  # pylint: disable=g-import-not-at-top

  assert inference.psnr(a, b, 255) == pytest.approx(metrics.psnr(a, b), abs=1e-9)
  assert inference.psnr(a, a, 255) == float('inf')


def test_quantize_rounds_half_up_and_clips():
  values = np.array([-0.1, 0.0, 0.5 / 255, 1.0, 1.5])
  np.testing.assert_array_equal(inference.quantize(values, np.uint8), [0, 0, 1, 255, 255])
  assert inference.quantize(np.array([0.5]), np.uint16)[0] == 32768
