"""Shipped pretrained weights: `load(name) -> (model, variables, config)` in one call.

  from dxnet_jax import pretrained
  pretrained.available()                      # ['cifar10_dxnet_k12_444_budget', ...]
  model, variables, config = pretrained.load('denoise_dxnet_444_s50_budget')
  clean = model.apply(variables, noisy[None], train=False)[0]

Each model is a folder `pretrained/<name>/` at the repository root (override the location with
the environment variable `DXNET_PRETRAINED_DIR`) holding
  variables.msgpack   `flax.serialization.to_bytes({'params': ..., 'batch_stats': ...})`
  model.json          the training config (`config`), the parameter count, the exact command that
                      trained it, its wall time and steps, and its measured numbers.

Export a finished training workdir (its best checkpoint, else its latest):
  python -m dxnet_jax.pretrained export --workdir runs/X --name NAME --command '...'
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from typing import Any

import ml_collections
import numpy as np

ENV_VAR = 'DXNET_PRETRAINED_DIR'
WEIGHTS = 'variables.msgpack'
MANIFEST = 'model.json'
MAX_BYTES = 10 * 1024 * 1024


def root() -> pathlib.Path:
  """The folder of shipped models: $DXNET_PRETRAINED_DIR, else <repo root>/pretrained."""
  env = os.environ.get(ENV_VAR)
  if env:
    return pathlib.Path(env).expanduser()
  return pathlib.Path(__file__).resolve().parent.parent / 'pretrained'


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
        f'{"" if names else f" (is {ENV_VAR} or the repository pretrained/ right?)"}.'
    )
  return folder


def _shapes(tree) -> dict[str, tuple]:
  import jax  # pylint: disable=g-import-not-at-top

  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(path): tuple(np.shape(leaf)) for path, leaf in flat}


def load(name: str):
  """(model, variables, config) of a shipped model, ready for `model.apply(variables, x,
  train=False)`. `config` is the training ConfigDict (task, model, data: sigma, scale, ...)."""
  from flax import serialization  # pylint: disable=g-import-not-at-top
  from dxnet_jax import models  # pylint: disable=g-import-not-at-top

  folder = _folder(name)
  info = manifest(name)
  config = ml_collections.ConfigDict(info['config'])
  model = models.create(config.model.to_dict())
  shape = (1,) + tuple(config.input_shape)
  target = models.init_variables(model, shape, abstract=True)
  target = {k: dict(v) for k, v in target.items() if k in ('params', 'batch_stats')}
  blob = (folder / WEIGHTS).read_bytes()
  try:
    raw = serialization.msgpack_restore(blob)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'{folder / WEIGHTS} is not a flax msgpack file: {e}') from e
  want, got = _shapes(target), _shapes(raw)
  if want != got:
    missing = sorted(set(want) - set(got))[:3]
    extra = sorted(set(got) - set(want))[:3]
    wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])[:3]
    raise ValueError(
        f'{folder / WEIGHTS} does not match model {config.model.name!r} from {MANIFEST}: '
        f'missing {missing}, unexpected {extra}, wrong shapes '
        f'{[(k, got[k], want[k]) for k in wrong]}.'
    )
  variables = serialization.from_state_dict(target, raw)
  import jax  # pylint: disable=g-import-not-at-top

  variables = jax.tree.map(lambda x: np.asarray(x, np.float32), variables)
  return model, variables, config


def export(
    workdir: str,
    name: str,
    command: str,
    out_root: str | None = None,
    which: str = 'auto',
    extra: dict | None = None,
) -> pathlib.Path:
  """Writes `<out_root or root()>/<name>/` from a training workdir; returns the folder."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import serialization  # pylint: disable=g-import-not-at-top
  from dxnet_jax import models  # pylint: disable=g-import-not-at-top
  from dxnet_jax.train import checkpoint  # pylint: disable=g-import-not-at-top

  model, variables, config = checkpoint.load_for_inference(workdir, which)
  variables = {k: v for k, v in dict(variables).items() if k in ('params', 'batch_stats')}
  variables = jax.tree.map(lambda x: np.asarray(jax.device_get(x), np.float32), variables)
  blob = serialization.to_bytes(variables)
  if len(blob) > MAX_BYTES:
    raise ValueError(f'{name}: {len(blob) / 2**20:.1f} MiB of weights exceeds the 10 MiB limit')
  folder = pathlib.Path(out_root) / name if out_root else root() / name
  folder.mkdir(parents=True, exist_ok=True)
  (folder / WEIGHTS).write_bytes(blob)
  info: dict[str, Any] = {
      'name': name,
      'model': config.model.name,
      'task': config.task,
      'parameters': models.count_params(variables['params']),
      'command': command,
      'config': config.to_dict(),
  }
  results_path = pathlib.Path(workdir) / 'results.json'
  if results_path.is_file():
    info['results'] = json.loads(results_path.read_text())
  info.update(extra or {})
  (folder / MANIFEST).write_text(json.dumps(info, indent=1) + '\n')
  del model
  return folder


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
  args = parser.parse_args(argv)
  if args.cmd == 'export':
    folder = export(
        args.workdir, args.name, args.command, args.out, args.which, json.loads(args.extra)
    )
    print(f'wrote {folder}')
    return 0
  for name in available():
    info = manifest(name)
    print(f"{name}: {info['model']} ({info['task']}, {info['parameters']:,} parameters)")
  return 0


if __name__ == '__main__':
  sys.exit(_main())
