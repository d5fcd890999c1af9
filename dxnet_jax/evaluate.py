"""Scores a trained restoration model or a built-in baseline on benchmark sets; prints a table.

  dxnet-evaluate --pretrained denoise_dxnet_444_s50_h200 --set BSD68 --set Set12
  dxnet-evaluate --pretrained sr_dxnet16_x4_budget --set Set5 --set my_photos/
  dxnet-evaluate --workdir runs/dxnet_denoise --set BSD68 --json
  dxnet-evaluate --baseline bicubic --set Set5 --set Set14 --set BSD100
  python -m dxnet_jax.evaluate --baseline noisy --set BSD68 --sigma 50

Sets are names (BSD68, Set12, Set5, Set14, BSD100), existing folders, or folders relative to the
data root. With --workdir, or --pretrained NAME (a shipped model; `python -m dxnet_jax.pretrained
list` names them), the task, sigma, scale, channels, noise seed and default sets come from the
run's config. The model sees one whole image at a time (jit compiles once per image shape).
Protocols are in `dxnet_jax.metrics`: denoising outputs are clipped and rounded to 8 bits;
SR is scored on Y with the border shaved. The `noisy` baseline reports the noisy input both as it
is (unclipped float) and clipped + rounded like any output. A bad option, set or model is one
line and exit status 2 (`--verbose` shows the traceback).
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import sys
from typing import Callable, Iterable, Sequence

import numpy as np

from dxnet_jax import cli
from dxnet_jax import kernels
from dxnet_jax import metrics
from dxnet_jax.data import degrade
from dxnet_jax.data import eval_sets

PROG = 'dxnet-evaluate'
PredictFn = Callable[[np.ndarray], np.ndarray]  # float32 [h, w, C] -> float [H, W, C]
Protocol = Callable[[np.ndarray, np.ndarray], dict]  # (output, uint8 target) -> scores


def protocol_for(task: str, scale: int = 4) -> Protocol:
  if task == 'denoising':
    return metrics.denoising_scores
  if task == 'super_resolution':
    return functools.partial(metrics.super_resolution_scores, scale=scale)
  raise ValueError(f'no evaluation protocol for task {task!r}')


def evaluate_images(
    predict_fn: PredictFn, images: Iterable[eval_sets.EvalImage], protocol: Protocol
) -> dict:
  """Mean and per-image scores of `predict_fn` over `images` under `protocol`."""
  per_image = []
  for image in images:
    output = np.asarray(predict_fn(image.inputs))
    per_image.append({'name': image.name, **protocol(output, image.targets)})
  if not per_image:
    raise ValueError('no images to evaluate')
  means = {k: float(np.mean([row[k] for row in per_image])) for k in per_image[0] if k != 'name'}
  return {**means, 'images': per_image}


def bicubic_predict(scale: int) -> PredictFn:
  """The bicubic baseline: PIL bicubic up-scaling of the (8-bit) LR input."""
  return lambda lr: degrade.upscale(metrics.to_uint8(lr), scale).astype(np.float32) / 255.0


def identity_predict(inputs: np.ndarray) -> np.ndarray:
  return inputs


def model_predict(model, variables, sigma=None, level=None, level_range=(0.0, 75.0)) -> PredictFn:
  """Whole-image inference of a flax module, one image per call.

  A noise-level-conditioned denoiser is told the level `level` (default: `sigma`, the true one)
  through its noise-level map, an input channel, so every level runs one compiled program;
  `level='auto'` estimates it from each noisy input (`noise_level.estimate_sigma`, kept within
  `level_range`, the trained range), as `dxnet-denoise --sigma auto` does.
  """
  import jax  # pylint: disable=g-import-not-at-top

  from dxnet_jax import models  # pylint: disable=g-import-not-at-top

  if not models.restoration.is_level_conditioned(model):
    if level is not None:
      raise ValueError('--level is for noise-level-conditioned (blind) denoisers')
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    return lambda image: np.asarray(apply(variables, image[None]))[0]
  level = sigma if level is None else level
  if level is None:
    raise ValueError('a noise-level-conditioned denoiser needs --sigma (its noise-level map)')
  takes_map = models.at_level(model, None)
  apply = jax.jit(lambda v, x: takes_map.apply(v, x, train=False))

  def predict(image):
    told = level
    if level == 'auto':
      from dxnet_jax import noise_level  # pylint: disable=g-import-not-at-top

      told = float(np.clip(noise_level.estimate_sigma(image), *level_range))
    level_map = np.full(image.shape[:2] + (1,), told / 255, np.float32)
    return np.asarray(apply(variables, np.concatenate([image, level_map], -1)[None]))[0]

  return predict


Method = tuple[str, PredictFn, Protocol]  # (label, predict_fn, protocol)


def baseline_methods(baseline: str, task: str, scale: int) -> list[Method]:
  """(label, predict_fn, protocol) of each row a baseline reports."""
  if baseline == 'bicubic':
    if task != 'super_resolution':
      raise ValueError('--baseline bicubic is a super_resolution baseline')
    return [('bicubic', bicubic_predict(scale), protocol_for(task, scale))]
  if baseline == 'noisy':
    if task != 'denoising':
      raise ValueError('--baseline noisy is a denoising baseline')
    return [
        ('noisy input (unclipped float)', identity_predict, metrics.unclipped_scores),
        ('noisy input (clipped, 8-bit)', identity_predict, metrics.denoising_scores),
    ]
  raise ValueError(f'unknown baseline {baseline!r}')


def resolve_set(name: str) -> str:
  """A set name stays a name; an existing folder (relative to the cwd) becomes absolute."""
  if name in eval_sets.NAMED_SETS:
    return name
  path = pathlib.Path(name).expanduser()
  return str(path.resolve()) if path.is_dir() else name


def format_table(rows: Sequence[dict], caption: str = '') -> str:
  header = ('set', 'method', 'images', 'PSNR (dB)', 'SSIM')
  body = [
      (r['set'], r['method'], str(len(r['images'])), f"{r['psnr']:.2f}", f"{r['ssim']:.4f}")
      for r in rows
  ]
  widths = [max(len(line[i]) for line in (header, *body)) for i in range(len(header))]
  fmt = lambda line: ' | '.join(cell.ljust(w) for cell, w in zip(line, widths))
  lines = [caption] if caption else []
  lines += [fmt(header), '-+-'.join('-' * w for w in widths), *map(fmt, body)]
  return '\n'.join(lines)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = cli.ArgumentParser(
      prog=PROG,
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument('--workdir', help='a training workdir with a checkpoint')
  source.add_argument(
      '--pretrained',
      metavar='NAME',
      help='a shipped pretrained model (dxnet_jax.pretrained.available())',
  )
  source.add_argument('--baseline', choices=('bicubic', 'noisy'))
  parser.add_argument(
      '--set',
      dest='sets',
      action='append',
      default=[],
      help='set name or folder (repeatable; default: the config eval_sets)',
  )
  parser.add_argument('--task', choices=('denoising', 'super_resolution'))
  parser.add_argument('--sigma', type=float, help='denoising noise level (0-255 scale)')
  parser.add_argument(
      '--level',
      type=cli.number_or_auto,
      help="the noise level a blind denoiser is told: a number, or 'auto' (estimated per image); "
      'default: --sigma',
  )
  parser.add_argument('--scale', type=int, help='SR factor (default 4)')
  parser.add_argument('--channels', type=int, choices=(1, 3))
  parser.add_argument('--seed', type=int, help='noise seed (default 0)')
  parser.add_argument('--json', action='store_true', help='print JSON instead of a table')
  parser.add_argument('--per-image', action='store_true', help='include per-image scores')
  return parser.parse_args(argv)


def settings(task: str, data=None, *, sigma=None, scale=None, channels=None, seed=None) -> dict:
  """The evaluation settings of `task`: the values given, else those of a run's `config.data`
  (its evaluation noise level, else its training one), else the defaults."""

  def pick(value, field, default):
    if value is not None:
      return value
    if data is not None and data.get(field) is not None:
      return data[field]
    return default

  sigma = pick(sigma, 'eval_sigma', None)
  if sigma is None and data is not None and np.ndim(data.get('sigma')) == 0:
    sigma = data.sigma
  if task == 'denoising' and sigma is None:
    raise ValueError('denoising needs --sigma (the noise level, on the 0-255 scale)')
  return dict(
      sigma=sigma,
      scale=pick(scale, 'scale', 4) if task == 'super_resolution' else 1,
      channels=pick(channels, 'channels', eval_sets.default_channels(task)),
      seed=pick(seed, 'noise_seed', 0),
  )


def score(methods: Sequence[Method], sets: Sequence[str], task: str, **setting) -> list[dict]:
  """Rows of (set, method, mean scores, per-image scores): every method on every set (names or
  folders), each set's images (and noise) made once; rows grouped by method."""
  if not sets:
    raise ValueError('name at least one evaluation set (--set)')
  rows = []
  for set_name in sets:
    images = eval_sets.load(resolve_set(set_name), task=task, **setting)
    for label, predict, protocol in methods:
      rows.append({'set': set_name, 'method': label, **evaluate_images(predict, images, protocol)})
  order = [label for label, _, _ in methods]
  return sorted(rows, key=lambda row: order.index(row['method']))


def caption(task: str, sigma=None, scale: int = 4, seed: int = 0, **_) -> str:
  """What the scores of `task` measure."""
  if task == 'denoising':
    return (
        f'denoising, sigma={sigma:g}, noise seed {seed}: output clipped to [0, 1] and '
        'rounded to 8 bits, PSNR/SSIM over the whole image'
    )
  return (
      f'super-resolution x{scale}: Y channel (BT.601, 16-235), 8-bit, {scale}-px border '
      'removed; gray images scored as gray'
  )


def evaluate_run(workdir: str, config) -> tuple[list[dict], str]:
  """A finished run's model and its task's baseline on `config.data.eval_sets`: the trainer's
  final evaluation. Returns (rows, caption)."""
  from dxnet_jax.train import checkpoint  # pylint: disable=g-import-not-at-top

  model, variables, _ = checkpoint.load_for_inference(workdir)
  setting = settings(config.task, config.data)
  protocol = protocol_for(config.task, setting['scale'])
  predict = model_predict(model, variables, setting['sigma'])
  methods = [(pathlib.Path(workdir).name, predict, protocol)]
  baseline = 'noisy' if config.task == 'denoising' else 'bicubic'
  methods += baseline_methods(baseline, config.task, setting['scale'])
  rows = score(methods, list(config.data.eval_sets), config.task, **setting)
  return rows, caption(config.task, **setting)


def run(args: argparse.Namespace) -> tuple[list[dict], str]:
  """Evaluates as the command line says; returns (rows, caption)."""
  data = None
  if args.workdir or args.pretrained:
    if args.pretrained:
      from dxnet_jax import pretrained  # pylint: disable=g-import-not-at-top

      model, variables, config = pretrained.load(args.pretrained)
      label = args.pretrained
    else:
      from dxnet_jax.train import checkpoint  # pylint: disable=g-import-not-at-top

      model, variables, config = checkpoint.load_for_inference(args.workdir)
      label = pathlib.Path(args.workdir).name
    if config.task == 'classification':
      raise ValueError(f'{label} is a classifier: evaluate scores restoration models')
    task, data = config.task, config.data
    if args.task and args.task != task:
      raise ValueError(f'--task {args.task} contradicts the run task {task}')
  else:
    named = {eval_sets.task_of(s) for s in args.sets} - {None}
    task = args.task or {'bicubic': 'super_resolution', 'noisy': 'denoising'}[args.baseline]
    if named - {task}:
      raise ValueError(f'sets {args.sets} do not all belong to task {task}')
  setting = settings(
      task, data, sigma=args.sigma, scale=args.scale, channels=args.channels, seed=args.seed
  )
  if data is not None:
    level_range = tuple(data.sigma) if np.ndim(data.get('sigma')) == 1 else (0.0, 75.0)
    predict = model_predict(model, variables, setting['sigma'], args.level, level_range)
    methods = [(label, predict, protocol_for(task, setting['scale']))]
  else:
    methods = baseline_methods(args.baseline, task, setting['scale'])
  sets = args.sets or list(data.eval_sets if data is not None else ())
  return score(methods, sets, task, **setting), caption(task, **setting)


def main(argv: Sequence[str] | None = None) -> int:
  kernels.prepare_process()
  args = _parse(argv)
  try:
    rows, caption = run(args)
  except (ValueError, FileNotFoundError) as e:
    return cli.report(PROG, e, argv)
  if args.json:
    if not args.per_image:
      rows = [
          {k: v for k, v in r.items() if k != 'images'} | {'num_images': len(r['images'])}
          for r in rows
      ]
    print(json.dumps({'protocol': caption, 'results': rows}, indent=1))
  else:
    print(format_table(rows, caption))
    if args.per_image:
      for r in rows:
        print(f"\n{r['set']} / {r['method']}")
        for image in r['images']:
          print(f"  {image['name']}: {image['psnr']:.2f} dB, SSIM {image['ssim']:.4f}")
  return 0


if __name__ == '__main__':
  sys.exit(main())
