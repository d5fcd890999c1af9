"""Accuracy of the noise-level estimate (`dxnet_jax.noise_level`) on benchmark sets; one table.

  python -m benchmarks.noise_level --set CBSD68 --set BSD68 --sigma 5 --sigma 15 --sigma 25 \\
      --sigma 50 [--limit N] [--json FILE]

Each image gets the noise `dxnet-evaluate` gives it (`dxnet_jax.data.eval_sets.load`, noise seed
0 by default: N(0, (sigma/255)^2) added to the clean image on [0, 1], not clipped), and the
estimate is compared with the true sigma: mean absolute error, mean error (bias) and the
largest absolute error per set and level, and seconds per image.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

from dxnet_jax import noise_level
from dxnet_jax.data import eval_sets


def measure(set_name: str, sigma: float, seed: int = 0, limit: int = 0) -> dict:
  """Estimates on every noisy image of `set_name` at `sigma`: errors and time."""
  channels = 3 if set_name.upper().startswith('C') else 1
  images = eval_sets.load(set_name, task='denoising', sigma=sigma, seed=seed, channels=channels)
  images = images[:limit] if limit else images
  errors, seconds = [], []
  for image in images:
    start = time.perf_counter()
    errors.append(noise_level.estimate_sigma(image.inputs) - sigma)
    seconds.append(time.perf_counter() - start)
  errors = np.array(errors)
  return {
      'set': set_name,
      'sigma': sigma,
      'images': len(errors),
      'mae': float(np.abs(errors).mean()),
      'bias': float(errors.mean()),
      'max_abs': float(np.abs(errors).max()),
      'seconds_per_image': float(np.mean(seconds)),
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument('--set', dest='sets', action='append', default=[])
  parser.add_argument('--sigma', dest='sigmas', type=float, action='append', default=[])
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--limit', type=int, default=0, help='first N images per set (0: all)')
  parser.add_argument('--json', help='also write the rows here')
  args = parser.parse_args(argv)
  rows = [
      measure(s, sigma, args.seed, args.limit)
      for s in args.sets or ['CBSD68', 'BSD68']
      for sigma in args.sigmas or [5.0, 15.0, 25.0, 50.0]
  ]
  print('| set | sigma | images | mean abs. error | mean error | max abs. error | s/image |')
  print('|---|---:|---:|---:|---:|---:|---:|')
  for r in rows:
    print(
        f"| {r['set']} | {r['sigma']:g} | {r['images']} | {r['mae']:.2f} | {r['bias']:+.2f} | "
        f"{r['max_abs']:.2f} | {r['seconds_per_image']:.2f} |"
    )
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))
  return 0


if __name__ == '__main__':
  sys.exit(main())
