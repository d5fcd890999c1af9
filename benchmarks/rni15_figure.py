"""Before/after crops of the RNI15 real noisy photos through `dxnet-denoise`; one PNG figure.

    python -m benchmarks.rni15_figure                        # the command's default model(s)
    python -m benchmarks.rni15_figure --model denoise_dxnet_444_s50_h200 --out rni15_s50.png
    python -m benchmarks.rni15_figure --weights my_models/ --model NAME --images Dog,Frog

RNI15 holds real photos with real noise of unknown level and no clean reference, so a figure is
how a result is judged. Each photo goes through the denoise command as a user runs it (in this
process: `dxnet_jax.denoise.main`, without `--sigma`: a blind model uses the level it estimates),
and a centred `--crop` px square of the photo and of its result is shown side by side. Every
title carries the photo's estimated noise level (`dxnet_jax.noise_level.estimate_sigma`, what
the command estimates); the result's title gives the level the model used where the command
reports one (blind models), else the level the model was trained at.

`--out` (default docs/images/rni15.png) is never replaced without `--overwrite`. `--weights`
reads the models from another folder of shipped-model layout (`$DXNET_PRETRAINED_DIR`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import pathlib
import re
import sys
import tempfile

import numpy as np

from dxnet_jax import _optional
from dxnet_jax import denoise
from dxnet_jax import image_files
from dxnet_jax import inference
from dxnet_jax import noise_level
from dxnet_jax import pretrained
from dxnet_jax.analysis import figures
from dxnet_jax.data import paths

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / 'docs' / 'images' / 'rni15.png'
RESULT_LINE = re.compile(r'^(?P<path>.+?) -> (?P<target>\S+)(?P<note>.*)$')


def photos(folder: pathlib.Path, names: str | None, limit: int) -> list[pathlib.Path]:
  """The folder's photos in name order: those whose stems `names` lists (comma-separated), or
  the first `limit` (0: all)."""
  found = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith('.'))
  if names:
    wanted = names.split(',')
    by_stem = {p.stem: p for p in found}
    unknown = [n for n in wanted if n not in by_stem]
    if unknown:
      raise ValueError(f'{folder} has no photos {unknown}; it has {sorted(by_stem)}')
    found = [by_stem[n] for n in wanted]
  return found[:limit] if limit else found


def run_denoise(files, model: str | None, out: pathlib.Path, tile: int | None) -> dict[str, str]:
  """Runs the denoise command on `files` into `out`; {input path: the note of its result line}."""
  argv = ['--model', model] if model else []
  argv += ['--tile', str(tile)] if tile else []
  argv += [*map(str, files), '--out', str(out)]
  stdout = io.StringIO()
  with contextlib.redirect_stdout(stdout):
    status = denoise.main(argv)
  if status:
    raise RuntimeError(f'dxnet-denoise {" ".join(argv)} ended with status {status}')
  notes = {}
  for line in stdout.getvalue().splitlines():
    match = RESULT_LINE.match(line)
    if match:
      notes[match['path']] = match['note']
  return notes


def centre_crop(pixels: np.ndarray, side: int) -> np.ndarray:
  height, width = pixels.shape[:2]
  h, w = min(side, height), min(side, width)
  top, left = (height - h) // 2, (width - w) // 2
  return pixels[top : top + h, left : left + w]


def titles(stem: str, estimate: float, note: str, model: str | None) -> tuple[str, str]:
  """(noisy panel's title, denoised panel's title) from the command's note on the photo."""
  used = re.search(r'sigma ([\d.]+)', note)
  named = re.search(r'model (\S+)', note)
  name = named.group(1) if named else model
  if used:
    level = f'denoised at σ {float(used.group(1)):.1f}'
  else:
    trained = pretrained.manifest(name)['config']['data']['sigma']
    level = f'denoised (trained at σ {trained:g})'
  return f'{stem}: noisy, est. σ {estimate:.1f}', f'{level}, est. σ {estimate:.1f}'


def figure(panels, columns: int):
  """A matplotlib figure of (noisy crop, denoised crop, noisy title, denoised title) tuples
  (crops [h, w, 1 or 3] on [0, 1]), `columns` photos (two panels each) per row."""
  plt = figures.pyplot()
  rows = math.ceil(len(panels) / columns)
  cols = 2 * min(columns, len(panels))
  fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.6 * rows), squeeze=False)
  for ax in axes.flat:
    ax.axis('off')
  for i, (noisy, clean, noisy_title, clean_title) in enumerate(panels):
    row, col = divmod(i, columns)
    for ax, pixels, title in zip(
        axes[row, 2 * col : 2 * col + 2], (noisy, clean), (noisy_title, clean_title)
    ):
      gray = pixels.shape[-1] == 1
      ax.imshow(pixels[..., 0] if gray else pixels, cmap='gray' if gray else None, vmin=0, vmax=1)
      ax.set_title(title, fontsize=7)
  fig.tight_layout()
  return fig


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m benchmarks.rni15_figure',
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument('--model', help="the denoiser (default: the command's own choice)")
  parser.add_argument('--weights', help='folder of models to read it from ($DXNET_PRETRAINED_DIR)')
  parser.add_argument('--images', help='comma-separated photo names (stems; default all)')
  parser.add_argument('--limit', type=int, default=0, help='the first N photos (0: all)')
  parser.add_argument('--folder', default='RNI15', help='photo folder (under the data root)')
  parser.add_argument('--crop', type=int, default=192, help='crop side in px (default 192)')
  parser.add_argument('--columns', type=int, default=3, help='photos per row (default 3)')
  parser.add_argument('--tile', type=int, help="the command's --tile (default its own)")
  parser.add_argument('--dpi', type=int, default=110)
  parser.add_argument('--out', default=str(DEFAULT_OUT), help='the PNG to write')
  parser.add_argument('--overwrite', action='store_true', help='replace an existing --out')
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out)
  if out.exists() and not args.overwrite:
    parser.error(f'{out} exists; --overwrite replaces it')
  if args.weights:
    os.environ[pretrained.ENV_VAR] = str(pathlib.Path(args.weights).expanduser().resolve())
  _optional.require('matplotlib', 'plots', 'python -m benchmarks.rni15_figure').use('Agg')
  folder = pathlib.Path(args.folder).expanduser()
  folder = folder if folder.is_dir() else paths.data_root() / args.folder
  try:
    files = photos(folder, args.images, args.limit)
  except (ValueError, OSError) as e:
    parser.error(str(e))
  panels = []
  with tempfile.TemporaryDirectory(prefix='dxnet-rni15-') as tmp:
    notes = run_denoise(files, args.model, pathlib.Path(tmp), args.tile)
    for path in files:
      noisy = image_files.read(path)
      target = pathlib.Path(tmp) / f'{path.stem}_denoised{inference.output_suffix(path)}'
      clean = image_files.read(target)
      estimate = noise_level.estimate_sigma(noisy.pixels)
      note = notes[str(path)]
      print(f'{path.name}: estimated sigma {estimate:.1f};{note}', flush=True)
      panels.append(
          (
              centre_crop(noisy.pixels / noisy.peak, args.crop),
              centre_crop(clean.pixels / clean.peak, args.crop),
              *titles(path.stem, estimate, note, args.model),
          )
      )
  figures.save(figure(panels, args.columns), str(out), args.dpi)
  print(f'wrote {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
