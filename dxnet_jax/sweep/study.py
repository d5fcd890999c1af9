"""Study files: a grid of training runs (configs x seeds) and the table's columns, checked.

Every run's config is loaded with its overrides exactly as `dxnet_jax.main` parses them, so a
missing config file, an unknown field or a value main cannot parse is an error before anything
starts. The format is in `dxnet-sweep --help` (the package docstring).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import importlib.util
import json
import os
import re
import sys
import traceback
from typing import Any, Dict, List, Tuple

import ml_collections

from dxnet_jax import config_files

STUDY_FIELDS = ('runs', 'seeds', 'overrides', 'metrics', 'compare', 'analyses', 'resources')
RUN_FIELDS = ('label', 'config', 'overrides', 'resources')
ANALYSIS_FIELDS = ('name', 'module', 'args', 'results')
LABEL_PATTERN = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.+=-]*\Z')
EVAL_METRICS = ('psnr', 'ssim')
RESULT_METRICS = {
    'best_validation': ('best_validation', 'value'),
    'best_validation_step': ('best_validation', 'step'),
    'parameters': ('parameters',),
    'steps': ('steps',),
}
LOG_NAME = 'train.log'
PARTIAL = '.partial'


class StudyError(ValueError):
  """A study, root or command line that cannot be run; the message names the fix."""


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of the grid: a label's config and overrides at one seed."""

  label: str
  seed: int
  config: str
  overrides: Tuple[Tuple[str, Any], ...]
  resources: Tuple[Tuple[str, float], ...] = ()  # what one training takes: cpu, gpu, custom

  @property
  def name(self) -> str:
    """The workdir name under --root (and the model's method name in results.json)."""
    return f'{self.label}-seed{self.seed}'

  def config_args(self) -> List[str]:
    """main's --config flags for this run."""
    flags = [f'--config={self.config}']
    flags += [f'--config.{key}={flag_value(value)}' for key, value in self.overrides]
    return flags + [f'--config.seed={self.seed}']


@dataclasses.dataclass(frozen=True)
class Analysis:
  """A step run on each trained workdir: `python -m MODULE ARGS --workdir=W --out=W/NAME`."""

  name: str
  module: str
  args: Tuple[str, ...]
  results: str  # the JSON file of its values, in its output folder

  def settings(self) -> Dict[str, Any]:
    """What its output depends on besides the workdir; kept beside the output and compared."""
    return {'module': self.module, 'args': list(self.args)}

  def output(self, workdir: str) -> str:
    return os.path.join(workdir, self.name)

  def command(self, workdir: str) -> List[str]:
    """Writes into the output folder's `.partial` twin, renamed into place once it succeeded."""
    out = self.output(workdir) + PARTIAL
    return [sys.executable, '-m', self.module, *self.args, f'--workdir={workdir}', f'--out={out}']


@dataclasses.dataclass
class Study:
  """A checked study: its runs in grid order and the table's metric columns."""

  spec: str
  runs: List[Run]
  columns: List[str]
  compare: List[Tuple[str, str]]
  configs: Dict[str, Dict[str, Any]]  # run name -> the config main saves as config.json
  analyses: List[Analysis] = dataclasses.field(default_factory=list)


def flag_value(value: Any) -> str:
  """`value` as main's config flags parse it back (bools in absl's spelling, tuples as
  literals, strings as they are)."""
  if isinstance(value, bool):
    return 'true' if value else 'false'
  if isinstance(value, str):
    return value
  if isinstance(value, (list, tuple)):
    return repr(tuple(value))
  return repr(value)


def _load_module(path: str, name: str):
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _as_dict(value: Any, what: str) -> Dict[str, Any]:
  if isinstance(value, ml_collections.ConfigDict):
    return value.to_dict()
  if isinstance(value, collections.abc.Mapping):
    return dict(value)
  raise StudyError(f'{what} must be a dict or ConfigDict, got {type(value).__name__}: {value!r}')


def _flatten(overrides: Dict[str, Any], what: str, prefix: str = '') -> Dict[str, Any]:
  """{'model': {'growth_rate': 8}} -> {'model.growth_rate': 8}."""
  flat = {}
  for key, value in overrides.items():
    if not isinstance(key, str) or not key:
      raise StudyError(f'{what}: override keys are config field names, got {key!r}')
    path = f'{prefix}{key}'
    if isinstance(value, (collections.abc.Mapping, ml_collections.ConfigDict)):
      flat.update(_flatten(_as_dict(value, what), what, path + '.'))
    else:
      flat[path] = value
  return flat


def load_study(spec: str) -> Study:
  """Reads, checks and expands the study `path.py[:arg]`; raises StudyError naming the problem."""
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    raise StudyError(f'study file {path!r} not found (from {os.getcwd()}).')
  config_files.put_root_on_path(path)  # study files import configs.* like training configs
  try:
    module = _load_module(path, 'dxnet_sweep_study')
  except Exception as e:  # pylint: disable=broad-except
    raise StudyError(f'study file {path} failed to load:\n{_last_frames(e)}') from None
  if not callable(getattr(module, 'get_config', None)):
    raise StudyError(f"study file {path} has no get_config(arg='') function.")
  try:
    raw = module.get_config(arg) if arg else module.get_config()
  except Exception as e:  # pylint: disable=broad-except
    raise StudyError(f'{spec}: get_config raised:\n{_last_frames(e)}') from None
  fields = _as_dict(raw, f'{spec}: get_config()')
  unknown = sorted(set(fields) - set(STUDY_FIELDS))
  if unknown:
    raise StudyError(f'{spec}: unknown study fields {unknown}; a study has {list(STUDY_FIELDS)}.')
  for required in ('runs', 'seeds', 'metrics'):
    if required not in fields:
      raise StudyError(
          f'{spec}: study.{required} is missing (see `python -m dxnet_jax.sweep --help`).'
      )

  seeds = _check_seeds(fields['seeds'], spec)
  common = _flatten(_as_dict(fields.get('overrides') or {}, f'{spec}: study.overrides'), spec)
  resources = _check_resources(fields.get('resources') or {}, f'{spec}: study.resources')
  groups = _check_runs(fields['runs'], spec)
  runs, configs, eval_sets = [], {}, {}
  loader = _ConfigLoader()
  for label, config_string, own, own_resources in groups:
    overrides = {**common, **own}
    needs = tuple({**resources, **own_resources}.items())
    if 'seed' in overrides:
      raise StudyError(f'run {label!r}: the seed comes from study.seeds, not from overrides.')
    loader.check_fields(label, config_string, overrides)
    for seed in seeds:
      run = Run(label, seed, config_string, tuple(overrides.items()), needs)
      config = loader.load(run)
      runs.append(run)
      configs[run.name] = json.loads(config.to_json_best_effort())
      for eval_set in _eval_sets(config):
        eval_sets.setdefault(set_name(eval_set), set()).add(eval_set)
  clashes = {name: sorted(paths) for name, paths in eval_sets.items() if len(paths) > 1}
  if clashes:
    raise StudyError(f'{spec}: different eval sets share a column name: {clashes}.')
  analyses = _check_analyses(fields.get('analyses') or (), spec)
  columns = _columns(fields['metrics'], list(eval_sets), [a.name for a in analyses], spec)
  compare = _check_compare(fields.get('compare') or (), [g[0] for g in groups], spec)
  return Study(spec, runs, columns, compare, configs, analyses)


def _last_frames(error: BaseException) -> str:
  return ''.join(traceback.format_exception(error)[-4:]).rstrip()


def _check_seeds(seeds: Any, spec: str) -> List[int]:
  if isinstance(seeds, int) or not isinstance(seeds, collections.abc.Sequence) or not seeds:
    raise StudyError(f'{spec}: study.seeds must be a non-empty tuple of ints, got {seeds!r}.')
  if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
    raise StudyError(f'{spec}: study.seeds must be non-negative ints, got {seeds!r}.')
  if len(set(seeds)) != len(seeds):
    raise StudyError(f'{spec}: study.seeds repeats a seed: {seeds!r}.')
  return list(seeds)


def _check_runs(runs: Any, spec: str) -> List[Tuple[str, str, Dict[str, Any], Dict[str, float]]]:
  if not isinstance(runs, collections.abc.Sequence) or isinstance(runs, str) or not runs:
    raise StudyError(
        f'{spec}: study.runs must be a non-empty list of dict(label=..., config=..., '
        f'overrides={{...}}), got {runs!r}.'
    )
  groups, labels = [], set()
  for i, entry in enumerate(runs):
    what = f'{spec}: study.runs[{i}]'
    entry = _as_dict(entry, what)
    unknown = sorted(set(entry) - set(RUN_FIELDS))
    if unknown:
      raise StudyError(f'{what}: unknown keys {unknown}; a run has {list(RUN_FIELDS)}.')
    label, config = entry.get('label'), entry.get('config')
    if not isinstance(label, str) or not LABEL_PATTERN.match(label):
      raise StudyError(
          f'{what}: label {label!r} must be a name of letters, digits and _.+=- (it names the '
          'workdirs).'
      )
    if label in labels:
      raise StudyError(f'{what}: label {label!r} is used twice; labels must be unique.')
    labels.add(label)
    if not isinstance(config, str) or not config:
      raise StudyError(f"{what}: config must be a config string 'path.py[:arg]', got {config!r}.")
    overrides = _flatten(_as_dict(entry.get('overrides') or {}, what), what)
    resources = _check_resources(entry.get('resources') or {}, f'{what}.resources')
    groups.append((label, config, overrides, resources))
  return groups


def _check_resources(resources: Any, what: str) -> Dict[str, float]:
  """{'cpu': 2, 'gpu': 1, 'TPU': 4, ...}: Ray resources one training of a run takes."""
  resources = _as_dict(resources, what)
  for name, amount in resources.items():
    number = isinstance(amount, (int, float)) and not isinstance(amount, bool)
    if not isinstance(name, str) or not name or not number or amount < 0:
      raise StudyError(f'{what}: resources map names to amounts >= 0, got {name!r}: {amount!r}.')
  return resources


def _check_compare(compare: Any, labels: List[str], spec: str) -> List[Tuple[str, str]]:
  pairs = []
  for pair in compare:
    if isinstance(pair, str) or len(pair) != 2:
      raise StudyError(f'{spec}: study.compare holds (A, B) label pairs, got {pair!r}.')
    missing = [label for label in pair if label not in labels]
    if missing:
      raise StudyError(f'{spec}: study.compare names unknown labels {missing}; labels: {labels}.')
    pairs.append(tuple(pair))
  return pairs


def _check_analyses(analyses: Any, spec: str) -> List[Analysis]:
  if isinstance(analyses, (str, collections.abc.Mapping)) or not isinstance(
      analyses, collections.abc.Sequence
  ):
    raise StudyError(
        f'{spec}: study.analyses must be a list of dict(name=..., module=..., args=(...), '
        f'results=...), got {analyses!r}.'
    )
  checked = []
  for i, entry in enumerate(analyses):
    what = f'{spec}: study.analyses[{i}]'
    entry = _as_dict(entry, what)
    unknown = sorted(set(entry) - set(ANALYSIS_FIELDS))
    missing = [f for f in ANALYSIS_FIELDS if f not in entry and f != 'args']
    if unknown or missing:
      raise StudyError(
          f'{what}: unknown keys {unknown}, missing keys {missing}; an analysis has '
          f'{list(ANALYSIS_FIELDS)}.'
      )
    name, module, results = entry['name'], entry['module'], entry['results']
    if not isinstance(name, str) or not LABEL_PATTERN.match(name):
      raise StudyError(
          f'{what}: name {name!r} must be a name of letters, digits and _.+=- (it names the '
          'output folder in each workdir).'
      )
    taken = [*EVAL_METRICS, *RESULT_METRICS, os.path.splitext(LOG_NAME)[0]]
    if name in taken or name in [a.name for a in checked]:
      raise StudyError(
          f'{what}: name {name!r} is taken by a metric, the training log or another analysis.'
      )
    if not isinstance(module, str) or not _module_exists(module):
      raise StudyError(f'{what}: module {module!r} is not importable here.')
    args = entry.get('args') or ()
    if isinstance(args, (collections.abc.Mapping, ml_collections.ConfigDict)):
      args = command_flags(_as_dict(args, what))
    if isinstance(args, str) or not all(isinstance(a, str) for a in args):
      raise StudyError(f'{what}: args must be a dict of values or a tuple of flags, got {args!r}.')
    for arg in args:
      if arg.lstrip('-').split('=', 1)[0] in ('workdir', 'out'):
        raise StudyError(f'{what}: arg {arg!r}: the sweep sets --workdir and --out.')
    if not isinstance(results, str) or not results or os.path.isabs(results) or '..' in results:
      raise StudyError(
          f'{what}: results must name a JSON file in the output folder, got {results!r}.'
      )
    checked.append(Analysis(name, module, tuple(args), results))
  return checked


def command_flags(values: Dict[str, Any]) -> Tuple[str, ...]:
  """{'fit_max_sigma': 0.002, 'sigmas': (0.001, 0.002)} -> ('--fit-max-sigma=0.002',
  '--sigmas=0.001,0.002'): an analysis' values as its command line takes them (True is a bare
  flag, False and None leave the flag out)."""

  def text(value):
    return f'{value:g}' if isinstance(value, float) else str(value)

  flags = []
  for name, value in values.items():
    flag = '--' + name.replace('_', '-')
    if value is True:
      flags.append(flag)
    elif value is not False and value is not None:
      is_list = isinstance(value, (list, tuple))
      flags.append(f'{flag}=' + (','.join(map(text, value)) if is_list else text(value)))
  return tuple(flags)


def _module_exists(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except (ImportError, ValueError):
    return False


def _eval_sets(config) -> List[str]:
  """The eval sets whose protocol rows main writes into results.json."""
  if config.task == 'classification' or not config.get('final_eval'):
    return []
  return list(config.data.get('eval_sets') or ())


def set_name(eval_set: str) -> str:
  return os.path.basename(os.path.normpath(eval_set))


def _columns(metrics: Any, eval_sets: List[str], analyses: List[str], spec: str) -> List[str]:
  """The metric columns, with 'psnr' / 'ssim' expanded to one column per eval set."""
  if isinstance(metrics, str) or not isinstance(metrics, collections.abc.Sequence):
    raise StudyError(f'{spec}: study.metrics must be a tuple of names, got {metrics!r}.')
  known = list(RESULT_METRICS) + list(EVAL_METRICS) + [f'{m}/SET' for m in EVAL_METRICS]
  known += [f'{name}/KEY' for name in analyses]
  columns = []
  for metric in metrics:
    kind, _, eval_set = str(metric).partition('/')
    if metric in RESULT_METRICS:
      columns.append(metric)
    elif kind in analyses:
      if not eval_set:
        raise StudyError(
            f"{spec}: metric {metric!r} names an analysis; name one of its values, '{kind}/KEY'."
        )
      columns.append(metric)
    elif kind in EVAL_METRICS:
      if not eval_sets:
        raise StudyError(
            f'{spec}: metric {metric!r} needs runs that score eval sets (restoration configs '
            'with config.final_eval and config.data.eval_sets); no run of this study does.'
        )
      if eval_set and eval_set not in eval_sets:
        raise StudyError(
            f'{spec}: metric {metric!r}: no run evaluates {eval_set!r}; the runs score '
            f'{eval_sets}.'
        )
      columns += [f'{kind}/{s}' for s in ([eval_set] if eval_set else eval_sets)]
    else:
      raise StudyError(f'{spec}: unknown metric {metric!r}; known: {known}.')
  return list(dict.fromkeys(columns))


class _ConfigLoader:
  """Loads training configs the way main's `--config` flag does (ml_collections config_flags)."""

  def __init__(self):
    self._bases = {}

  @staticmethod
  def _parse(args: List[str]):
    from absl import flags  # pylint: disable=g-import-not-at-top
    from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

    argv = ['dxnet_jax.main', *args]
    config_files.put_roots_on_path(argv)
    values = flags.FlagValues()
    config_flags.DEFINE_config_file(
        'config', None, flag_values=values, lock_config=True, sys_argv=argv
    )
    values(argv)
    return values.config

  def base(self, label: str, config_string: str):
    """The config without overrides (cached per config string)."""
    if config_string not in self._bases:
      path = config_string.partition(':')[0]
      if not os.path.isfile(path):
        raise StudyError(
            f'run {label!r}: config file {path!r} not found (relative paths are taken from the '
            f'current directory, {os.getcwd()}, as by `dxnet_jax.main --config`).'
        )
      try:
        self._bases[config_string] = self._parse([f'--config={config_string}'])
      except Exception as e:  # pylint: disable=broad-except
        raise StudyError(
            f'run {label!r}: config {config_string!r} failed to load:\n{_last_frames(e)}'
        ) from None
    return self._bases[config_string]

  def check_fields(self, label: str, config_string: str, overrides: Dict[str, Any]):
    """Every override names an existing field (a typo would otherwise fail only in main)."""
    base = self.base(label, config_string)
    for key in overrides:
      node, walked = base, []
      for part in key.split('.'):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
          fields = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
          close = difflib.get_close_matches(part, fields, n=3)
          where = 'config.' + '.'.join(walked) if walked else 'the config'
          hint = f' Did you mean {close}?' if close else ''
          raise StudyError(
              f'run {label!r}: override {key!r}: {where} of {config_string} has no field '
              f'{part!r}.{hint}'
          )
        node, walked = node[part], walked + [part]

  def load(self, run: Run):
    """The run's config as main will see it; checks each override arrives unchanged."""
    try:
      config = self._parse(run.config_args())
    except Exception as e:  # pylint: disable=broad-except
      raise StudyError(
          f'run {run.label!r}: main cannot take its overrides {dict(run.overrides)}:\n'
          f'{_last_frames(e)}'
      ) from None
    for key, value in run.overrides:
      parsed = _get_path(config, key)
      if _normalise(parsed) != _normalise(value):
        raise StudyError(
            f'run {run.label!r}: override {key}={value!r} reaches main as {parsed!r} '
            f'(--config.{key}={flag_value(value)}); give the value the type of the field.'
        )
    return config


def _get_path(config, key: str):
  for part in key.split('.'):
    config = config[part]
  return config


def _normalise(value: Any) -> Any:
  if isinstance(value, ml_collections.ConfigDict):
    value = value.to_dict()
  if isinstance(value, (list, tuple)):
    return tuple(_normalise(v) for v in value)
  if isinstance(value, dict):
    return {k: _normalise(v) for k, v in value.items()}
  return value
