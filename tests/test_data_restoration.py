"""Denoising and SR patch pipelines on the real shared training images."""

import itertools

import ml_collections
import numpy as np
import pytest

from dxnet_jax import data as data_lib
from dxnet_jax.data import augment
from dxnet_jax.data import degrade
from dxnet_jax.data import images
from dxnet_jax.data import paths
from dxnet_jax.data import restoration

SHARED = paths.data_root()
pytestmark = [
    pytest.mark.skipif(not SHARED.is_dir(), reason=f'shared data absent: {SHARED}'),
    pytest.mark.filterwarnings('ignore::dxnet_jax.data.images.DataWarning'),
]


def _config(task, **data):
  config = ml_collections.ConfigDict()
  config.task = task
  config.data = data_lib.default_config(task, prefetch=0, patches_per_epoch=64, **data)
  return config


def _take(data, start, n):
  return list(itertools.islice(data.train.iterate(start), n))


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


@pytest.fixture(scope='module')
def denoise():
  return data_lib.build(_config('denoising', sigma=25.0), global_batch_size=8, seed=3)


@pytest.fixture(scope='module')
def sr():
  return data_lib.build(
      _config('super_resolution', train_dirs=['Set14'], patch_size=32, validation_set='Set5'),
      global_batch_size=4,
      seed=5,
  )


def test_denoising_batches(denoise):
  batch = next(denoise.train.iterate(0))
  assert batch['inputs'].shape == batch['targets'].shape == (8, 40, 40, 1)
  assert batch['inputs'].dtype == batch['targets'].dtype == np.float32
  assert 0 <= batch['targets'].min() and batch['targets'].max() <= 1
  noise = batch['inputs'] - batch['targets']
  assert noise.std() * 255 == pytest.approx(25, rel=0.05)
  assert batch['inputs'].min() < 0  # the noisy input is not clipped
  assert denoise.train.steps_per_epoch == 64 // 8
  assert denoise.info['num_train'] == 400 and denoise.info['eval_sets'] == ('BSD68', 'Set12')


def test_sigma_range_is_drawn_per_patch():
  data = data_lib.build(
      _config('denoising', sigma=[0.0, 55.0], eval_sigma=25.0), global_batch_size=32, seed=0
  )
  batch = next(data.train.iterate(0))
  stds = (batch['inputs'] - batch['targets']).reshape(32, -1).std(axis=1) * 255
  assert stds.min() < 15 and stds.max() > 40 and stds.max() < 58
  assert data.info['eval_sigma'] == 25.0


def test_sigma_range_without_eval_sigma_is_an_error():
  with pytest.raises(ValueError, match='eval_sigma'):
    data_lib.build(_config('denoising', sigma=[0.0, 55.0]), global_batch_size=8, seed=0)


def test_resume_is_exact(denoise):
  straight = _take(denoise, 0, 5)
  resumed = _take(denoise, 3, 2)
  rebuilt = data_lib.build(_config('denoising', sigma=25.0), global_batch_size=8, seed=3)
  for a, b in zip(straight[3:], resumed):
    _assert_batches_equal(a, b)
  _assert_batches_equal(straight[0], _take(rebuilt, 0, 1)[0])
  assert not np.array_equal(straight[0]['targets'], straight[1]['targets'])


def test_hosts_get_disjoint_rows_of_one_global_batch():
  config = _config('denoising', sigma=25.0)
  whole = _take(data_lib.build(config, global_batch_size=8, seed=1), 4, 1)[0]
  parts = [
      _take(
          data_lib.build(config, global_batch_size=8, seed=1, process_index=p, process_count=2),
          4,
          1,
      )[0]
      for p in range(2)
  ]
  for key in whole:
    np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])


def test_prefetched_stream_equals_direct_stream():
  config = _config('denoising', sigma=25.0)
  config.data.prefetch = 3
  prefetched = data_lib.build(config, global_batch_size=8, seed=3)
  direct = data_lib.build(_config('denoising', sigma=25.0), global_batch_size=8, seed=3)
  for a, b in zip(_take(prefetched, 2, 3), _take(direct, 2, 3)):
    _assert_batches_equal(a, b)


def test_super_resolution_batches_and_alignment(sr):
  batch = next(sr.train.iterate(0))
  assert batch['inputs'].shape == (4, 8, 8, 3) and batch['targets'].shape == (4, 32, 32, 3)
  # The LR patch is roughly the bicubic down-scaling of the HR patch (exactly so away from the
  # patch edge, since LR is made from the whole image).
  for lr, hr in zip(batch['inputs'], batch['targets']):
    remade = degrade.downscale(np.round(hr * 255).astype(np.uint8), 4) / 255.0
    assert np.abs(lr[2:-2, 2:-2] - remade[2:-2, 2:-2]).max() < 0.02


def test_sampler_crops_are_aligned_crops_of_the_whole_image_lr():
  rng = np.random.default_rng(0)
  hr = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
  lr = degrade.downscale(hr, 4)
  sampler = restoration.PatchSampler([hr], [lr], patch_size=16, scale=4)
  targets, inputs = sampler.crops(np.array([0, 0]), np.array([[0.0, 0.0], [0.99, 0.99]]))
  np.testing.assert_array_equal(targets[0], hr[:16, :16])
  np.testing.assert_array_equal(inputs[0], lr[:4, :4])
  np.testing.assert_array_equal(targets[1], hr[-16:, -16:])
  np.testing.assert_array_equal(inputs[1], lr[-4:, -4:])


def test_dihedral_applies_the_same_transform_to_inputs_and_targets():
  plain = data_lib.build(
      _config(
          'super_resolution',
          train_dirs=['Set14'],
          patch_size=32,
          augment='none',
          validation_set=None,
      ),
      global_batch_size=16,
      seed=5,
  )
  augmented = data_lib.build(
      _config('super_resolution', train_dirs=['Set14'], patch_size=32, validation_set=None),
      global_batch_size=16,
      seed=5,
  )
  a, b = next(plain.train.iterate(7)), next(augmented.train.iterate(7))
  ops_seen = set()
  for row in range(16):
    matches = [
        op
        for op in range(8)
        if np.array_equal(
            augment.dihedral(a['targets'][row : row + 1], np.array([op]))[0], b['targets'][row]
        )
        and np.array_equal(
            augment.dihedral(a['inputs'][row : row + 1], np.array([op]))[0], b['inputs'][row]
        )
    ]
    assert matches
    ops_seen.add(matches[0])
  assert len(ops_seen) > 3


def test_dihedral_gives_eight_distinct_transforms():
  x = np.arange(9).reshape(1, 3, 3, 1)
  out = augment.dihedral(np.repeat(x, 8, axis=0), np.arange(8))
  assert len({o.tobytes() for o in out}) == 8
  np.testing.assert_array_equal(out[0], x[0])


def test_validation_is_padded_deterministic_centre_crops(sr):
  batches = list(sr.validation())
  assert len(batches) == 2  # 5 Set5 crops in global batches of 4
  assert [b['mask'].sum() for b in batches] == [4, 1]
  assert batches[0]['inputs'].shape == (4, 32, 32, 3)
  assert batches[0]['targets'].shape == (4, 128, 128, 3)
  np.testing.assert_array_equal(batches[1]['inputs'][1:], 0)
  for a, b in zip(batches, sr.validation()):
    _assert_batches_equal(a, b)


def test_denoising_validation_uses_eval_noise(denoise):
  batches = list(denoise.validation())
  masks = np.concatenate([b['mask'] for b in batches])
  assert masks.sum() == 12  # Set12 crops
  noise = batches[0]['inputs'] - batches[0]['targets']
  assert noise.std() * 255 == pytest.approx(25, rel=0.05)  # eval_sigma defaults to sigma


def test_holdout_images_validate_instead_of_training():
  data = data_lib.build(
      _config('denoising', holdout=10, validation_crop=64), global_batch_size=8, seed=0
  )
  assert data.info['num_train'] == 390
  assert sum(b['mask'].sum() for b in data.validation()) == 10


def test_images_smaller_than_the_patch_are_skipped_with_a_count():
  with pytest.warns(images.DataWarning, match=r'1 images smaller than the patch .*t20.bmp'):
    data = data_lib.build(
        _config('super_resolution', train_dirs=['T91'], validation_set=None),
        global_batch_size=4,
        seed=0,
    )
  assert data.info['num_train'] == 90
  with pytest.raises(ValueError, match='no image is at least 600x600'):
    data_lib.build(
        _config('super_resolution', train_dirs=['T91'], patch_size=600, validation_set=None),
        global_batch_size=4,
        seed=0,
    )


def test_bad_configs_are_rejected():
  with pytest.raises(KeyError, match='pach_size'):
    config = _config('denoising')
    config.data.pach_size = 40
    data_lib.build(config, global_batch_size=8, seed=0)
  with pytest.raises(ValueError, match='multiple of scale'):
    data_lib.build(_config('super_resolution', patch_size=30), global_batch_size=4, seed=0)
  with pytest.raises(ValueError, match='multiple of the process count'):
    data_lib.build(_config('denoising'), global_batch_size=9, seed=0, process_count=2)
  with pytest.raises(KeyError, match='unknown config.data fields'):
    data_lib.default_config('denoising', sigmaa=3)
