"""Peak memory and time of `python -m dxnet_jax.denoise` on large synthetic gray photos.

    python -m benchmarks.inference_memory [--sizes 6000x4000,3000x2000] [--tile 512]

Each size is denoised by the command in a fresh process (tiled inference, dxnet_jax/inference.py)
and that process's peak resident memory is read from `os.wait4`. The first row is one window
(tile + 2 * receptive-field radius px a side): the runtime, the weights and one window's
activations, what every size pays. Tiling keeps the rest to the image itself: `peak - window
row` should stay near the input + output arrays (`image MiB`, 8-bit gray: 2 bytes per pixel),
whatever the size. The photo is a smooth pattern plus N(0, 25^2) noise, written as an 8-bit PNG.
"""

import argparse
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from benchmarks import timing
from dxnet_jax import inference
from dxnet_jax import pretrained

MiB = 2**20


def synthetic_photo(height: int, width: int, sigma: float = 25.0, seed: int = 0) -> np.ndarray:
  """uint8 [height, width]: a smooth gray pattern with Gaussian noise, made in strips of rows."""
  rng = np.random.default_rng(seed)
  photo = np.empty((height, width), np.uint8)
  x = np.arange(width, dtype=np.float32)
  for start in range(0, height, 512):
    y = np.arange(start, min(start + 512, height), dtype=np.float32)[:, None]
    clean = 128 + 60 * np.sin(x / 97) * np.cos(y / 131) + 40 * np.sin((x + y) / 53)
    noisy = clean + sigma * rng.standard_normal(clean.shape, np.float32)
    photo[start : start + len(y)] = np.clip(np.round(noisy), 0, 255)
  return photo


def denoise_once(model: str, tile: int, image: pathlib.Path, out: pathlib.Path) -> dict:
  """Runs the denoise command on one file; its peak RSS, wall time and per-file time."""
  command = [sys.executable, '-m', 'dxnet_jax.denoise', '--model', model, '--tile', str(tile)]
  start = time.perf_counter()
  process = subprocess.Popen(
      command + [str(image), '--out', str(out)],
      stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE,
      text=True,
  )
  stderr = process.stderr.read()
  _, status, usage = os.wait4(process.pid, 0)
  wall = time.perf_counter() - start
  if os.waitstatus_to_exitcode(status) != 0:
    raise RuntimeError(f'denoise failed on {image}:\n{stderr[-2000:]}')
  file_seconds = float(re.search(r'\(([\d.]+) s\)', stderr).group(1))
  return {'peak_mib': usage.ru_maxrss * 1024 / MiB, 'wall_s': wall, 'file_s': file_seconds}


def _window(model: str, tile: int) -> int:
  """Side of the command's window: tile + 2 * the model's receptive-field radius."""
  net, variables, config = pretrained.load(model)
  return tile + 2 * inference.receptive_field_radius(net, variables, int(config.data.channels))


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='denoise_dxnet_444_s50_h200')
  parser.add_argument('--sizes', default='6000x4000,3000x2000', help='WIDTHxHEIGHT,...')
  parser.add_argument('--tile', type=int, default=512)
  args = parser.parse_args(argv)
  window = _window(args.model, args.tile)
  sizes = [(window, window)] + [tuple(map(int, s.split('x'))) for s in args.sizes.split(',')]
  print(
      f'# denoise command, {args.model}, tile {args.tile} (window {window} px); {timing.machine()}'
  )
  print(
      f'{"size":>11} {"Mpx":>6} {"image MiB":>9} {"peak RSS MiB":>12} {"- window row":>12} '
      f'{"wall s":>7} {"file s":>7} {"Mpx/s":>6}'
  )
  base = None
  with tempfile.TemporaryDirectory() as tmp:
    for width, height in sizes:
      image = pathlib.Path(tmp) / f'photo_{width}x{height}.png'
      Image.fromarray(synthetic_photo(height, width)).save(image)
      row = denoise_once(args.model, args.tile, image, pathlib.Path(tmp) / 'out')
      base = row['peak_mib'] if base is None else base
      megapixels = width * height / 1e6
      print(
          f'{width:>5}x{height:<5} {megapixels:6.1f} {2 * width * height / MiB:9.1f} '
          f'{row["peak_mib"]:12.0f} {row["peak_mib"] - base:12.0f} {row["wall_s"]:7.1f} '
          f'{row["file_s"]:7.1f} {megapixels / row["file_s"]:6.3f}',
          flush=True,
      )
      image.unlink()


if __name__ == '__main__':
  main()
