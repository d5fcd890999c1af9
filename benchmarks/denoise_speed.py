"""Speed of `dxnet-denoise` on a big colour photo, cold and warm, beside CBM3D; one table.

    python -m benchmarks.denoise_speed                                  # the command's default
    python -m benchmarks.denoise_speed --model denoise_dxnet_444_s50_h200 --megapixels 24
    python -m benchmarks.denoise_speed --megapixels 0.05 --bm3d-megapixels 0.02   # checks it runs

The photo: a real colour image (`--source`, default CBSD68's 101085.png under the data root)
mirrored across its edges until it has `--megapixels` pixels at 4:3 (CBSD68 photos are 0.15 MP,
so a camera-sized photo repeats one scene), plus Gaussian noise of `--noise` on the 0-255 scale,
written as 8-bit PNGs (`--images` of them, each with its own noise) to a temporary folder.

dxnet-denoise: the command as a user runs it (`python -m dxnet_jax.denoise`, this checkout's
package) in a fresh process on all the photos, twice, in one new compilation cache folder
(`$DXNET_JAX_CACHE`): cold is the first run (empty cache: every program compiled, the receptive
field measured), warm the second. The native CPU kernels' build cache (`$DXNET_JAX_NATIVE_CACHE`)
is left as it is: on a machine that never built them, the cold run also builds them. Without `--model` the command picks its own model; it gets no
`--sigma` (a blind model estimates the level, another one assumes its training level). CBM3D
(`bm3d.bm3d_rgb`, given the true sigma) runs in this process on the first photo, or on a centred
crop of `--bm3d-megapixels` of it when that is smaller, scaled to the whole photo by pixel count
(the table says so): it compiles nothing, so it has no cold time.

Columns: wall seconds of each run of the whole command (start-up, reading, denoising, writing),
the seconds the warm run's per-file lines report (reading, denoising, writing), and images/s and
megapixels/s of the warm run's wall time.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import re
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from benchmarks import startup
from benchmarks import timing
from dxnet_jax.data import paths

REPO = pathlib.Path(__file__).resolve().parents[1]
SOURCE = 'CBSD68/101085.png'
_ROWS = 256  # rows of noise drawn at a time
FILE_SECONDS = re.compile(r'^\[\d+/\d+\] .* -> .* \(([\d.]+) s\)$', re.M)


def photo_size(megapixels: float) -> tuple[int, int]:
  """(width, height) at 4:3 with about `megapixels` million pixels."""
  width = max(1, round(math.sqrt(megapixels * 1e6 * 4 / 3)))
  return width, max(1, round(width * 3 / 4))


def _mirrored(length: int, size: int) -> np.ndarray:
  """Indices 0..length-1 of an axis of `size` pixels repeated with every other copy mirrored,
  so the tiles meet without a seam."""
  i = np.arange(length) % (2 * size)
  return np.where(i < size, i, 2 * size - 1 - i)


def noisy_photo(source: np.ndarray, size: tuple[int, int], sigma: float, seed: int) -> np.ndarray:
  """uint8 [height, width, 3]: `source` mirrored to `size` plus N(0, sigma^2) noise (0-255
  scale), clipped and rounded; drawn in strips of rows so a large photo needs little memory."""
  width, height = size
  rows, cols = _mirrored(height, source.shape[0]), _mirrored(width, source.shape[1])
  rng = np.random.default_rng(seed)
  photo = np.empty((height, width, source.shape[2]), np.uint8)
  for start in range(0, height, _ROWS):
    clean = source[rows[start : start + _ROWS]][:, cols].astype(np.float32)
    noise = rng.standard_normal(clean.shape, np.float32) * np.float32(sigma)
    photo[start : start + len(clean)] = np.clip(np.round(clean + noise), 0, 255)
  return photo


def _read_source(source: str) -> np.ndarray:
  path = pathlib.Path(source).expanduser()
  if not path.is_file():
    path = paths.data_root() / source
  return np.asarray(Image.open(path).convert('RGB'))


def time_command(files, model, tile, scratch: pathlib.Path) -> dict:
  """Cold and warm wall seconds of the denoise command on `files`, the warm run's per-file
  seconds summed."""
  command = [sys.executable, '-m', 'dxnet_jax.denoise', *map(str, files)]
  command += ['--out', str(scratch / 'out'), '--overwrite']
  command += ['--model', model] if model else []
  command += ['--tile', str(tile)] if tile else []
  env = {k: v for k, v in os.environ.items() if not k.startswith('JAX_COMPILATION_CACHE')}
  env['DXNET_JAX_CACHE'] = str(scratch / 'cache')
  env['PYTHONPATH'] = os.pathsep.join([str(REPO), env.get('PYTHONPATH', '')]).rstrip(os.pathsep)
  walls, log = [], []
  for _ in range(2):
    log.clear()
    walls.append(startup.time_command(command, False, env, REPO, log))
  per_file = [float(s) for s in FILE_SECONDS.findall(''.join(log))]
  if len(per_file) != len(files):
    raise RuntimeError(f'expected {len(files)} per-file lines:\n{"".join(log[-15:])}')
  return {'cold': walls[0], 'warm': walls[1], 'files': sum(per_file)}


def time_cbm3d(photo: np.ndarray, sigma: float, megapixels: float) -> dict:
  """Seconds of CBM3D on `photo`, or on a centred crop of `megapixels` scaled by pixel count."""
  from benchmarks import bm3d_baseline  # pylint: disable=g-import-not-at-top

  height, width = photo.shape[:2]
  crop = photo
  if 0 < megapixels * 1e6 < height * width:
    side_h = min(height, max(1, round(math.sqrt(megapixels * 1e6 * height / width))))
    side_w = min(width, max(1, round(megapixels * 1e6 / side_h)))
    top, left = (height - side_h) // 2, (width - side_w) // 2
    crop = photo[top : top + side_h, left : left + side_w]
  start = time.perf_counter()
  bm3d_baseline.bm3d_denoise(crop.astype(np.float32) / 255, sigma)
  seconds = time.perf_counter() - start
  scale = height * width / (crop.shape[0] * crop.shape[1])
  return {'seconds': seconds * scale, 'crop': crop.shape[:2], 'scale': scale}


def table(rows: list[dict], images: int, megapixels: float) -> str:
  """The markdown table; each row: method, cold (None: none), warm, files seconds."""
  lines = [
      '| method | cold s | warm s | warm per-file s | images/s | megapixels/s |',
      '|---|---:|---:|---:|---:|---:|',
  ]
  for row in rows:
    cold = '-' if row['cold'] is None else f"{row['cold']:.1f}"
    lines.append(
        f"| {row['method']} | {cold} | {row['warm']:.1f} | {row['files']:.1f} | "
        f"{images / row['warm']:.3g} | {images * megapixels / row['warm']:.3g} |"
    )
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m benchmarks.denoise_speed',
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument('--model', help="the denoiser (default: the command's own choice)")
  parser.add_argument('--megapixels', type=float, default=12.0, help='photo size (default 12)')
  parser.add_argument('--images', type=int, default=1, help='photos per run (default 1)')
  parser.add_argument('--source', default=SOURCE, help=f'colour image to tile (default {SOURCE})')
  parser.add_argument('--noise', type=float, default=25.0, help='noise sigma, 0-255 (default 25)')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--tile', type=int, help="the command's --tile (default its own)")
  parser.add_argument(
      '--bm3d-megapixels',
      type=float,
      default=1.0,
      help='CBM3D on a crop this large, scaled by pixel count (default 1; 0: the whole photo)',
  )
  parser.add_argument('--no-bm3d', action='store_true', help='time only the command')
  args = parser.parse_args(argv)
  if args.megapixels <= 0 or args.images < 1:
    parser.error('--megapixels must be positive and --images at least 1')
  size = photo_size(args.megapixels)
  megapixels = size[0] * size[1] / 1e6
  source = _read_source(args.source)
  print(
      f'# {args.images} photo(s) of {size[0]}x{size[1]} ({megapixels:.2f} MP): {args.source} '
      f'mirrored, noise sigma {args.noise:g}; {timing.machine()}',
      flush=True,
  )
  rows = []
  with tempfile.TemporaryDirectory(prefix='dxnet-denoise-speed-') as tmp:
    scratch = pathlib.Path(tmp)
    files = []
    for i in range(args.images):
      files.append(scratch / f'photo_{i}.png')
      photo = noisy_photo(source, size, args.noise, args.seed + i)
      Image.fromarray(photo).save(files[-1])
      del photo
    try:
      times = time_command(files, args.model, args.tile, scratch)
    except RuntimeError as e:
      print(f'denoise_speed: the denoise command failed: {e}', file=sys.stderr)
      return 1
    name = f'--model {args.model}' if args.model else 'its default model'
    rows.append({'method': f'dxnet-denoise, {name}', **times})
    print(f"dxnet-denoise: cold {times['cold']:.1f} s, warm {times['warm']:.1f} s", file=sys.stderr)
    if not args.no_bm3d:
      try:
        import bm3d  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
      except ImportError:
        print("# CBM3D skipped: bm3d is not installed (pip install -e '.[eval]')")
      else:
        first = np.asarray(Image.open(files[0]))
        cbm3d = time_cbm3d(first, args.noise, args.bm3d_megapixels)
        method = 'CBM3D (bm3d.bm3d_rgb)'
        if cbm3d['scale'] > 1:
          h, w = cbm3d['crop']
          method += f' on a {w}x{h} crop, x{cbm3d["scale"]:.3g} by pixel count'
        seconds = cbm3d['seconds'] * args.images
        rows.append({'method': method, 'cold': None, 'warm': seconds, 'files': seconds})
  print(table(rows, args.images, megapixels))
  return 0


if __name__ == '__main__':
  sys.exit(main())
