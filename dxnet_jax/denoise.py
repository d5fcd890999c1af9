"""Denoises your own image files with a shipped pretrained model.

examples:
  dxnet-denoise photo.png scans/ --out denoised/
  dxnet-denoise --model denoise_dxnet_444_s50_h200 photo.png --out denoised/
  dxnet-denoise --model denoise_dxnet_444_s50_h200 'shots/**/*.tif' scans/ --out clean/
  dxnet-denoise --model denoise_dxnet_444_s50_h200 --add-noise 50 --seed 0 \\
      ../shared/data/Set12 --out set12/

Inputs are image files, folders (their image files, in name order) and glob patterns (quoted
patterns are expanded by the command; '**' recurses). PNG, TIFF, JPEG, BMP, WebP, PPM/PGM, gray
or colour, 8 or 16 bits per channel. Each output keeps its input's bit depth and mode (the net
computes in float32 on [0, 1]): <out>/<stem>_denoised.png, or .tif for a TIFF input, 16-bit
colour included; an alpha channel is copied.

Models. Without --model each image gets a noise-level-conditioned (blind) model of its kind: a
colour image (three channels, not all equal) denoise_dxnet_blind_rgb, a gray one (one channel,
or three equal channels) denoise_dxnet_blind_gray. Each is loaded once, at the first image that
needs it, and each result line names the model used; a default model that is not installed
stops the command (choose one with --model). `--model NAME` runs one model on every image
(`python -m dxnet_jax.pretrained list`): a gray model denoises a colour image one channel at a
time (each channel as a gray image; a colour image with three equal channels once); a colour
model takes a gray image as three equal channels and averages its output back to gray.

Noise level. A noise-level-conditioned (blind) model (`dxnet_denoise_blind`, `_rgb`: trained
for sigma 0-75, model.json `config.data.level_map`) takes the level as an input: `--sigma auto`
(its default) estimates it per image (`dxnet_jax.noise_level`: Chen et al.'s patch-eigenvalue
method; an estimate above the trained range is capped), `--sigma S` sets it by hand (a larger
value gives a smoother result); the level used is printed per image, and a level outside the
trained range is an error. The other models are non-blind: each was trained at one noise level
(model.json `config.data.sigma`); `--sigma` states your images' level (default: the model's),
another one is allowed with a warning, since results degrade away from it.
`--add-noise SIGMA` first adds Gaussian noise N(0, (SIGMA/255)^2) of the pixel range (DnCNN
protocol: not clipped) to each clean input, writes the noisy copy (<stem>_noisy.png, clipped and
rounded) and reports the PSNR of it and of the output against the clean file. Input i of the
list (a folder's files in name order) gets the noise that `python -m dxnet_jax.evaluate --set
FOLDER --sigma SIGMA --seed SEED` gives image i of that folder, so on a folder of 8-bit gray
images both commands report the same per-image PSNR.

Images are denoised in tiles of --tile pixels with the model's receptive field as overlap
(dxnet_jax/inference.py): the result equals denoising the whole image at once, and memory stays
bounded (the image, its output, and about 1.2 GB for 512-px tiles) however large the photo.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import ml_collections
import numpy as np

from dxnet_jax import cli
from dxnet_jax import image_files
from dxnet_jax import inference
from dxnet_jax import noise_level
from dxnet_jax import pretrained
from dxnet_jax.data import degrade
from dxnet_jax.data import eval_sets

DEFAULT_TILE = 512
# The models picked without --model, by the kind of image (`_default_models`).
DEFAULT_GRAY = 'denoise_dxnet_blind_gray'
DEFAULT_COLOUR = 'denoise_dxnet_blind_rgb'
DEFAULTS = {'gray': DEFAULT_GRAY, 'colour': DEFAULT_COLOUR}
_CHOOSE = 'choose an installed denoiser with --model NAME (python -m dxnet_jax.pretrained list)'
_NOISE_ROWS = 256  # rows of noise drawn at a time


def _parser():
  parser = inference.command_parser(
      'dxnet-denoise',
      __doc__,
      f'a pretrained denoising model (default: {DEFAULT_COLOUR} for colour images, '
      f'{DEFAULT_GRAY} for gray ones)',
      DEFAULT_TILE,
      'output tile size in pixels',
      model_required=False,
  )
  parser.add_argument(
      '--sigma',
      type=cli.number_or_auto,
      help="noise level of the inputs (0-255 scale), or 'auto': estimated per image (blind "
      'models; their default)',
  )
  parser.add_argument(
      '--add-noise',
      type=float,
      metavar='SIGMA',
      help='add N(0, (SIGMA/255)^2) noise to each (clean) input first; report PSNR',
  )
  parser.add_argument('--seed', type=int, default=0, help='seed of --add-noise (default 0)')
  return parser


def noisy_image(clean: np.ndarray, peak: int, sigma: float, seed: int, index: int) -> np.ndarray:
  """float32 clean/peak + N(0, (sigma/255)^2) with the noise `evaluate` gives image `index`.

  Drawn in strips of rows from the same generator (`eval_sets.noise_rng`) and in float64 as
  `eval_sets.degrade_images` draws it whole, so the values are the same.
  """
  rng = eval_sets.noise_rng(seed, index)
  noisy = np.empty(clean.shape, np.float32)
  for start in range(0, len(clean), _NOISE_ROWS):
    rows = clean[start : start + _NOISE_ROWS].astype(np.float64) / peak
    noisy[start : start + _NOISE_ROWS] = degrade.add_noise(rows, sigma, rng, dtype=np.float64)
  return noisy


def channels_equal(pixels: np.ndarray, rows: int = 256) -> bool:
  """Whether a colour image [H, W, 3] is gray (three equal channels)."""
  return all(
      np.array_equal(block[..., 1:], np.broadcast_to(block[..., :1], block[..., 1:].shape))
      for block in (pixels[s : s + rows] for s in range(0, len(pixels), rows))
  )


def _targets(out_dir: pathlib.Path, add_noise: bool):
  def targets(path: pathlib.Path) -> dict[str, pathlib.Path]:
    suffix = inference.output_suffix(path)
    out = {'denoised': out_dir / f'{path.stem}_denoised{suffix}'}
    if add_noise:
      out['noisy'] = out_dir / f'{path.stem}_noisy{suffix}'
    return out

  return targets


def _denoiser(tiled: inference.TiledModel, args, levels=None) -> inference.Process:
  """process(job, picture) of `inference.run_files` for these arguments; `levels` (lo, hi): the
  trained sigma range of a noise-level-conditioned model (None: a non-blind model)."""
  channels = tiled.channels - (levels is not None)  # image channels (the map is one more)

  def process(job, picture):
    pixels, dtype, peak = picture.pixels, picture.pixels.dtype, picture.peak
    as_gray = channels == 1 and pixels.shape[-1] == 3 and channels_equal(pixels)
    clean = pixels[..., :1] if as_gray else pixels
    if args.add_noise is None:
      source, prepare = clean, lambda window: window.astype(np.float32) / peak
    else:
      source = noisy_image(clean, peak, args.add_noise, args.seed, job.index)
      prepare = lambda window: window
    denoised = np.empty(clean.shape, dtype)
    finish = lambda y: inference.quantize(y, dtype)
    note = ''
    if levels is None:
      inference.apply_by_channels(tiled, source, denoised, prepare=prepare, finish=finish)
    else:
      sigma, note = _level(source, args.sigma, levels)
      _apply_at_level(tiled, source, denoised, sigma, prepare=prepare, finish=finish)
    keep = lambda image: np.repeat(image, 3, axis=-1) if as_gray else image
    outputs = {'denoised': image_files.Picture(keep(denoised), picture.alpha, picture.icc_profile)}
    if args.add_noise is not None:
      noisy = inference.quantize(source, dtype)
      outputs['noisy'] = image_files.Picture(keep(noisy), picture.alpha, picture.icc_profile)
      note += (
          f'  (noisy {inference.psnr(noisy, clean, peak):.2f} dB -> denoised '
          f'{inference.psnr(denoised, clean, peak):.2f} dB)'
      )
    return outputs, note

  return process


def _level(source: np.ndarray, sigma, levels) -> tuple[float, str]:
  """(the sigma a blind model uses on `source`, the note that reports it)."""
  if sigma != 'auto':
    return sigma, f'  sigma {sigma:g} (given)'
  estimate = noise_level.estimate_sigma(source)
  used = float(np.clip(estimate, *levels))
  if used != estimate:
    return used, f'  sigma {used:g} (estimated {estimate:.1f}, outside the trained range)'
  return used, f'  sigma {used:.1f} (estimated)'


def _apply_at_level(tiled, image, out, sigma: float, *, prepare, finish) -> np.ndarray:
  """`inference.apply_by_channels` for a noise-level-conditioned model: each window gets the
  noise-level map sigma/255 as its last channel (one compiled program for every sigma)."""
  level = np.float32(sigma / 255)
  with_map = lambda window: np.concatenate(
      [window, np.full(window.shape[:2] + (1,), level, np.float32)], axis=-1
  )
  have, want = image.shape[-1], tiled.channels - 1
  if have == want:
    return tiled(image, out, prepare=lambda w: with_map(prepare(w)), finish=finish)
  if want == 1:
    for c in range(have):
      tiled(
          image[..., c : c + 1],
          out[..., c : c + 1],
          prepare=lambda w: with_map(prepare(w)),
          finish=finish,
      )
    return out
  if have == 1:
    return tiled(
        image,
        out,
        prepare=lambda w: with_map(np.repeat(prepare(w), want, axis=-1)),
        finish=lambda y: finish(y.mean(-1, keepdims=True)),
    )
  raise ValueError(f'a {want}-channel model cannot take {have}-channel images')


def _check_sigma(args, name: str, trained_sigma, blind: bool) -> None:
  if args.add_noise is not None and not 0 < args.add_noise <= 255:
    raise inference.UsageError(f'--add-noise must be in (0, 255], got {args.add_noise:g}')
  if blind:
    lo, hi = trained_sigma
    if args.sigma is None:
      args.sigma = 'auto'
    if args.sigma != 'auto' and not lo <= args.sigma <= hi:
      raise inference.UsageError(
          f'--sigma {args.sigma:g} is outside the range {lo:g}-{hi:g} that {name} was trained '
          'for; give a level in it, or --sigma auto'
      )
    return
  if args.sigma == 'auto':
    raise inference.UsageError(
        f'--sigma auto needs a noise-level-conditioned model; {name} was trained at one level '
        f'({trained_sigma:g}): give --sigma S or leave it out'
    )
  sigma = args.add_noise if args.add_noise is not None else args.sigma
  if sigma is not None and np.ndim(trained_sigma) == 0 and abs(sigma - trained_sigma) > 1e-6:
    print(
        f'warning: {name} was trained at sigma {trained_sigma:g}; your inputs are at '
        f'sigma {sigma:g}',
        file=sys.stderr,
    )


class _StopRun(Exception):
  """Ends the file loop with `error`, a command-line error (exit status 2): a default model that
  is not installed, or cannot be loaded, fails every image that needs it, so it is not one
  file's failure."""

  def __init__(self, error: ValueError):
    super().__init__(str(error))
    self.error = error


def _settings(name: str, args) -> tuple[argparse.Namespace, tuple | None]:
  """(the arguments as `name` takes them, its trained sigma range or None for a non-blind
  model) from its model.json: a model of another task, or a --sigma it cannot take, is an error
  before any image is read or any weights are loaded."""
  config = ml_collections.ConfigDict(pretrained.manifest(name)['config'])
  inference.check_task(name, config, 'denoising')
  blind = bool(config.data.get('level_map'))
  levels = tuple(config.data.sigma) if blind else None
  args = argparse.Namespace(**vars(args))
  _check_sigma(args, name, levels or config.data.sigma, blind)
  return args, levels


def _load(name: str, args, levels) -> inference.Process:
  """The process of `inference.run_files` for model `name`, loaded now."""
  model, variables, config = pretrained.load(name)
  channels = int(config.data.channels) + (levels is not None)  # a blind model's input: + map
  tiled = inference.TiledModel(model, variables, channels=channels, tile=args.tile)
  return _denoiser(tiled, args, levels)


def _default_models(args) -> inference.Process:
  """The process of `inference.run_files` without --model: a colour image goes to
  DEFAULT_COLOUR, a gray one (one channel, or three equal ones) to DEFAULT_GRAY, each model
  loaded at the first image that needs it; the result line names the model."""
  installed = set(pretrained.available())
  if not installed & set(DEFAULTS.values()):
    raise inference.UsageError(
        f'no --model given, and neither default model ({DEFAULT_GRAY} for gray images, '
        f'{DEFAULT_COLOUR} for colour ones) is installed in {pretrained.root()}; {_CHOOSE}'
    )
  settings = {name: _settings(name, args) for name in DEFAULTS.values() if name in installed}
  processes = {}

  def process(job, picture):
    pixels = picture.pixels
    kind = 'colour' if pixels.shape[-1] == 3 and not channels_equal(pixels) else 'gray'
    name = DEFAULTS[kind]
    if name not in processes:
      if name not in settings:
        raise _StopRun(
            inference.UsageError(
                f'{job.path} is a {kind} image, and the default {kind} model {name} is not '
                f'installed in {pretrained.root()}; {_CHOOSE}'
            )
        )
      try:
        processes[name] = _load(name, *settings[name])
      except ValueError as e:
        raise _StopRun(e) from e
    outputs, note = processes[name](job, picture)
    return outputs, f'  model {name}{note}'

  return process


def run(args) -> int:
  """Denoises every input as `args` say; returns the exit status of `inference.run_files`."""
  jobs = inference.plan_jobs(
      inference.expand_inputs(args.inputs),
      _targets(inference.check_out_dir(args.out), args.add_noise is not None),
  )
  if args.model is None:
    process = _default_models(args)
  else:
    process = _load(args.model, *_settings(args.model, args))
  try:
    return inference.run_files(jobs, process, overwrite=args.overwrite)
  except _StopRun as stop:
    raise stop.error from None


def main(argv=None) -> int:
  return inference.command_main(_parser(), run, argv)


if __name__ == '__main__':
  sys.exit(main())
