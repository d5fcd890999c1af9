"""Streaming ImageNet-style pipeline (tfds + tf.data): too large to decode into memory.

Each process reads its own part of the split (`tfds.split_for_jax_process`, equal sizes), so
the global batch is the union of the host batches. Epoch e reads the host's part in an order
seeded by (seed, e) (file order and a shuffle buffer) and yields exactly `steps_per_epoch`
batches; the per-image augmentation uses stateless TF ops seeded by (seed, process, position).
Resuming at step s rebuilds epoch s // steps_per_epoch and skips the batches before s in it:
the skipped records are read but not decoded, so the cost is at most one epoch of I/O
(none when resuming at an epoch boundary). The shuffle buffer refills at each epoch start.

Training: random-resized crop (area 8-100%, aspect 3/4-4/3, whole image after 10 failed
attempts), resize to `image_size` (bilinear), random horizontal flip. Evaluation: resize the
shorter side to `resize_size`, centre crop `image_size`. Both normalise with mean/std.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

from dxnet_jax import _optional
from dxnet_jax.data import pipeline
from dxnet_jax.data import sources


@functools.cache
def _tf():
  tf = _optional.require('tensorflow', 'tfds', 'the streaming ImageNet pipeline')
  try:
    tf.config.set_visible_devices([], 'GPU')  # keep TF off the accelerators JAX uses
  except RuntimeError:  # TF was initialised elsewhere first; its choice stands
    pass
  return tf


def _ceil_div(a: int, b: int) -> int:
  return -(-a // b)


def _decode_crop(encoded, window):
  """Decodes only `window` = [y, x, h, w] of a JPEG; other formats decode fully, then crop."""
  tf = _tf()

  def jpeg():
    return tf.io.decode_and_crop_jpeg(encoded, window, channels=3)

  def other():
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    return tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])

  return tf.cond(tf.io.is_jpeg(encoded), jpeg, other)


def _image_shape(encoded):
  tf = _tf()
  return tf.cond(
      tf.io.is_jpeg(encoded),
      lambda: tf.io.extract_jpeg_shape(encoded)[:2],
      lambda: tf.shape(tf.io.decode_image(encoded, channels=3, expand_animations=False))[:2],
  )


def train_preprocess(encoded, seed, image_size: int):
  """Random-resized crop + flip of one encoded image; `seed` is a stateless [2] int seed."""
  tf = _tf()
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  shape = _image_shape(encoded)
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.concat([shape, [3]], 0),
      tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
      seed=crop_seed,
      min_object_covered=0.0,
      aspect_ratio_range=(3 / 4, 4 / 3),
      area_range=(0.08, 1.0),
      max_attempts=10,
      use_image_if_no_bounding_boxes=True,
  )
  window = tf.stack([begin[0], begin[1], size[0], size[1]])
  image = tf.image.resize(_decode_crop(encoded, window), [image_size, image_size])
  return tf.image.stateless_random_flip_left_right(image, flip_seed)


def eval_preprocess(encoded, image_size: int, resize_size: int):
  """Shorter side to `resize_size`, centre crop `image_size` (float32, 0-255)."""
  tf = _tf()
  image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  factor = resize_size / tf.reduce_min(shape)
  new_shape = tf.cast(tf.round(shape * factor), tf.int32)
  image = tf.image.resize(image, tf.maximum(new_shape, image_size))
  return tf.image.resize_with_crop_or_pad(image, image_size, image_size)


def _normalize(image, mean, std):
  return (image / 255.0 - mean) / std


def build(
    config, *, global_batch_size: int, seed: int, process_index: int = 0, process_count: int = 1
) -> pipeline.Data:
  tf = _tf()
  tfds = sources.tfds_module()
  data = config.data
  if data.source != 'tfds':
    raise ValueError("the streaming ImageNet pipeline reads tfds (config.data.source='tfds')")
  builder = sources.tfds_builder(data.name, data.data_dir, data.manual_dir, data.download)
  host_bs = pipeline.host_batch_size(global_batch_size, process_count)
  num_train = builder.info.splits[data.train_split].num_examples
  steps_per_epoch = (num_train // process_count) // host_bs
  if steps_per_epoch == 0:
    raise ValueError(
        f'{num_train} training examples do not fill one global batch of ' f'{global_batch_size}'
    )
  mean = tf.constant(data.mean if data.normalize else (0.0,) * 3, tf.float32)
  std = tf.constant(data.std if data.normalize else (1.0,) * 3, tf.float32)
  skip_decoding = {'image': tfds.decode.SkipDecoding()}
  options = tf.data.Options()
  options.deterministic = True

  def epoch_dataset(epoch: int, first_batch: int):
    epoch_seed = int(pipeline.rng(seed, pipeline.PERMUTATION, epoch).integers(2**31))
    split = tfds.split_for_jax_process(
        data.train_split,
        process_index=process_index,
        process_count=process_count,
        drop_remainder=True,
    )
    ds = builder.as_dataset(
        split=split,
        shuffle_files=True,
        decoders=skip_decoding,
        read_config=tfds.ReadConfig(shuffle_seed=epoch_seed, options=options),
    )
    ds = ds.shuffle(data.shuffle_buffer, seed=epoch_seed, reshuffle_each_iteration=False)
    ds = ds.enumerate().skip(first_batch * host_bs)

    def preprocess(position, example):
      counter = (epoch * steps_per_epoch * host_bs + position) * process_count + process_index
      image_seed = tf.stack([tf.constant(seed, tf.int64), counter])
      image = train_preprocess(example['image'], image_seed, data.image_size)
      return {
          'inputs': _normalize(image, mean, std),
          'targets': tf.cast(example['label'], tf.int32),
      }

    ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(host_bs, drop_remainder=True).take(steps_per_epoch - first_batch)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(options)

  def batches(start_step: int):
    epoch, first_batch = divmod(int(start_step), steps_per_epoch)
    for epoch in itertools.count(epoch):
      yield from tfds.as_numpy(epoch_dataset(epoch, first_batch))
      first_batch = 0

  def iterate(start_step: int):
    stream = batches(start_step)
    return pipeline.prefetch(stream, data.prefetch) if data.prefetch > 0 else stream

  validation_fn = None
  if data.validation_split:
    eval_bs = pipeline.host_batch_size(data.eval_batch_size or global_batch_size, process_count)
    num_eval = builder.info.splits[data.validation_split].num_examples
    num_batches = _ceil_div(_ceil_div(num_eval, process_count), eval_bs)
    validation_fn = functools.partial(
        _validation_batches,
        builder,
        data,
        mean,
        std,
        eval_bs,
        num_batches,
        process_index,
        process_count,
    )

  info = {
      'task': 'classification',
      'num_classes': builder.info.features['label'].num_classes,
      'class_names': tuple(builder.info.features['label'].names),
      'channels': 3,
      'image_size': data.image_size,
      'num_train': num_train,
      'num_validation': (
          builder.info.splits[data.validation_split].num_examples if data.validation_split else 0
      ),
      'mean': tuple(data.mean) if data.normalize else None,
      'std': tuple(data.std) if data.normalize else None,
  }
  return pipeline.Data(pipeline.Train(iterate, steps_per_epoch), validation_fn, info)


def _validation_batches(
    builder, data, mean, std, host_bs: int, num_batches: int, process_index: int, process_count: int
):
  """This host's part of the validation split, padded to `num_batches` full batches."""
  tf = _tf()
  tfds = sources.tfds_module()
  split = tfds.split_for_jax_process(
      data.validation_split, process_index=process_index, process_count=process_count
  )
  ds = builder.as_dataset(
      split=split, decoders={'image': tfds.decode.SkipDecoding()}, shuffle_files=False
  )

  def preprocess(example):
    image = eval_preprocess(example['image'], data.image_size, data.resize_size)
    return {'inputs': _normalize(image, mean, std), 'targets': tf.cast(example['label'], tf.int32)}

  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE).batch(host_bs)
  return _pad_to_count(
      tfds.as_numpy(ds.prefetch(tf.data.AUTOTUNE)), num_batches, host_bs, data.image_size
  )


def _pad_to_count(batches, num_batches: int, size: int, image_size: int):
  """Pads each batch to `size` rows and appends empty batches up to `num_batches`."""
  count = 0
  for batch in batches:
    count += 1
    yield pipeline.pad_rows(batch, size)
  empty = {
      'inputs': np.zeros((0, image_size, image_size, 3), np.float32),
      'targets': np.zeros((0,), np.int32),
  }
  for _ in range(count, num_batches):
    yield pipeline.pad_rows(empty, size)
