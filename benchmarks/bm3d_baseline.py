"""BM3D on the same noisy benchmark images the models are scored on; prints a table.

  pip install -e '.[eval]'    # the optional `bm3d` dependency
  python benchmarks/bm3d_baseline.py --set BSD68 --set Set12 --sigma 50 \
      --json runs/bm3d/sigma50.json
  python benchmarks/bm3d_baseline.py --set CBSD68 --channels 3 --sigma 25 --limit 10 \
      --json runs/bm3d/cbsd68_sigma25.json      # CBM3D (`bm3d.bm3d_rgb`) on colour images

The noisy images come from `dxnet_jax.data.eval_sets.load` with the same noise seed as
`python -m dxnet_jax.evaluate` (image i of a set uses `(seed, i)`), so BM3D sees exactly the
inputs the networks see. BM3D gets the true sigma (`sigma_psd = sigma / 255`) and the unclipped
noisy image; its output is clipped and rounded to 8 bits and scored with the DnCNN protocol
(`dxnet_jax.metrics.denoising_scores`). The result JSON is rewritten after every image so a long
run can be watched (and is never lost).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

from dxnet_jax import kernels
from dxnet_jax import metrics
from dxnet_jax.data import eval_sets


def bm3d_denoise(noisy: np.ndarray, sigma: float) -> np.ndarray:
  """noisy float [H, W, C] in [0,1] scale (unclipped) -> BM3D estimate [H, W, C]."""
  import bm3d  # pylint: disable=g-import-not-at-top

  if noisy.shape[-1] == 1:
    gray = noisy[..., 0].astype(np.float64)
    return np.asarray(bm3d.bm3d(gray, sigma_psd=sigma / 255.0))[..., None]
  return np.asarray(bm3d.bm3d_rgb(noisy.astype(np.float64), sigma / 255.0))


def main(argv=None) -> int:
  kernels.prepare_process()
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument('--set', dest='sets', action='append', default=[])
  parser.add_argument('--sigma', type=float, default=50.0)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument(
      '--channels',
      type=int,
      choices=(1, 3),
      default=1,
      help='1: gray images, BM3D; 3: colour images, CBM3D (bm3d.bm3d_rgb)',
  )
  parser.add_argument('--limit', type=int, default=0, help='first N images per set (0: all)')
  parser.add_argument('--json', help='write results here (updated after every image)')
  args = parser.parse_args(argv)
  sets = args.sets or ['BSD68', 'Set12']
  try:
    import bm3d  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    print("bm3d is not installed: pip install -e '.[eval]'", file=sys.stderr)
    return 2
  method = 'CBM3D (bm3d.bm3d_rgb' if args.channels == 3 else 'BM3D (bm3d.bm3d'
  out = {
      'method': f'{method}, sigma_psd = sigma/255)',
      'channels': args.channels,
      'sigma': args.sigma,
      'noise_seed': args.seed,
      'results': [],
  }
  start = time.time()
  for set_name in sets:
    images = eval_sets.load(
        set_name, task='denoising', sigma=args.sigma, seed=args.seed, channels=args.channels
    )
    if args.limit:
      images = images[: args.limit]
    row = {'set': set_name, 'images': []}
    out['results'].append(row)
    for image in images:
      t0 = time.time()
      scores = metrics.denoising_scores(bm3d_denoise(image.inputs, args.sigma), image.targets)
      row['images'].append({'name': image.name, **scores, 'seconds': time.time() - t0})
      for key in ('psnr', 'ssim'):
        row[key] = float(np.mean([r[key] for r in row['images']]))
      row['num_images'] = len(row['images'])
      out['wall_seconds'] = time.time() - start
      print(
          f"{set_name} {image.name}: {scores['psnr']:.2f} dB ({time.time() - t0:.1f} s)", flush=True
      )
      if args.json:
        path = pathlib.Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1))
  print(
      f'{out["method"]}, sigma {args.sigma:g}, noise seed {args.seed}, {out["wall_seconds"]:.0f} s'
  )
  for row in out['results']:
    print(
        f"{row['set']:8s} {row['num_images']:3d} images  PSNR {row['psnr']:.2f} dB  "
        f"SSIM {row['ssim']:.4f}"
    )
  return 0


if __name__ == '__main__':
  sys.exit(main())
