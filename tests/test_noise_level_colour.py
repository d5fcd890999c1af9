"""The colour noise-level estimate: white noise and noise correlated across channels."""

import numpy as np
import pytest
from PIL import Image

from dxnet_jax import noise_level
from dxnet_jax.data import paths

SHARED = paths.data_root()
needs_data = pytest.mark.skipif(not SHARED.is_dir(), reason=f'shared data absent: {SHARED}')


def _clean_crop():
  image = Image.open(sorted((SHARED / 'CBSD68').glob('*.png'))[3])
  return np.asarray(image, np.float64)[:160, :160] / 255


@needs_data
@pytest.mark.parametrize('sigma', [10, 30])
def test_noise_shared_by_the_channels_is_measured_per_channel(sigma):
  """The same noise in R, G and B (fully correlated, as a worst case of demosaicing): the
  channels' differences hold none of it, and the joint covariance sees almost none."""
  clean = _clean_crop()
  noise = np.random.default_rng(0).standard_normal(clean.shape[:2] + (1,)) * sigma / 255
  noisy = (clean + noise).astype(np.float32)
  assert abs(noise_level.estimate_sigma(noisy) - sigma) < 2


@needs_data
@pytest.mark.parametrize('sigma', [5, 25, 50])
def test_white_noise_keeps_the_joint_estimate(sigma):
  clean = _clean_crop()
  noise = np.random.default_rng(1).standard_normal(clean.shape) * sigma / 255
  noisy = (clean + noise).astype(np.float32)
  estimate = noise_level.estimate_sigma(noisy)
  joint = noise_level._chen(noisy, refine=False) * 255  # pylint: disable=protected-access
  assert estimate == pytest.approx(joint)
  assert abs(estimate - sigma) < 1


@needs_data
def test_a_real_noisy_photo_gets_its_channels_level():
  """RNI15's Dog: visibly noisy; the joint rule alone gave 0.5."""
  dog = np.asarray(Image.open(SHARED / 'RNI15' / 'Dog.png'))
  assert noise_level.estimate_sigma(dog) > 10
