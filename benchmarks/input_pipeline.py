"""Images/s of the input pipelines on this machine (single thread, no prefetch).

  python benchmarks/input_pipeline.py [--batches 100] [--pipelines 0,1,2,3,4]

Rows: the CIFAR-10 training pipeline from the shared folder (pad-crop, flip, normalise,
cutout), the SR x4 patch pipeline (T91 + BSD200, dihedral augmentation) and the denoising patch
pipeline (Train400, dihedral augmentation, Gaussian noise). Prefetch is off so the numbers are
the cost of assembling batches; in training a background thread overlaps it with the step.
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings

import ml_collections

from dxnet_jax import data as data_lib
from dxnet_jax import kernels
from dxnet_jax.data import images

PIPELINES = (
    # label, task, global batch, config.data overrides
    ('CIFAR-10 (crop+flip+cutout)', 'classification', 128, {}),
    ('SR x4, 96 px HR patches', 'super_resolution', 16, {'patch_size': 96}),
    ('SR x4, 128 px HR patches', 'super_resolution', 16, {'patch_size': 128}),
    ('denoising, 40 px, sigma 50', 'denoising', 32, {'patch_size': 40}),
    (
        'denoising, 50 px, sigma 0-55',
        'denoising',
        32,
        {'patch_size': 50, 'sigma': (0.0, 55.0), 'eval_sigma': 25.0},
    ),
)


def measure(task: str, batch_size: int, overrides: dict, batches: int) -> dict:
  config = ml_collections.ConfigDict()
  config.task = task
  config.data = data_lib.default_config(task, prefetch=0, **overrides)
  start = time.perf_counter()
  data = data_lib.build(config, global_batch_size=batch_size, seed=0)
  build_s = time.perf_counter() - start
  stream = data.train.iterate(0)
  for batch in itertools.islice(stream, 3):  # warm-up
    pass
  start = time.perf_counter()
  for batch in itertools.islice(stream, batches):
    pass
  seconds = time.perf_counter() - start
  return {
      'build_s': build_s,
      'ms_per_batch': 1e3 * seconds / batches,
      'images_per_s': batches * batch_size / seconds,
      'shape': 'x'.join(map(str, batch['inputs'].shape)),
  }


def main():
  kernels.prepare_process()
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--batches', type=int, default=100)
  parser.add_argument(
      '--pipelines',
      default=','.join(map(str, range(len(PIPELINES)))),
      help='comma-separated row numbers (0: CIFAR-10, ...; default: all)',
  )
  args = parser.parse_args()
  warnings.simplefilter('ignore', images.DataWarning)  # e.g. T91 images below 128 px
  header = ('pipeline', 'batch', 'inputs', 'load s', 'ms/batch', 'images/s')
  rows = []
  for label, task, batch_size, overrides in (PIPELINES[int(i)] for i in args.pipelines.split(',')):
    r = measure(task, batch_size, overrides, args.batches)
    rows.append(
        (
            label,
            str(batch_size),
            r['shape'],
            f"{r['build_s']:.1f}",
            f"{r['ms_per_batch']:.2f}",
            f"{r['images_per_s']:,.0f}",
        )
    )
  widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
  print(' | '.join(h.ljust(w) for h, w in zip(header, widths)))
  print('-+-'.join('-' * w for w in widths))
  for row in rows:
    print(' | '.join(cell.ljust(w) for cell, w in zip(row, widths)))


if __name__ == '__main__':
  main()
