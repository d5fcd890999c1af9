"""Up-scales your own image files x4 with a shipped pretrained super-resolution model.

  python -m dxnet_jax.upscale --model sr_dxnet16_budget small.png --out big/
  python -m dxnet_jax.upscale --model NAME --downscale hr.png --out out/

Inputs are image files (or folders of them), RGB or gray (a gray image goes through the RGB
model as three equal channels and is written back as gray). Writes <out>/<stem>_x4.png.
`--downscale` treats each input as a high-resolution reference: it is cropped to a multiple of 4,
bicubic-downscaled by 4 (PIL, the benchmark protocol), up-scaled by the model, and the Y-PSNR
(BT.601, 4-px border removed) of the model and of bicubic up-scaling are reported; the LR and
bicubic images are written too (<stem>_lr.png, <stem>_bicubic.png).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

from dxnet_jax import kernels
from dxnet_jax import metrics
from dxnet_jax import pretrained
from dxnet_jax.data import degrade


def _parse(argv):
  parser = argparse.ArgumentParser(
      prog='python -m dxnet_jax.upscale',
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument('--model', required=True, help='a pretrained super-resolution name')
  parser.add_argument(
      '--downscale',
      action='store_true',
      help='inputs are HR references: downscale x4 first and report Y-PSNR',
  )
  parser.add_argument('--out', required=True, help='output folder')
  parser.add_argument('inputs', nargs='+', metavar='IN', help='image files or folders')
  return parser.parse_args(argv)


def run(args) -> list[dict]:
  model, variables, config = pretrained.load(args.model)
  pretrained.check_task(args.model, config, 'super_resolution')
  scale = int(config.data.scale)
  inputs = pretrained.read_inputs(args.inputs, 3)
  out_dir = pathlib.Path(args.out)
  predict = pretrained.predictor(model, variables)
  rows = []
  for path, pixels, gray in inputs:
    row = {'file': str(path)}
    if args.downscale:
      hr = degrade.modcrop(pixels, scale)
      if min(hr.shape[:2]) < scale:
        raise ValueError(f'{path}: {pixels.shape[1]}x{pixels.shape[0]} is too small to downscale')
      lr = degrade.downscale(hr, scale)
      bicubic = degrade.upscale(lr, scale)
      pretrained.write_png(out_dir / f'{path.stem}_lr.png', lr[..., :1] if gray else lr)
      pretrained.write_png(
          out_dir / f'{path.stem}_bicubic.png', bicubic[..., :1] if gray else bicubic
      )
      ref = hr[..., :1] if gray else hr
    else:
      lr = pixels
    output = metrics.to_uint8(predict(lr.astype(np.float32) / 255.0))
    if gray:
      output = np.round(output.astype(np.float64).mean(-1, keepdims=True)).astype(np.uint8)
    target = out_dir / f'{path.stem}_x{scale}.png'
    pretrained.write_png(target, output)
    row['output'] = str(target)
    if args.downscale:
      row['bicubic_psnr'] = metrics.super_resolution_scores(
          bicubic[..., :1] if gray else bicubic, ref, scale
      )['psnr']
      row['model_psnr'] = metrics.super_resolution_scores(
          output.astype(np.float32) / 255.0, ref, scale
      )['psnr']
    rows.append(row)
  return rows


def main(argv=None) -> int:
  kernels.prepare_process()
  args = _parse(argv)
  try:
    rows = run(args)
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  for row in rows:
    line = f"{row['file']} -> {row['output']}"
    if 'model_psnr' in row:
      line += f"  (Y-PSNR: bicubic {row['bicubic_psnr']:.2f} dB, model {row['model_psnr']:.2f} dB)"
    print(line)
  return 0


if __name__ == '__main__':
  sys.exit(main())
