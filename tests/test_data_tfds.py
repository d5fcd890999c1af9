"""tfds sources offline: `tfds.testing.mock_data` over generated split metadata.

The pip wheel of tfds has no metadata for these datasets, so `info.splits` would be empty; the
fixture writes dataset_info.json with split sizes into a temporary data_dir. The mock yields the
same NUM examples for every split, so the metadata says NUM for every split too. The mock
ignores sub-splits, so per-host reading of the streaming pipeline is tested on a small real
tfds dataset written with `store_as_tfds_dataset` instead.
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
    builder.info.set_splits(
        tfds.core.SplitDict(
            [tfds.core.SplitInfo(name=s, shard_lengths=[NUM], num_bytes=0) for s in splits]
        )
    )
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
  data = data_lib.build(
      _config('classification', name='cifar10', data_dir=mock), global_batch_size=4, seed=0
  )
  assert data.info['num_classes'] == 10 and data.info['num_train'] == NUM
  assert data.info['num_validation'] == NUM  # the tfds preset validates on 'test'
  batch = next(data.train.iterate(0))
  assert batch['inputs'].shape == (4, 32, 32, 3) and batch['targets'].dtype == np.int32
  assert len(list(data.validation())) == 3


def test_svhn_train_plus_extra_without_augmentation(mock):
  data = data_lib.build(
      _config('classification', name='svhn_cropped', data_dir=mock), global_batch_size=4, seed=0
  )
  batch = next(data.train.iterate(0))
  pixels = batch['inputs'] * 255  # no augmentation, no normalisation: x / 255
  np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-3)
  assert 0 <= batch['inputs'].min() and batch['inputs'].max() <= 1
  raw = tfds.as_numpy(
      tfds.builder('svhn_cropped', data_dir=mock).as_dataset(split='train+extra', batch_size=-1)
  )
  assert any(np.array_equal(np.round(pixels[0]).astype(np.uint8), im) for im in raw['image'])


def test_imagenet_streaming_resume_and_validation(mock):
  config = _config(
      'classification',
      name='imagenet2012',
      data_dir=mock,
      image_size=24,
      resize_size=28,
      shuffle_buffer=8,
  )
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
  batches = list(
      data_lib.build(config.copy_and_resolve_references(), global_batch_size=8, seed=0).validation()
  )
  assert [b['mask'].sum() for b in batches] == [8, 4]
  assert batches[1]['inputs'].shape == (8, 24, 24, 3)


def test_div2k_patches(mock):
  config = _config(
      'super_resolution', name='div2k/bicubic_x4', data_dir=mock, patch_size=16, validation_crop=16
  )
  with pytest.warns(images.DataWarning, match='smaller than the patch'):
    data = data_lib.build(config, global_batch_size=4, seed=0)
  assert 0 < data.info['num_train'] < NUM  # mock images are 5-49 px: some are too small
  batch = next(data.train.iterate(0))
  assert batch['inputs'].shape == (4, 4, 4, 3) and batch['targets'].shape == (4, 16, 16, 3)
  assert sum(b['mask'].sum() for b in data.validation()) > 0


@pytest.fixture(scope='module')
def tfrecord_dir(tmp_path_factory):
  """A real on-disk tfds dataset (no mock): 40 JPEGs of varied sizes whose label is their index,
  so a batch's labels tell which examples it holds."""
  root = tmp_path_factory.mktemp('tfrecords')
  rng = np.random.default_rng(0)
  features = tfds.features.FeaturesDict(
      {
          'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
          'label': tfds.features.ClassLabel(num_classes=40),
      }
  )

  def examples(n):
    for i in range(n):
      size = rng.integers(20, 60, 2)
      yield i, {'image': rng.integers(0, 256, (*size, 3), dtype=np.uint8), 'label': i}

  tfds.dataset_builders.store_as_tfds_dataset(
      name='stream_test',
      version='1.0.0',
      features=features,
      data_dir=root,
      split_datasets={'train': list(examples(40)), 'validation': list(examples(10))},
  )
  return str(root)


def _stream_config(data_dir):
  return _config(
      'classification',
      name='stream_test',
      data_dir=data_dir,
      augment='imagenet',
      validation_split='validation',
      image_size=16,
      resize_size=20,
      shuffle_buffer=16,
      mean=(0.5,) * 3,
      std=(0.25,) * 3,
  )


def _labels(batches):
  return [tuple(b['targets']) for b in batches]


def test_streaming_hosts_read_disjoint_parts_and_resume_exactly(tfrecord_dir):
  config = _stream_config(tfrecord_dir)
  hosts = [
      data_lib.build(config, global_batch_size=8, seed=0, process_index=p, process_count=2)
      for p in range(2)
  ]
  assert hosts[0].train.steps_per_epoch == 5  # 20 examples per host, 4 per host batch
  epochs = [_take(h, 0, 10) for h in hosts]
  for epoch in range(2):
    seen = [np.concatenate([b['targets'] for b in e[5 * epoch : 5 * epoch + 5]]) for e in epochs]
    assert sorted(np.concatenate(seen)) == list(range(40))  # disjoint, and together complete
  assert _labels(epochs[0][:5]) != _labels(epochs[0][5:])  # reshuffled each epoch
  resumed = _take(hosts[0], 4, 3)  # crosses the epoch boundary
  for a, b in zip(epochs[0][4:7], resumed):
    np.testing.assert_array_equal(a['targets'], b['targets'])
    np.testing.assert_array_equal(a['inputs'], b['inputs'])
  assert epochs[0][0]['inputs'].shape == (4, 16, 16, 3)


def test_streaming_validation_is_padded_equally_on_every_host(tfrecord_dir):
  config = _stream_config(tfrecord_dir)
  per_host = [
      list(
          data_lib.build(
              config, global_batch_size=8, seed=0, process_index=p, process_count=2
          ).validation()
      )
      for p in range(2)
  ]
  assert [len(v) for v in per_host] == [2, 2]  # 5 examples per host in batches of 4
  labels = [b['targets'][b['mask'] > 0] for v in per_host for b in v]
  assert sorted(np.concatenate(labels)) == list(range(10))
