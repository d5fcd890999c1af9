"""Shipped pretrained weights: `load(name) -> (model, variables, config)` in one call.

  from dxnet_jax import pretrained
  pretrained.available()                      # ['denoise_densenet_555_s50_h200', ...]
  model, variables, config = pretrained.load('denoise_dxnet_444_s50_h200')
  clean = model.apply(variables, noisy[None], train=False)[0]

The models ship inside the package, one folder per model under `dxnet_jax/weights/` (the
environment variable `DXNET_PRETRAINED_DIR` names another folder of them), each holding
  variables.msgpack   `flax.serialization.to_bytes({'params': ..., 'batch_stats': ...})` in
                      float16 or float32; `load` returns float32 either way
  model.json          the training config (`config`), the parameter count, the exact command that
                      trained it, its hardware, wall time and steps, and the held-out scores
                      measured on the stored weights, per set and per image (`measured`)
  MODEL_CARD.md       the same for people (`model_card(info)` writes it from model.json)

Export a finished training workdir (its best checkpoint, else its latest), then score it:
  python -m dxnet_jax.pretrained export --workdir runs/X --name NAME --command '...'
  python -c "from dxnet_jax import pretrained; pretrained.measure('NAME')"
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import subprocess
import sys
from typing import Any, Sequence

import ml_collections
import numpy as np

ENV_VAR = 'DXNET_PRETRAINED_DIR'
WEIGHTS = 'variables.msgpack'
MANIFEST = 'model.json'
CARD = 'MODEL_CARD.md'
MAX_BYTES = 10 * 1024 * 1024
# float16 halves the files; rounding the shipped weights moved no benchmark score by 0.01 dB.
DTYPES = ('float16', 'float32')
DEFAULT_DTYPE = 'float16'
# The held-out benchmark sets `measure` scores each task on (colour denoisers: COLOUR_SETS).
BENCHMARK_SETS = {
    'denoising': ('BSD68', 'Set12'),
    'super_resolution': ('Set5', 'Set14', 'BSD100'),
}
COLOUR_SETS = ('CBSD68',)
# The noise levels `measure_levels` scores a noise-level-conditioned (blind) denoiser at: the
# levels the published colour and gray tables report.
BLIND_SIGMAS = (15.0, 25.0, 50.0)


def root() -> pathlib.Path:
  """The folder of shipped models: $DXNET_PRETRAINED_DIR, else the package's `weights/`."""
  env = os.environ.get(ENV_VAR)
  if env:
    return pathlib.Path(env).expanduser()
  return pathlib.Path(__file__).resolve().parent / 'weights'


def available() -> list[str]:
  """Names of the models under `root()` (folders holding both model.json and the weights)."""
  base = root()
  if not base.is_dir():
    return []
  return sorted(
      p.name for p in base.iterdir() if (p / MANIFEST).is_file() and (p / WEIGHTS).is_file()
  )


def manifest(name: str) -> dict[str, Any]:
  """model.json of a shipped model (its config, command and measured numbers)."""
  folder = _folder(name)
  with open(folder / MANIFEST) as f:
    return json.load(f)


def _folder(name: str) -> pathlib.Path:
  folder = root() / name
  if not (folder / MANIFEST).is_file() or not (folder / WEIGHTS).is_file():
    names = available()
    raise ValueError(
        f'Unknown pretrained model {name!r} (looked in {folder}). Available: '
        f'{", ".join(names) if names else "none"}'
        f'{"" if names else f" (is {ENV_VAR} right, or the package install complete?)"}.'
    )
  return folder


def _shapes(tree) -> dict[str, tuple]:
  import jax  # pylint: disable=g-import-not-at-top

  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): tuple(np.shape(leaf)) for path, leaf in flat}


def _dtypes(tree) -> set[str]:
  import jax  # pylint: disable=g-import-not-at-top

  return {np.asarray(leaf).dtype.name for leaf in jax.tree.leaves(tree)}


def load(name: str, kernels: str = 'auto'):
  """(model, variables, config) of a shipped model, ready for `model.apply(variables, x,
  train=False)`. `config` is the training ConfigDict (task, model, data: sigma, scale, ...).
  The variables are float32 whether the file stores float16 or float32; `kernels` chooses the
  model's parts (`dxnet_jax.kernels`), which all read the same weights."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import serialization  # pylint: disable=g-import-not-at-top
  from dxnet_jax import models  # pylint: disable=g-import-not-at-top

  folder = _folder(name)
  info = manifest(name)
  config = ml_collections.ConfigDict(info['config'])
  model = models.create(config.model.to_dict(), kernels=kernels)
  blob = (folder / WEIGHTS).read_bytes()
  try:
    raw = serialization.msgpack_restore(blob)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'{folder / WEIGHTS} is not a flax msgpack file: {e}') from e
  want, got = _expected_shapes(config), _shapes(raw)
  if want != got:
    missing = sorted(set(want) - set(got))[:3]
    extra = sorted(set(got) - set(want))[:3]
    wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])[:3]
    raise ValueError(
        f'{folder / WEIGHTS} does not match model {config.model.name!r} from {MANIFEST}: '
        f'missing {missing}, unexpected {extra}, wrong shapes '
        f'{[(k, got[k], want[k]) for k in wrong]}.'
    )
  unexpected = _dtypes(raw) - set(DTYPES)
  if unexpected:
    raise ValueError(
        f'{folder / WEIGHTS} holds {sorted(unexpected)} arrays; weights are stored as one of '
        f'{DTYPES} (re-export the model).'
    )
  # Same paths and shapes as the model's own: the file's tree is the variables' tree.
  variables = jax.tree.map(lambda x: np.asarray(x, np.float32), raw)
  return model, variables, config


def _expected_shapes(config) -> dict[str, tuple]:
  """Path -> shape of the model's params and batch_stats, traced without running init (every
  kernels setting builds the same tree, and the plain 'xla' parts trace fastest), and kept on
  disk (`compilation_cache.remembered`) so a second start does not trace the model for it."""
  from dxnet_jax import compilation_cache  # pylint: disable=g-import-not-at-top
  from dxnet_jax import models  # pylint: disable=g-import-not-at-top

  shape = (1,) + tuple(config.input_shape)

  def trace():
    model = models.create(config.model.to_dict(), kernels='xla')
    target = models.init_variables(model, shape, abstract=True)
    target = {k: v for k, v in target.items() if k in ('params', 'batch_stats')}
    return sorted(_shapes(target).items())

  key = json.dumps([config.model.to_dict(), shape], sort_keys=True, default=repr)
  return {path: tuple(s) for path, s in compilation_cache.remembered('variable_shapes', key, trace)}


def to_bytes(variables, dtype: str = DEFAULT_DTYPE) -> bytes:
  """The msgpack of `variables` with every array stored as `dtype` ('float16' or 'float32')."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import serialization  # pylint: disable=g-import-not-at-top

  if dtype not in DTYPES:
    raise ValueError(f'weights dtype {dtype!r}: choose one of {DTYPES}')
  variables = jax.tree.map(lambda x: np.asarray(jax.device_get(x), np.float32), variables)
  if dtype == 'float16':
    largest = max(float(np.max(np.abs(x), initial=0.0)) for x in jax.tree.leaves(variables))
    if not largest <= float(np.finfo(np.float16).max):
      raise ValueError(
          f'a weight of magnitude {largest:.3g} does not fit float16 (max 65504); '
          'export with dtype float32 (--dtype float32)'
      )
  return serialization.to_bytes(jax.tree.map(lambda x: x.astype(dtype), variables))


def export(
    workdir: str,
    name: str,
    command: str,
    out_root: str | None = None,
    which: str = 'auto',
    extra: dict | None = None,
    dtype: str = DEFAULT_DTYPE,
) -> pathlib.Path:
  """Writes `<out_root or root()>/<name>/` (weights, model.json, model card) from a training
  workdir and returns the folder; an existing model folder is never overwritten."""
  from dxnet_jax import models  # pylint: disable=g-import-not-at-top
  from dxnet_jax.train import checkpoint  # pylint: disable=g-import-not-at-top

  folder = pathlib.Path(out_root) / name if out_root else root() / name
  existing = [p.name for p in (folder / WEIGHTS, folder / MANIFEST, folder / CARD) if p.exists()]
  if existing:
    raise FileExistsError(
        f'{folder} already holds {", ".join(existing)}; choose another --name or --out, or '
        'delete that folder first.'
    )
  model, variables, config = checkpoint.load_for_inference(workdir, which)
  variables = {k: v for k, v in dict(variables).items() if k in ('params', 'batch_stats')}
  blob = to_bytes(variables, dtype)
  if len(blob) > MAX_BYTES:
    raise ValueError(f'{name}: {len(blob) / 2**20:.1f} MiB of weights exceeds the 10 MiB limit')
  info: dict[str, Any] = {
      'name': name,
      'model': config.model.name,
      'task': config.task,
      'parameters': models.count_params(variables['params']),
      'weights_dtype': dtype,
      'command': command,
      'config': config.to_dict(),
  }
  results_path = pathlib.Path(workdir) / 'results.json'
  if results_path.is_file():
    info['results'] = json.loads(results_path.read_text())
  info.update(extra or {})
  folder.mkdir(parents=True, exist_ok=True)
  (folder / WEIGHTS).write_bytes(blob)
  _write_manifest(folder, info)
  del model
  return folder


def _write_manifest(folder: pathlib.Path, info: dict[str, Any]) -> None:
  (folder / MANIFEST).write_text(json.dumps(info, indent=1) + '\n')
  (folder / CARD).write_text(model_card(info))


def benchmark_sets(info: dict[str, Any]) -> tuple[str, ...]:
  """The held-out sets a model of this manifest is scored on: its task's, in colour for a
  colour denoiser."""
  if info['task'] == 'denoising' and info['config']['data'].get('channels') == 3:
    return COLOUR_SETS
  return BENCHMARK_SETS[info['task']]


def _set_arguments(info: dict[str, Any], sets: Sequence[str] | None) -> list[str]:
  """`--set S` for each of `sets` (default: `benchmark_sets(info)`), as `dxnet-evaluate` takes
  them."""
  return [arg for s in (sets or benchmark_sets(info)) for arg in ('--set', s)]


def _evaluate(name: str, argv: list[str]) -> dict[str, Any]:
  """The JSON report of `python -m dxnet_jax.evaluate --pretrained name *argv --per-image`."""
  done = subprocess.run(
      [sys.executable, '-m', 'dxnet_jax.evaluate', '--pretrained', name, *argv]
      + ['--json', '--per-image'],
      capture_output=True,
      text=True,
      check=False,
  )
  if done.returncode:
    raise RuntimeError(f'evaluating {name} failed:\n{done.stderr[-2000:]}')
  return json.loads(done.stdout)


def measure(name: str, sets: Sequence[str] | None = None) -> dict[str, Any]:
  """Scores the stored weights with `python -m dxnet_jax.evaluate` on held-out `sets` (default:
  `benchmark_sets`), records them in model.json as `measured` (each set's means and per-image
  scores, so a check can re-measure a few images instead of a whole set), rewrites the model
  card, and returns them."""
  folder = _folder(name)
  info = manifest(name)
  set_args = _set_arguments(info, sets)
  report = _evaluate(name, set_args)
  info['measured'] = {
      'command': ' '.join(['python -m dxnet_jax.evaluate --pretrained', name, *set_args]),
      'weights_dtype': _dtypes_of_file(folder / WEIGHTS),
      'protocol': report['protocol'],
      'scores': [
          {
              'set': row['set'],
              'num_images': len(row['images']),
              'psnr': row['psnr'],
              'ssim': row['ssim'],
              'images': [
                  {k: image[k] for k in ('name', 'psnr', 'ssim')} for image in row['images']
              ],
          }
          for row in report['results']
      ],
  }
  _write_manifest(folder, info)
  return info['measured']


def measure_levels(
    name: str, sigmas: Sequence[float] = BLIND_SIGMAS, sets: Sequence[str] | None = None
) -> dict[str, Any]:
  """Scores a blind (noise-level-map) denoiser at each noise level of `sigmas` twice: told the
  true level, and told the level `noise_level.estimate_sigma` finds in each noisy image
  (`--level auto`, as `dxnet-denoise` runs it on photos). Records model.json `measured_levels`,
  rewrites the card, and returns them."""
  folder = _folder(name)
  info = manifest(name)
  if not info['config']['data'].get('level_map'):
    raise ValueError(f'{name} is not told a noise level (no level map); use measure()')
  set_args = _set_arguments(info, sets)
  rows = []
  for sigma in sigmas:
    told, estimated = (
        _evaluate(name, set_args + ['--sigma', f'{sigma:g}'] + level)
        for level in ([], ['--level', 'auto'])
    )
    for row, auto in zip(told['results'], estimated['results']):
      rows.append(
          {
              'set': row['set'],
              'sigma': sigma,
              'num_images': len(row['images']),
              'psnr': row['psnr'],
              'ssim': row['ssim'],
              'psnr_estimated_level': auto['psnr'],
              'ssim_estimated_level': auto['ssim'],
          }
      )
  info['measured_levels'] = {
      'command': ' '.join(
          ['python -m dxnet_jax.evaluate --pretrained', name, *set_args, '--sigma S [--level auto]']
      ),
      'weights_dtype': _dtypes_of_file(folder / WEIGHTS),
      'noise_seed': info['config']['data'].get('noise_seed', 0),
      'scores': rows,
  }
  _write_manifest(folder, info)
  return info['measured_levels']


def _dtypes_of_file(path: pathlib.Path) -> str:
  from flax import serialization  # pylint: disable=g-import-not-at-top

  return '+'.join(sorted(_dtypes(serialization.msgpack_restore(path.read_bytes()))))


def model_card(info: dict[str, Any]) -> str:
  """MODEL_CARD.md of a model from its model.json: what it does, how it was trained, where, with
  which command, and its held-out scores."""
  config, results = info['config'], info.get('results', {})
  data = config['data']
  lines = [
      f"# {info['name']}",
      '',
      f"`{info['model']}` for {info['task'].replace('_', ' ')}: {info['parameters']:,} "
      f"parameters, stored as {info.get('weights_dtype', 'float32')} (loaded as float32).",
      '',
      '```python',
      'from dxnet_jax import pretrained',
      f"model, variables, config = pretrained.load('{info['name']}')",
      '```',
      '',
      _usage_line(info),
      '',
      '## Training',
      '',
      f'- Data: {_data_line(data)}',
      f"- Steps: {_count(results.get('steps'))} at batch {config['batch_size']}",
      f"- Hardware: {info.get('machine', 'not recorded')}",
      f"- Wall time: {info['wall_seconds']} s" if 'wall_seconds' in info else '- Wall time: -',
      f"- Date: {info.get('trained_on', 'not recorded')}",
      '- Command (from the repository root):',
      '',
      '```',
      info['command'],
      '```',
  ]
  measured = info.get('measured')
  if measured:
    lines += [
        '',
        '## Held-out scores of the stored weights',
        '',
        f"`{measured['command']}` ({measured['weights_dtype']} weights); {measured['protocol']}.",
        '',
        '| set | images | PSNR (dB) | SSIM |',
        '|---|---|---|---|',
    ]
    lines += [
        f"| {s['set']} | {s['num_images']} | {s['psnr']:.2f} | {s['ssim']:.4f} |"
        for s in measured['scores']
    ]
    validation = data['validation_set']
    if validation in [s['set'] for s in measured['scores']]:
      lines += ['', f'{validation} also served as the validation set during training.']
  levels = info.get('measured_levels')
  if levels:
    lines += [
        '',
        '## Every noise level',
        '',
        f"`{levels['command']}` ({levels['weights_dtype']} weights, noise seed "
        f"{levels['noise_seed']}): told the true level, and told the level estimated from each "
        'noisy image (as `dxnet-denoise` does by default).',
        '',
        '| set | sigma | images | PSNR, true level (dB) | PSNR, estimated level (dB) | SSIM |',
        '|---|---|---|---|---|---|',
    ]
    lines += [
        f"| {s['set']} | {s['sigma']:g} | {s['num_images']} | {s['psnr']:.2f} | "
        f"{s['psnr_estimated_level']:.2f} | {s['ssim']:.4f} |"
        for s in levels['scores']
    ]
  check = info.get('float16_check')
  if check:
    reference = ', '.join(f"{s['set']} {s['psnr']:.2f} dB" for s in check['float32_scores'])
    lines += [
        '',
        'Rounding the float32 weights to float16 moved no PSNR by more than '
        f"{math.ceil(check['max_psnr_change_db'] * 1e5) / 1e5:.5f} dB (float32: {reference}).",
    ]
  baselines = [r for r in results.get('evaluation', []) if _is_baseline(r['method'])]
  if baselines:
    lines += ['', 'Baselines on the same sets (from the training run):', '']
    lines += [f"- {r['set']}, {r['method']}: {r['psnr']:.2f} dB" for r in baselines]
  notes = info.get('notes', [])
  if notes:
    lines += ['', '## Notes', ''] + [f'- {note}' for note in notes]
  return '\n'.join(lines) + '\n'


def _usage_line(info: dict[str, Any]) -> str:
  name = info['name']
  if info['task'] == 'denoising':
    return f'Command line: `dxnet-denoise --model {name} noisy.png --out denoised/`'
  if info['task'] == 'super_resolution':
    return f'Command line: `dxnet-upscale --model {name} small.png --out upscaled/`'
  return f'Command line: `dxnet-evaluate --pretrained {name}` scores it.'


def _data_line(data: dict[str, Any]) -> str:
  if data['source'] == 'tfds':
    where = f"tfds `{data['name']}` split `{data['train_split']}`"
  else:
    where = ' + '.join(f'`{d}`' for d in data['train_dirs']) + ' (under the data root)'
  channels = {1: 'gray', 3: 'RGB'}.get(data.get('channels'), f"{data.get('channels')} channels")
  parts = [where, channels]
  if data.get('patch_size'):
    parts.append(f"{data['patch_size']} px patches")
  sigma = data.get('sigma')
  if data.get('level_map'):  # a noise-level-conditioned model: sigma is its (lo, hi) range
    parts.append(
        f'Gaussian noise of sigma {sigma[0]:g}-{sigma[1]:g} per patch (0-255 scale), its '
        'level map as an extra input channel'
    )
  elif sigma is not None:
    parts.append(f'Gaussian noise sigma {sigma:g} (0-255 scale)')
  if data.get('scale', 1) > 1:
    parts.append(f"x{data['scale']} bicubic downscaling")
  parts.append(f"validation on `{data['validation_set']}`")
  return ', '.join(parts)


def _count(value) -> str:
  return f'{value:,}' if isinstance(value, int) else 'not recorded'


def _is_baseline(method: str) -> bool:
  return method.startswith(('noisy input (clipped', 'bicubic'))


def _main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m dxnet_jax.pretrained',
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  sub = parser.add_subparsers(dest='cmd')
  sub.add_parser('list', help='list the shipped models')
  ex = sub.add_parser('export', help='export a training workdir')
  ex.add_argument('--workdir', required=True)
  ex.add_argument('--name', required=True)
  ex.add_argument('--command', required=True, help='the exact command that trained it')
  ex.add_argument('--which', default='auto', choices=('auto', 'best', 'latest'))
  ex.add_argument('--out', help='folder to write <name>/ into (default: the pretrained root)')
  ex.add_argument('--extra', default='{}', help='JSON merged into model.json (wall time, ...)')
  ex.add_argument('--dtype', default=DEFAULT_DTYPE, choices=DTYPES, help='stored weights dtype')
  args = parser.parse_args(argv)
  if args.cmd == 'export':
    folder = export(
        args.workdir,
        args.name,
        args.command,
        args.out,
        args.which,
        json.loads(args.extra),
        args.dtype,
    )
    print(f'wrote {folder}')
    return 0
  for name in available():
    info = manifest(name)
    print(f"{name}: {info['model']} ({info['task']}, {info['parameters']:,} parameters)")
  return 0


if __name__ == '__main__':
  sys.exit(_main())
