"""Metrics and benchmark protocols."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from dxnet_jax import metrics


def _pair(seed=0, shape=(48, 64)):
  rng = np.random.default_rng(seed)
  clean = rng.integers(0, 256, shape).astype(np.float64)
  noisy = np.clip(clean + rng.normal(0, 25, shape), 0, 255)
  return clean, noisy


@pytest.mark.parametrize('shape', [(48, 64), (40, 30, 3)])
def test_ssim_matches_skimage_gaussian_form(shape):
  clean, noisy = _pair(shape=shape)
  ours = metrics.ssim(clean, noisy)
  ref = structural_similarity(
      clean,
      noisy,
      gaussian_weights=True,
      sigma=1.5,
      use_sample_covariance=False,
      data_range=255,
      channel_axis=-1 if len(shape) == 3 else None,
  )
  assert ours == pytest.approx(ref, abs=1e-10)
  assert 0 < ours < 1


def test_ssim_of_identical_images_is_one():
  clean, _ = _pair()
  assert metrics.ssim(clean, clean) == pytest.approx(1.0)


def test_psnr_known_value():
  a = np.zeros((4, 4))
  assert metrics.psnr(a, a + 255 / 10, 255) == pytest.approx(20.0)
  assert metrics.psnr(a, a) == float('inf')


def test_rgb_to_y_matlab_range():
  rgb = np.array([[0, 0, 0], [255, 255, 255], [255, 0, 0]], np.float64)
  np.testing.assert_allclose(metrics.rgb_to_y(rgb), [16.0, 235.0, 16 + 65.481])


def test_to_uint8_clips_and_rounds_half_up():
  x = np.array([-0.2, 0.5 / 255, 1.5 / 255, 0.999, 1.7])
  np.testing.assert_array_equal(metrics.to_uint8(x), [0, 1, 2, 255, 255])


def test_denoising_protocol_clips_and_rounds():
  clean = np.full((16, 16, 1), 100, np.uint8)
  output = clean / 255.0 + 0.4 / 255  # rounds back to the clean image
  assert metrics.denoising_scores(output, clean)['psnr'] == float('inf')
  assert metrics.unclipped_scores(output, clean)['psnr'] == pytest.approx(20 * np.log10(255 / 0.4))


def test_super_resolution_protocol_shaves_border_and_uses_y():
  rng = np.random.default_rng(1)
  hr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
  output = hr / 255.0
  output[:4] = 0  # damage only the shaved border
  assert metrics.super_resolution_scores(output, hr, scale=4)['psnr'] == float('inf')
  output[10, 10] = 0
  assert metrics.super_resolution_scores(output, hr, scale=4)['psnr'] < 60


def test_super_resolution_protocol_scores_gray_reference_as_gray():
  rng = np.random.default_rng(2)
  hr = rng.integers(0, 256, (32, 32, 1), dtype=np.uint8)
  off_by_one = np.clip(hr.astype(np.float64) + 1, 0, 255)
  output = np.repeat(off_by_one, 3, axis=-1) / 255.0
  expected = metrics.psnr(off_by_one[4:-4, 4:-4], hr[4:-4, 4:-4])
  assert metrics.super_resolution_scores(output, hr)['psnr'] == pytest.approx(expected)


def test_training_metrics_numpy_and_jit_agree():
  rng = np.random.default_rng(3)
  x = rng.random((4, 8, 8, 3)).astype(np.float32)
  y = np.clip(x + rng.normal(0, 0.05, x.shape), 0, 1).astype(np.float32)
  logits = rng.normal(size=(6, 5)).astype(np.float32)
  labels = np.array([0, 1, 2, 3, 4, 0])
  mask = np.array([1, 1, 1, 1, 0, 0], np.float32)

  np_psnr = metrics.psnr_per_example(x, y)
  jit_psnr = jax.jit(metrics.psnr_per_example)(jnp.asarray(x), jnp.asarray(y))
  assert isinstance(np_psnr, np.ndarray) and isinstance(jit_psnr, jax.Array)
  np.testing.assert_allclose(jit_psnr, np_psnr, rtol=1e-5)
  expected = [metrics.psnr(a, b, 1.0) for a, b in zip(x, y)]
  np.testing.assert_allclose(np_psnr, expected, rtol=1e-6)

  acc = metrics.accuracy(logits, labels, mask)
  jit_acc = jax.jit(metrics.accuracy)(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask))
  expected_acc = (logits.argmax(-1) == labels)[:4].mean()
  assert acc == pytest.approx(expected_acc) and float(jit_acc) == pytest.approx(expected_acc)
