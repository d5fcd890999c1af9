"""Up-scales your own image files with a shipped pretrained super-resolution model (x4).

examples:
  dxnet-upscale --model sr_dxnet16_x4_budget small.png --out big/
  dxnet-upscale --model sr_dxnet16_x4_budget 'thumbs/*.jpg' --out big/ --tile 64
  dxnet-upscale --model sr_dxnet16_x4_budget --downscale ../shared/data/Set5 --out set5/

Inputs are image files, folders (their image files, in name order) and glob patterns (quoted
patterns are expanded by the command; '**' recurses). PNG, TIFF, JPEG, BMP, WebP, PPM/PGM, gray
or colour, 8 or 16 bits per channel. Each output keeps its input's bit depth and mode (the net
computes in float32 on [0, 1]): <out>/<stem>_x4.png, or .tif for a TIFF input, 16-bit colour
included. A gray image goes through the RGB model as three equal channels and is written back as
gray (the mean of the output channels); an alpha channel is scaled bicubically.

`--downscale` treats each input as a high-resolution reference: it is cropped to a multiple of 4,
bicubic-downscaled by 4 (PIL, the benchmark protocol; 16-bit images in float), up-scaled by the
model, and the Y-PSNR (BT.601, 8-bit, 4-px border removed) of the model and of bicubic
up-scaling are reported; the LR and bicubic images are written too (<stem>_lr, <stem>_bicubic).

Images are up-scaled in tiles of --tile input pixels with the model's receptive field (178 px for
DxNet16) as overlap (dxnet_jax/inference.py): the result equals up-scaling the whole image at
once, and memory stays bounded (the image, its output, and about 2.4 GB for 128-px tiles).
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
from PIL import Image

from dxnet_jax import image_files
from dxnet_jax import inference
from dxnet_jax import metrics
from dxnet_jax import pretrained
from dxnet_jax.data import degrade

DEFAULT_TILE = 128


def _parser():
  parser = inference.command_parser(
      'dxnet-upscale',
      __doc__,
      'a pretrained super-resolution model',
      DEFAULT_TILE,
      'tile size in input pixels',
  )
  parser.add_argument(
      '--downscale',
      action='store_true',
      help='inputs are HR references: downscale x4 first and report Y-PSNR',
  )
  return parser


def resize_bicubic(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """PIL bicubic resize of uint8 or uint16 [H, W, C] to (height, width), same dtype.

  8 bits: `degrade.resize_bicubic`, the benchmark protocol. 16 bits: PIL's float mode, rounded.
  """
  if pixels.dtype == np.uint8:
    return degrade.resize_bicubic(pixels, size)
  h, w = size
  planes = [
      np.asarray(
          Image.fromarray(pixels[..., c].astype(np.float32)).resize(
              (w, h), Image.Resampling.BICUBIC
          )
      )
      for c in range(pixels.shape[-1])
  ]
  peak = np.iinfo(pixels.dtype).max
  return inference.quantize(np.stack(planes, axis=-1) / peak, pixels.dtype)


def _scaled(pixels: np.ndarray | None, scale: float) -> np.ndarray | None:
  if pixels is None:
    return None
  h, w = pixels.shape[:2]
  return resize_bicubic(pixels, (round(h * scale), round(w * scale)))


def _targets(out_dir: pathlib.Path, scale: int, downscale: bool):
  def targets(path: pathlib.Path) -> dict[str, pathlib.Path]:
    suffix = inference.output_suffix(path)
    out = {'upscaled': out_dir / f'{path.stem}_x{scale}{suffix}'}
    if downscale:
      out['lr'] = out_dir / f'{path.stem}_lr{suffix}'
      out['bicubic'] = out_dir / f'{path.stem}_bicubic{suffix}'
    return out

  return targets


def _y_psnr(output: np.ndarray, hr: np.ndarray, scale: int) -> float:
  """The SR protocol's Y-PSNR (8-bit) of an output against the HR reference, any bit depth."""
  peak = np.iinfo(hr.dtype).max
  hr8 = inference.quantize(hr / peak, np.uint8)
  return metrics.super_resolution_scores(output / np.iinfo(output.dtype).max, hr8, scale)['psnr']


def _upscaler(tiled: inference.TiledModel, args) -> inference.Process:
  """process(job, picture) of `inference.run_files` for these arguments."""
  scale = tiled.scale

  def process(job, picture):
    del job
    pixels, alpha, dtype, peak = picture.pixels, picture.alpha, picture.pixels.dtype, picture.peak
    outputs, note = {}, ''
    if args.downscale:
      hr = degrade.modcrop(pixels, scale)
      if min(hr.shape[:2]) < scale:
        raise ValueError(f'{pixels.shape[1]}x{pixels.shape[0]} is too small to downscale')
      hr_alpha = None if alpha is None else degrade.modcrop(alpha, scale)
      pixels, alpha = _scaled(hr, 1 / scale), _scaled(hr_alpha, 1 / scale)
      bicubic = _scaled(pixels, scale)
      outputs['lr'] = image_files.Picture(pixels, alpha, picture.icc_profile)
      outputs['bicubic'] = image_files.Picture(bicubic, _scaled(alpha, scale), picture.icc_profile)
    h, w, channels = pixels.shape
    upscaled = np.empty((scale * h, scale * w, channels), dtype)
    inference.apply_by_channels(
        tiled,
        pixels,
        upscaled,
        prepare=lambda window: window.astype(np.float32) / peak,
        finish=lambda y: inference.quantize(y, dtype),
    )
    outputs = {
        'upscaled': image_files.Picture(upscaled, _scaled(alpha, scale), picture.icc_profile),
        **outputs,
    }
    if args.downscale:
      note = (
          f'  (Y-PSNR: bicubic {_y_psnr(bicubic, hr, scale):.2f} dB, model '
          f'{_y_psnr(upscaled, hr, scale):.2f} dB)'
      )
    return outputs, note

  return process


def run(args) -> int:
  """Up-scales every input as `args` say; returns the exit status of `inference.run_files`."""
  files = inference.expand_inputs(args.inputs)
  out_dir = inference.check_out_dir(args.out)
  model, variables, config = pretrained.load(args.model)
  inference.check_task(args.model, config, 'super_resolution')
  scale = int(config.data.scale)
  jobs = inference.plan_jobs(files, _targets(out_dir, scale, args.downscale))
  tiled = inference.TiledModel(
      model, variables, channels=int(config.data.channels), scale=scale, tile=args.tile
  )
  return inference.run_files(jobs, _upscaler(tiled, args), overwrite=args.overwrite)


def main(argv=None) -> int:
  return inference.command_main(_parser(), run, argv)


if __name__ == '__main__':
  sys.exit(main())
