"""In-memory classification pipeline on a small copy of the real shared CIFAR-10 images."""

import itertools
import shutil
import threading
import time

import ml_collections
import numpy as np
import pytest

from dxnet_jax import data as data_lib
from dxnet_jax.data import augment
from dxnet_jax.data import paths
from dxnet_jax.data import pipeline

SHARED = paths.data_root()
PER_CLASS = 12


@pytest.fixture(scope='module')
def cifar_root(tmp_path_factory):
  """12 real images per class in root/train/<class>/ (a full load takes ~20 s)."""
  source = SHARED / 'cifar10' / 'train'
  if not source.is_dir():
    pytest.skip(f'shared CIFAR-10 absent: {source}')
  root = tmp_path_factory.mktemp('cifar')
  for class_dir in sorted(source.iterdir()):
    (root / 'train' / class_dir.name).mkdir(parents=True)
    for i in range(PER_CLASS):
      shutil.copy(class_dir / f'{i:04d}.jpg', root / 'train' / class_dir.name)
  return root


def _config(root, **data):
  config = ml_collections.ConfigDict()
  config.task = 'classification'
  config.data = data_lib.default_config(
      'classification', root=str(root), holdout=20, prefetch=0, **data
  )
  return config


def _build(root, batch=16, process_index=0, process_count=1, seed=0, **data):
  return data_lib.build(
      _config(root, **data),
      global_batch_size=batch,
      seed=seed,
      process_index=process_index,
      process_count=process_count,
  )


def _take(data, start, n):
  return list(itertools.islice(data.train.iterate(start), n))


def test_shapes_normalisation_and_holdout(cifar_root):
  data = _build(cifar_root)
  assert data.info['num_classes'] == 10 and data.info['num_train'] == 100
  assert data.info['num_validation'] == 20
  assert data.train.steps_per_epoch == 100 // 16
  batch = next(data.train.iterate(0))
  assert batch['inputs'].shape == (16, 32, 32, 3) and batch['inputs'].dtype == np.float32
  assert batch['targets'].dtype == np.int32
  plain = _build(cifar_root, augment='none')
  stacked = np.concatenate([b['inputs'] for b in _take(plain, 0, 6)])
  assert np.abs(stacked.mean(axis=(0, 1, 2))).max() < 0.15
  assert np.abs(stacked.std(axis=(0, 1, 2)) - 1).max() < 0.15


def test_holdout_is_class_balanced_and_padded(cifar_root):
  batches = list(_build(cifar_root).validation())
  assert len(batches) == 2 and [b['mask'].sum() for b in batches] == [16, 4]
  labels = np.concatenate([b['targets'][b['mask'] > 0] for b in batches])
  np.testing.assert_array_equal(np.bincount(labels), [2] * 10)
  assert not batches[1]['inputs'][4:].any()


def test_epoch_visits_each_training_image_once(cifar_root):
  data = _build(cifar_root, batch=20, augment='none', normalize=False)
  epoch = np.concatenate([b['inputs'] for b in _take(data, 0, data.train.steps_per_epoch)])
  assert len({x.tobytes() for x in epoch}) == 100
  next_epoch = np.concatenate([b['inputs'] for b in _take(data, 5, 5)])
  assert {x.tobytes() for x in next_epoch} == {x.tobytes() for x in epoch}
  assert not np.array_equal(next_epoch, epoch)  # reshuffled


def test_resume_and_seed_determinism(cifar_root):
  data = _build(cifar_root)
  straight = _take(data, 0, 9)  # crosses an epoch boundary (6 steps per epoch)
  for a, b in zip(straight[4:], _take(_build(cifar_root), 4, 5)):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  other_seed = next(_build(cifar_root, seed=1).train.iterate(0))
  assert not np.array_equal(other_seed['inputs'], straight[0]['inputs'])


def test_hosts_get_disjoint_rows_of_one_global_batch(cifar_root):
  whole = _take(_build(cifar_root), 7, 1)[0]
  parts = [_take(_build(cifar_root, process_index=p, process_count=4), 7, 1)[0] for p in range(4)]
  for key in whole:
    np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])
  host_val = [
      list(_build(cifar_root, process_index=p, process_count=4).validation()) for p in range(4)
  ]
  assert len({len(v) for v in host_val}) == 1  # equal batch counts on every host
  assert sum(b['mask'].sum() for v in host_val for b in v) == 20


def test_augmentation_crops_flips_and_cuts(cifar_root):
  plain = next(_build(cifar_root, augment='none').train.iterate(3))
  aug = next(_build(cifar_root, cutout=0).train.iterate(3))
  cut = next(_build(cifar_root).train.iterate(3))
  assert not np.array_equal(plain['inputs'], aug['inputs'])
  np.testing.assert_array_equal(plain['targets'], aug['targets'])
  holes = (cut['inputs'] == 0).all(axis=-1) & (aug['inputs'] != 0).any(axis=-1)
  sizes = holes.sum(axis=(1, 2))
  assert sizes.max() <= 16 * 16 and sizes.min() > 0


def test_crop_flip_matches_pad_slice_and_mirror():
  rng = np.random.default_rng(0)
  images = rng.integers(1, 256, (6, 8, 8, 3), dtype=np.uint8)
  oy, ox = rng.integers(0, 9, 6), rng.integers(0, 9, 6)
  flip = np.array([0, 1, 0, 1, 1, 0], bool)
  out = augment.crop_flip(images, oy, ox, flip, 4)
  for i in range(6):
    crop = np.pad(images[i], ((4, 4), (4, 4), (0, 0)))[oy[i] : oy[i] + 8, ox[i] : ox[i] + 8]
    np.testing.assert_array_equal(out[i], crop[:, ::-1] if flip[i] else crop)


def test_cutout_square_is_clipped_at_the_border():
  images = np.ones((2, 32, 32, 1), np.float32)
  out = augment.cutout(images, np.array([16, 0]), np.array([16, 31]), 16)
  assert (out[0] == 0).sum() == 256 and (out[0, 8:24, 8:24] == 0).all()
  assert (out[1] == 0).sum() == 8 * 9  # rows 0..7, columns 23..31


def test_padded_batches_cover_every_example_once_per_host_set():
  seen = []
  for p in range(3):
    for b in pipeline.padded_batches(10, 6, p, 3, lambda i: {'x': i}):
      assert b['x'].shape == (2,)
      seen += list(b['x'][b['mask'] > 0])
  assert sorted(seen) == list(range(10))


def test_prefetch_propagates_errors_and_stops():

  def failing():
    yield 1
    raise RuntimeError('boom')

  stream = pipeline.prefetch(failing(), 2)
  assert next(stream) == 1
  with pytest.raises(RuntimeError, match='boom'):
    next(stream)
  endless = pipeline.prefetch(itertools.count(), 2)
  assert [next(endless) for _ in range(3)] == [0, 1, 2]
  endless.close()
  deadline = time.monotonic() + 5
  while _prefetch_threads() and time.monotonic() < deadline:
    time.sleep(0.05)
  assert not _prefetch_threads()


def _prefetch_threads():
  return [t for t in threading.enumerate() if t.name == 'dxnet-prefetch']
