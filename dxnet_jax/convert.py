"""PyTorch checkpoints onto the registry's flax variables: the xUnit authors' released denoisers.

  python -m dxnet_jax.convert xdncnn_res_f64k3k9_s25.pkl --sigma 25 --out converted/
  DXNET_PRETRAINED_DIR=converted dxnet-evaluate --pretrained xdncnn_res_f64k3k9_s25

Reads a PyTorch state_dict (zip or legacy serialisation, `torch.load(weights_only=True)`, so no
code in the file runs), maps every key onto a registry model's variables by that model's key map
(`KEY_MAPS`), checks that every key is known and present and that every shape fits, and writes a
model folder (`dxnet_jax.pretrained`'s format, float32 weights) under `--out`. Any mismatch is a
one-line error naming the first bad key, and nothing is written. PyTorch is needed only here:
`pip install "dxnet_jax[convert]"`.

Layouts: a convolution's OIHW weight becomes flax's HWIO kernel (a depthwise [C, 1, k, k] one
becomes [k, k, 1, C]); a BatchNorm's weight / bias are `params` scale / bias and its running mean
/ variance `batch_stats` mean / var.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import re
import shutil
import sys
import tempfile
from typing import Any, Callable, Dict, Mapping, Sequence, Tuple

import numpy as np

from dxnet_jax import _optional
from dxnet_jax import pretrained

# torch key -> (collection, path of the flax leaf)
KeyMap = Dict[str, Tuple[str, Tuple[str, ...]]]
# Entries of a state_dict that are counters, not variables.
IGNORED_SUFFIXES = ('num_batches_tracked',)
NAME_PATTERN = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.+=-]*\Z')


def _conv(keys: KeyMap, torch_prefix: str, path: Tuple[str, ...]) -> None:
  keys[f'{torch_prefix}.weight'] = ('params', path + ('kernel',))
  keys[f'{torch_prefix}.bias'] = ('params', path + ('bias',))


def _batch_norm(keys: KeyMap, torch_prefix: str, path: Tuple[str, ...]) -> None:
  keys[f'{torch_prefix}.weight'] = ('params', path + ('scale',))
  keys[f'{torch_prefix}.bias'] = ('params', path + ('bias',))
  keys[f'{torch_prefix}.running_mean'] = ('batch_stats', path + ('mean',))
  keys[f'{torch_prefix}.running_var'] = ('batch_stats', path + ('var',))


def _gaussian_xunit(keys: KeyMap, torch_prefix: str, name: str) -> None:
  _batch_norm(keys, f'{torch_prefix}.module.0', (name, 'input_bn'))
  _conv(keys, f'{torch_prefix}.module.2', (name, 'depthwise'))
  _batch_norm(keys, f'{torch_prefix}.module.3', (name, 'depthwise_bn'))


def xdncnn_authors_keys() -> KeyMap:
  """`xdncnn_authors` from the authors' xDnCNN: cells `md1` (conv, xUnit) and `md2`-`md8`
  (`.0` the BatchNorm, `.1` the cell), then `joints`, the output convolution."""
  keys: KeyMap = {}
  _conv(keys, 'md1.0.features.0', ('conv0',))
  _gaussian_xunit(keys, 'md1.0', 'xunit0')
  for i in range(1, 8):
    _batch_norm(keys, f'md{i + 1}.0', (f'bn{i}',))
    _conv(keys, f'md{i + 1}.1.features.0', (f'conv{i}',))
    _gaussian_xunit(keys, f'md{i + 1}.1', f'xunit{i}')
  _conv(keys, 'joints', ('conv8',))
  return keys


# Registry models that a PyTorch checkpoint converts to, and their key maps.
KEY_MAPS: Dict[str, Callable[[], KeyMap]] = {'xdncnn_authors': xdncnn_authors_keys}


def _numpy(value) -> np.ndarray:
  """A tensor (or array) as a float32 numpy array."""
  if hasattr(value, 'detach'):
    value = value.detach().cpu().float().numpy()
  return np.asarray(value, np.float32)


def _flax_layout(array: np.ndarray) -> np.ndarray:
  """A convolution weight OIHW -> HWIO (depthwise [C, 1, k, k] -> [k, k, 1, C]); vectors as
  they are."""
  return array.transpose(2, 3, 1, 0) if array.ndim == 4 else array


def _target_shapes(model_name: str) -> Dict[Tuple[str, Tuple[str, ...]], Tuple[int, ...]]:
  import jax  # pylint: disable=g-import-not-at-top
  from dxnet_jax import models  # pylint: disable=g-import-not-at-top

  model = models.create(model_name, kernels='xla')
  shape = (1,) + models.input_shape(model_name)
  target = models.init_variables(model, shape, abstract=True)
  shapes = {}
  for collection in ('params', 'batch_stats'):
    for path, leaf in jax.tree_util.tree_flatten_with_path(dict(target.get(collection, {})))[0]:
      shapes[(collection, tuple(p.key for p in path))] = tuple(leaf.shape)
  return shapes


def convert_state_dict(
    state_dict: Mapping[str, Any], model_name: str = 'xdncnn_authors', source: str = 'checkpoint'
) -> dict:
  """The flax variables ({'params', 'batch_stats'}) of registry model `model_name` from a
  PyTorch `state_dict` (tensors or arrays); a ValueError names the first key that does not fit."""
  if model_name not in KEY_MAPS:
    raise ValueError(
        f'No PyTorch key map for model {model_name!r}; convertible: {sorted(KEY_MAPS)}.'
    )
  keys, shapes = KEY_MAPS[model_name](), _target_shapes(model_name)
  unmapped = sorted(set(shapes) - set(keys.values()))
  if unmapped:  # the key map itself is incomplete: a bug here, not in the checkpoint
    raise AssertionError(f'the {model_name} key map leaves {unmapped[0]} unset')
  variables: dict = {}
  for key, value in state_dict.items():
    if key.endswith(IGNORED_SUFFIXES):
      continue
    if key not in keys:
      raise ValueError(
          f'{source}: unexpected key {key!r}, not a key of the {model_name} checkpoints '
          '(a checkpoint of another network?).'
      )
    try:
      array = _flax_layout(_numpy(value))
    except (TypeError, ValueError):
      raise ValueError(f'{source}: {key!r} holds a {type(value).__name__}, not a tensor.') from None
    collection, path = keys[key]
    if array.shape != shapes[(collection, path)]:
      raise ValueError(
          f'{source}: {key!r} has shape {tuple(np.shape(value))}, which does not fit '
          f'{collection}/{"/".join(path)} {shapes[(collection, path)]} of {model_name}.'
      )
    node = variables.setdefault(collection, {})
    for part in path[:-1]:
      node = node.setdefault(part, {})
    node[path[-1]] = array
  missing = [k for k in keys if k not in state_dict]
  if missing:
    raise ValueError(
        f'{source}: key {missing[0]!r} of {model_name} is missing ({len(missing)} of '
        f"{len(keys)} keys missing: a truncated or another network's checkpoint?)."
    )
  return variables


def _first_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return f'{type(error).__name__}: {text[0] if text else ""}'.rstrip(': ')


def load_state_dict(path: str | os.PathLike) -> Mapping[str, Any]:
  """The state_dict in a PyTorch checkpoint file (zip or legacy serialisation), read with
  `weights_only=True`; a one-line error for a missing, unreadable or non-state_dict file."""
  torch = _optional.require('torch', 'convert', 'Converting PyTorch checkpoints')
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'No checkpoint file {path}.')
  try:
    state = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
        f'{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {_first_line(e)}'
    ) from None
  if isinstance(state, Mapping) and isinstance(state.get('state_dict'), Mapping):
    state = state['state_dict']
  if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
    raise ValueError(f'{path} holds a {type(state).__name__}, not a state_dict.')
  return state


def converted_config(model_name: str, sigma: float):
  """The config a converted denoiser loads with: its model and the noise level it was trained
  for, which `dxnet-evaluate` and `dxnet-denoise` read."""
  from dxnet_jax import models  # pylint: disable=g-import-not-at-top
  from dxnet_jax.train import defaults  # pylint: disable=g-import-not-at-top

  shape = models.input_shape(model_name)
  return defaults.base_config(
      models.model_task(model_name), model_name, shape, channels=shape[-1], sigma=float(sigma)
  )


def model_card(info: dict[str, Any]) -> str:
  """MODEL_CARD.md of a converted model: what it is, where its weights come from, how to load it."""
  source = info['converted_from']
  return '\n'.join(
      [
          f"# {info['name']}",
          '',
          f"`{info['model']}` for {info['task']} at sigma {info['config']['data']['sigma']:g}: "
          f"{info['parameters']:,} parameters, float32.",
          '',
          f"Converted from the PyTorch checkpoint `{source['file']}` ({source['bytes']:,} bytes, "
          f"sha256 `{source['sha256']}`); trained by its authors with their own code and data, not "
          'by this package. Do not redistribute it without their permission.',
          '',
          '```',
          info['command'],
          '```',
          '',
          f"Load it with `DXNET_PRETRAINED_DIR=<this folder's parent>` and "
          f"`pretrained.load('{info['name']}')`, `dxnet-evaluate --pretrained {info['name']}` or "
          f"`dxnet-denoise --model {info['name']}`.",
          '',
      ]
  )


def convert(
    checkpoint: str | os.PathLike,
    out_root: str | os.PathLike,
    sigma: float,
    name: str | None = None,
    model_name: str = 'xdncnn_authors',
    command: str | None = None,
) -> pathlib.Path:
  """Converts `checkpoint` and writes `<out_root>/<name>/` (default name: the file's stem);
  returns the folder. Nothing is written unless every key converts; an existing folder is never
  overwritten."""
  checkpoint = pathlib.Path(checkpoint)
  name = name or checkpoint.stem
  if not NAME_PATTERN.match(name):
    raise ValueError(f'--name {name!r}: use letters, digits and _.+=- only.')
  if not 0 < sigma <= 255:
    raise ValueError(f'--sigma must be in (0, 255], got {sigma:g}.')
  folder = pathlib.Path(out_root) / name
  if folder.exists():
    raise FileExistsError(f'{folder} already exists; choose another --name or --out.')
  variables = convert_state_dict(load_state_dict(checkpoint), model_name, str(checkpoint))
  blob = pretrained.to_bytes(variables, 'float32')
  raw = checkpoint.read_bytes()
  config = converted_config(model_name, sigma)
  info = {
      'name': name,
      'model': model_name,
      'task': config.task,
      'parameters': sum(int(np.size(x)) for x in _leaves(variables['params'])),
      'weights_dtype': 'float32',
      'command': command or f'python -m dxnet_jax.convert {checkpoint.name} --sigma {sigma:g}',
      'config': config.to_dict(),
      'converted_from': {
          'file': checkpoint.name,
          'bytes': len(raw),
          'sha256': hashlib.sha256(raw).hexdigest(),
      },
  }
  folder.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f'.{name}.', dir=folder.parent))
  try:
    (staging / pretrained.WEIGHTS).write_bytes(blob)
    (staging / pretrained.MANIFEST).write_text(json.dumps(info, indent=1) + '\n')
    (staging / pretrained.CARD).write_text(model_card(info))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp's folder is private
    staging.rename(folder)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return folder


def _leaves(tree):
  if isinstance(tree, Mapping):
    for value in tree.values():
      yield from _leaves(value)
  else:
    yield tree


def main(argv: Sequence[str] | None = None) -> int:
  raw = argparse.RawDescriptionHelpFormatter
  parser = argparse.ArgumentParser('dxnet-convert', description=__doc__, formatter_class=raw)
  parser.add_argument('checkpoint', help='a PyTorch state_dict file (.pkl, .pt, .pth)')
  parser.add_argument('--sigma', type=float, required=True, help='the noise level it denoises')
  parser.add_argument('--out', required=True, help='folder to write <name>/ into')
  parser.add_argument('--name', help="the model folder's name (default: the file's stem)")
  parser.add_argument('--model', default='xdncnn_authors', choices=sorted(KEY_MAPS))
  args = parser.parse_args(argv)
  command = ' '.join(['python -m dxnet_jax.convert', *(argv if argv is not None else sys.argv[1:])])
  try:
    folder = convert(args.checkpoint, args.out, args.sigma, args.name, args.model, command)
  except (ValueError, OSError, ImportError) as e:
    print(f'dxnet-convert: {e}', file=sys.stderr)
    return 1
  print(f'wrote {folder}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
