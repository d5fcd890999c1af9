"""Evaluation sets on the real shared images reproduce the published baselines."""

import numpy as np
import pytest

from dxnet_jax import evaluate
from dxnet_jax import metrics
from dxnet_jax.data import eval_sets
from dxnet_jax.data import images
from dxnet_jax.data import paths

SHARED = paths.data_root()
pytestmark = [
    pytest.mark.skipif(not SHARED.is_dir(), reason=f'shared data absent: {SHARED}'),
    pytest.mark.filterwarnings('ignore::dxnet_jax.data.images.DataWarning'),
]


def _bicubic_psnr(set_name):
  images_ = eval_sets.load(set_name, task='super_resolution', scale=4)
  protocol = evaluate.protocol_for('super_resolution', 4)
  return evaluate.evaluate_images(evaluate.bicubic_predict(4), images_, protocol)


@pytest.mark.parametrize(
    'set_name, published, ssim',
    [
        ('Set5', 28.42, 0.8101),
        ('Set14', 25.99, 0.7023),
        ('BSD100', 25.96, 0.6672),
    ],
)
def test_bicubic_baseline_reproduces_published_numbers(set_name, published, ssim):
  result = _bicubic_psnr(set_name)
  assert abs(result['psnr'] - published) <= 0.01
  assert abs(result['ssim'] - ssim) <= 0.001


@pytest.mark.slow  # PSNR and SSIM of 68 BSD68 images, twice
def test_noisy_bsd68_sigma50_unclipped_and_clipped():
  images_ = eval_sets.load('BSD68', task='denoising', sigma=50)
  assert len(images_) == 68
  unclipped = evaluate.evaluate_images(evaluate.identity_predict, images_, metrics.unclipped_scores)
  clipped = evaluate.evaluate_images(evaluate.identity_predict, images_, metrics.denoising_scores)
  assert unclipped['psnr'] == pytest.approx(14.15, abs=0.05)
  assert clipped['psnr'] == pytest.approx(14.92, abs=0.05)


def test_denoising_noise_is_deterministic_per_image_and_seed():
  first = eval_sets.load('Set12', task='denoising', sigma=25)
  again = eval_sets.load('Set12', task='denoising', sigma=25)
  other = eval_sets.load('Set12', task='denoising', sigma=25, seed=1)
  for a, b, c in zip(first, again, other):
    np.testing.assert_array_equal(a.inputs, b.inputs)
    assert not np.array_equal(a.inputs, c.inputs)
  noise = first[0].inputs.astype(np.float64) - first[0].targets / 255.0
  assert noise.std() * 255 == pytest.approx(25, rel=0.02)
  assert first[0].inputs.min() < 0 or first[0].inputs.max() > 1  # not clipped
  assert not np.array_equal(
      first[0].inputs - first[0].targets / 255.0,
      first[1].inputs[:256, :256] - first[1].targets[:256, :256] / 255.0,
  )


def test_super_resolution_pairs_shapes_and_gray_reference():
  set14 = {im.name: im for im in eval_sets.load('Set14', task='super_resolution')}
  for image in set14.values():
    h, w = image.targets.shape[:2]
    assert h % 4 == 0 and w % 4 == 0
    assert image.inputs.shape == (h // 4, w // 4, 3) and image.inputs.dtype == np.float32
  bridge = set14['img_003_SRF_4_HR.png']
  assert bridge.targets.shape[-1] == 1  # scored as gray, as published


def test_named_set_of_the_wrong_task_is_rejected():
  with pytest.raises(ValueError, match='BSD68 is a denoising set'):
    eval_sets.load('BSD68', task='super_resolution')


def test_any_folder_works_and_small_images_are_rejected(tmp_path):
  rng = np.random.default_rng(0)
  for i, side in enumerate([40, 37]):
    images.Image.fromarray(rng.integers(0, 256, (side, side + 8, 3), dtype=np.uint8)).save(
        tmp_path / f'{i}.png'
    )
  loaded = eval_sets.load(str(tmp_path), task='super_resolution')
  assert [im.targets.shape for im in loaded] == [(40, 48, 3), (36, 44, 3)]
  images.Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(tmp_path / 'tiny.png')
  with pytest.raises(ValueError, match='tiny.png is 12x12'):
    eval_sets.load(str(tmp_path), task='super_resolution')
