"""tfds sources offline: `tfds.testing.mock_data` over generated split metadata.

The pip wheel of tfds has no metadata for these datasets, so `info.splits` would be empty; the
fixture writes dataset_info.json with split sizes into a temporary data_dir. The mock yields the
same NUM examples for every split, so the metadata says NUM for every split too.
"""

import itertools

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from dxnet_jax import data as data_lib
from dxnet_jax.data import images

NUM = 12
SPLITS = {
    'cifar10': ('train', 'test'),
    'svhn_cropped': ('train', 'test', 'extra'),
    'imagenet2012': ('train', 'validation'),
    'div2k/bicubic_x4': ('train', 'validation'),
}


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp('tfds')
  for name, splits in SPLITS.items():
    builder = tfds.builder(name, data_dir=root)
    builder.info.set_splits(tfds.core.SplitDict(
        [tfds.core.SplitInfo(name=s, shard_lengths=[NUM], num_bytes=0) for s in splits]))
    builder.data_path.mkdir(parents=True, exist_ok=True)
    builder.info.write_to_directory(builder.data_path)
  return str(root)


@pytest.fixture
def mock(data_dir):
  with tfds.testing.mock_data(num_examples=NUM, data_dir=data_dir):
    yield data_dir


def _config(task, **data):
  config = ml_collections.ConfigDict()
  config.task = task
  config.data = data_lib.default_config(task, source='tfds', prefetch=0, **data)
  return config


def _take(data, start, n):
  return list(itertools.islice(data.train.iterate(start), n))


def test_split_metadata_exists(mock):
  assert tfds.builder('svhn_cropped', data_dir=mock).info.splits['extra'].num_examples == NUM


def test_cifar10(mock):
  data = data_lib.build(_config('classification', name='cifar10', data_dir=mock),
                        global_batch_size=4, seed=0)
  assert data.info['num_classes'] == 10 and data.info['num_train'] == NUM
  assert data.info['num_validation'] == NUM  # the tfds preset validates on 'test'
  batch = next(data.train.iterate(0))
  assert batch['inputs'].shape == (4, 32, 32, 3) and batch['targets'].dtype == np.int32
  assert len(list(data.validation())) == 3


def test_svhn_train_plus_extra_without_augmentation(mock):
  data = data_lib.build(_config('classification', name='svhn_cropped', data_dir=mock),
                        global_batch_size=4, seed=0)
  batch = next(data.train.iterate(0))
  pixels = batch['inputs'] * 255  # no augmentation, no normalisation: x / 255
  np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-3)
  assert 0 <= batch['inputs'].min() and batch['inputs'].max() <= 1
  raw = tfds.as_numpy(tfds.builder('svhn_cropped', data_dir=mock).as_dataset(
      split='train+extra', batch_size=-1))
  assert any(np.array_equal(np.round(pixels[0]).astype(np.uint8), im) for im in raw['image'])


def test_imagenet_streaming_resume_and_validation(mock):
  config = _config('classification', name='imagenet2012', data_dir=mock, image_size=24,
                   resize_size=28, shuffle_buffer=8)
  data = data_lib.build(config, global_batch_size=4, seed=0)
  assert data.train.steps_per_epoch == NUM // 4
  assert data.info['num_classes'] == 1000
  straight = _take(data, 0, 5)  # crosses an epoch boundary
  assert straight[0]['inputs'].shape == (4, 24, 24, 3)
  assert straight[0]['inputs'].dtype == np.float32
  for a, b in zip(straight[2:], _take(data, 2, 3)):
    np.testing.assert_array_equal(a['inputs'], b['inputs'])
    np.testing.assert_array_equal(a['targets'], b['targets'])
  assert not np.array_equal(straight[0]['inputs'], straight[3]['inputs'])
  batches = list(data_lib.build(config.copy_and_resolve_references(), global_batch_size=8,
                                seed=0).validation())
  assert [b['mask'].sum() for b in batches] == [8, 4]
  assert batches[1]['inputs'].shape == (8, 24, 24, 3)


def test_div2k_patches(mock):
  config = _config('super_resolution', name='div2k/bicubic_x4', data_dir=mock, patch_size=16,
                   validation_crop=16)
  with pytest.warns(images.DataWarning, match='smaller than the patch'):
    data = data_lib.build(config, global_batch_size=4, seed=0)
  assert 0 < data.info['num_train'] < NUM  # mock images are 5-49 px: some are too small
  batch = next(data.train.iterate(0))
  assert batch['inputs'].shape == (4, 4, 4, 3) and batch['targets'].shape == (4, 16, 16, 3)
  assert sum(b['mask'].sum() for b in data.validation()) > 0
