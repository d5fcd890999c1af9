"""Denoises your own image files with a shipped pretrained model; writes PNGs.

  python -m dxnet_jax.denoise --model denoise_dxnet_444_s50_budget photo.png --out denoised/
  python -m dxnet_jax.denoise --model NAME --add-noise 50 --seed 0 clean.png --out out/

Inputs are image files (or folders of them). A gray model denoises gray images directly and an
RGB image one channel at a time (each channel as a gray image); the output keeps the input's mode.
The models are non-blind: each was trained at one noise level (model.json `config.data.sigma`).
`--sigma` states your images' noise level (default: the model's); a level other than the
model's is allowed with a warning, since results degrade away from it.
`--add-noise SIGMA` first adds Gaussian noise N(0, SIGMA/255) (DnCNN protocol: not clipped) to
each clean input with `--seed`, writes the noisy copy (clipped, 8-bit, for viewing) and reports
PSNR of the noisy input and of the output against the clean file.
Writes <out>/<stem>_denoised.png (and <stem>_noisy.png with --add-noise).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

from dxnet_jax import kernels
from dxnet_jax import metrics
from dxnet_jax import pretrained


def _parse(argv):
  parser = argparse.ArgumentParser(
      prog='python -m dxnet_jax.denoise',
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument('--model', required=True, help='a pretrained name (see --list)')
  parser.add_argument('--sigma', type=float, help='noise level of the inputs (0-255 scale)')
  parser.add_argument(
      '--add-noise',
      type=float,
      metavar='SIGMA',
      help='add N(0, SIGMA/255) noise to each (clean) input first; report PSNR',
  )
  parser.add_argument('--seed', type=int, default=0, help='seed of --add-noise (default 0)')
  parser.add_argument('--out', required=True, help='output folder')
  parser.add_argument('inputs', nargs='+', metavar='IN', help='image files or folders')
  return parser.parse_args(argv)


def denoise_image(predict, noisy: np.ndarray, model_channels: int) -> np.ndarray:
  """noisy float [H, W, C] (0-1 scale) -> float [H, W, C]; a gray model runs per channel."""
  if noisy.shape[-1] == model_channels:
    return predict(noisy)
  if model_channels == 1:
    return np.concatenate([predict(noisy[..., c : c + 1]) for c in range(noisy.shape[-1])], -1)
  return predict(np.repeat(noisy, model_channels, axis=-1)).mean(-1, keepdims=True)


def run(args) -> list[dict]:
  model, variables, config = pretrained.load(args.model)
  pretrained.check_task(args.model, config, 'denoising')
  trained_sigma = config.data.sigma
  sigma = args.add_noise if args.add_noise is not None else args.sigma
  if sigma is not None and np.ndim(trained_sigma) == 0 and abs(sigma - trained_sigma) > 1e-6:
    print(
        f'warning: {args.model} was trained at sigma {trained_sigma:g}; your inputs are at '
        f'sigma {sigma:g}',
        file=sys.stderr,
    )
  if args.add_noise is not None and not 0 < args.add_noise <= 255:
    raise ValueError(f'--add-noise must be in (0, 255], got {args.add_noise:g}')
  model_channels = int(config.data.channels)
  inputs = pretrained.read_inputs(args.inputs, 3)
  out_dir = pathlib.Path(args.out)
  predict = pretrained.predictor(model, variables)
  rows = []
  for index, (path, pixels, gray) in enumerate(inputs):
    if gray or model_channels == 1 and np.all(pixels == pixels[..., :1]):
      pixels = pixels[..., :1]
    clean = pixels.astype(np.float32) / 255.0
    row = {'file': str(path)}
    if args.add_noise is not None:
      rng = np.random.default_rng([args.seed, index])
      from dxnet_jax.data import degrade  # pylint: disable=g-import-not-at-top

      noisy = degrade.add_noise(clean, args.add_noise, rng)
      pretrained.write_png(out_dir / f'{path.stem}_noisy.png', metrics.to_uint8(noisy))
      row['noisy_psnr'] = metrics.psnr(metrics.to_uint8(noisy), pixels)
    else:
      noisy = clean
    output = metrics.to_uint8(denoise_image(predict, noisy, model_channels))
    target = out_dir / f'{path.stem}_denoised.png'
    pretrained.write_png(target, output)
    row['output'] = str(target)
    if args.add_noise is not None:
      row['denoised_psnr'] = metrics.psnr(output, pixels)
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
    if 'noisy_psnr' in row:
      line += f"  (noisy {row['noisy_psnr']:.2f} dB -> denoised {row['denoised_psnr']:.2f} dB)"
    print(line)
  return 0


if __name__ == '__main__':
  sys.exit(main())
