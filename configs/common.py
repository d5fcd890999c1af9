"""What the experiment configs share: the trainer's fields and the config-string argument.

Every config in this folder is a `get_config(arg)` that returns one experiment's whole
ConfigDict and states its recipe; variants are chosen by the argument after the file name,
`--config configs/denoise.py:dxnet_444,sigma=25,budget`, parsed by `parse_arg`.
"""

import ml_collections

from dxnet_jax.train import defaults

optim = defaults.optim_config


def parse_arg(arg: str, **fields) -> ml_collections.ConfigDict:
  """Parses a config-string argument against `fields` (name -> default, in order).

  Comma-separated tokens: `key=value` sets a field (converted to its default's type); a bare
  token naming a boolean field sets it to True; any other bare token fills the next field that
  is not boolean, in order. `parse_arg('dxnet_444,sigma=25,budget', model='dxnet_444',
  sigma=50.0, budget=False)` -> model 'dxnet_444', sigma 25.0, budget True.
  """
  values = dict(fields)
  positional = [k for k, v in fields.items() if not isinstance(v, bool)]
  for token in filter(None, (t.strip() for t in (arg or '').split(','))):
    key, sep, value = token.partition('=')
    if not sep and isinstance(fields.get(token), bool):
      values[token] = True
      continue
    if not sep:
      if not positional:
        raise ValueError(f'Config argument {token!r} is not one of {sorted(fields)}.')
      key, value = positional.pop(0), token
    elif key not in fields:
      raise ValueError(f'Config argument {key!r} is unknown; known: {sorted(fields)}.')
    else:
      positional = [k for k in positional if k != key]
    values[key] = _convert(key, value, fields[key])
  return ml_collections.ConfigDict(values)


def _convert(key, value: str, default):
  if isinstance(default, bool):
    if value.lower() not in ('true', 'false', '1', '0'):
      raise ValueError(f'Config argument {key}={value!r}: expected true or false.')
    return value.lower() in ('true', '1')
  try:
    return type(default)(value) if default is not None else value
  except ValueError:
    raise ValueError(
        f'Config argument {key}={value!r}: expected a {type(default).__name__}.'
    ) from None


def choose(name: str, variants: dict, what: str):
  """`variants[name]`, or an error that lists the variants."""
  if name not in variants:
    raise ValueError(f'Unknown {what} {name!r}; choose one of {", ".join(variants)}.')
  return variants[name]


def sgd_on_plateau() -> ml_collections.ConfigDict:
  """The paper's classification optimiser: SGD with Nesterov momentum 0.9, weight decay 5e-4,
  lr 0.1 halved when the validation loss stops improving (patience 10 epochs: ours)."""
  return optim(
      'sgd',
      learning_rate=0.1,
      momentum=0.9,
      nesterov=True,
      weight_decay=5e-4,
      schedule='plateau',
      plateau_factor=0.5,
      plateau_patience=10,
  )


def study(runs, *, budget_steps: int, paper: bool, metrics, compare) -> ml_collections.ConfigDict:
  """A sweep study (`dxnet_jax.sweep`): `runs` x seeds 0, 1, 2; unless `paper`, every run cut to
  `budget_steps` steps."""
  config = ml_collections.ConfigDict()
  config.seeds = (0, 1, 2)
  config.runs = list(runs)
  config.overrides = {} if paper else {'num_steps': budget_steps, 'log_every_steps': 100}
  config.metrics = tuple(metrics)
  config.compare = list(compare)
  return config


def trainer(task: str, model: str, input_shape, **data) -> ml_collections.ConfigDict:
  """The trainer's fields at their defaults (`dxnet_jax.train.defaults`) for `model`."""
  return defaults.base_config(task, model, input_shape, **data)
