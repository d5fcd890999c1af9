"""Multi-seed studies: a grid of training runs, resumable, with one results table.

    python -m dxnet_jax.sweep STUDY[:ARG] --root DIR [--workers N] [--main-flag=--FLAG=VALUE ...]

A study file is a Python file whose `get_config(arg='')` returns a ConfigDict (the `path.py[:arg]`
convention of training configs, big_vision style):

    import ml_collections

    def get_config(arg=''):
      study = ml_collections.ConfigDict()
      study.seeds = (0, 1, 2)
      study.runs = [
          dict(label='dxnet_444', config='configs/denoise.py:dxnet_444'),
          dict(label='densenet_444', config='configs/denoise.py:densenet_444'),
          dict(label='densenet_444_lr5e-4', config='configs/denoise.py:densenet_444',
               overrides={'optim.learning_rate': 5e-4}),
      ]
      study.overrides = {'num_epochs': 5} if arg == 'short' else {}
      study.metrics = ('psnr', 'ssim', 'best_validation', 'parameters')
      study.compare = [('densenet_444', 'dxnet_444')]
      return study

Fields
  runs       dict(label, config, overrides={}) per row group, in table order. `label` names the
             rows and the workdirs (letters, digits and `_.+=-`; unique). `config` is a training
             config string as for `dxnet_jax.main --config` (a relative path is taken from the
             current directory). `overrides` maps config fields to values ('optim.learning_rate'
             or nested dicts); they reach main as `--config.FIELD=VALUE`.
  seeds      each run is trained once per seed (`--config.seed=SEED`).
  overrides  (optional) applied to every run, before the run's own overrides.
  metrics    the table's columns, read from each run's results.json:
               'psnr', 'ssim'          one column per eval set, e.g. 'psnr/BSD68': the trained
                                       model's row of the benchmark protocol (restoration runs
                                       with config.final_eval and config.data.eval_sets);
               'psnr/BSD68'            one eval set (named by its folder's base name);
               'best_validation'       the best validation value (the task's metric) and
               'best_validation_step'  the step that reached it;
               'parameters', 'steps'   parameter count and steps trained.
               'NAME/KEY'              the value KEY of the analysis NAME (below).
  compare    (optional) (A, B) label pairs: the summary printed at the end adds the paired
             differences B - A over the seeds (`dxnet_jax.analysis.stats`).
  analyses   (optional) steps run on every trained workdir once its training finished (or was
             found finished), in order, e.g. the minima sharpness of each trained model:
               dict(name='sharpness', module='dxnet_jax.analysis.sharpness',
                    args=('--sigmas=0.001,0.002,0.004', '--probes=16'), results='sharpness.json')
             The sweep runs `python -m MODULE ARGS --workdir=WORKDIR --out=WORKDIR/NAME.partial`
             (an empty folder) and, when it exits 0, renames that folder to WORKDIR/NAME.
             `results` is the JSON file there that holds the analysis' values: an object, or a
             list of one object (as the analysis CLIs write for one workdir). `name` is a name
             of letters, digits and _.+=-.

Before anything starts, every run's config is loaded with its overrides exactly as main parses
them: a missing config file, an unknown field or a value main cannot parse is an error.

Under --root
  LABEL-seedSEED/   the run's workdir (main's checkpoints, metrics, config.json, results.json)
                    with train.log, main's output (appended by each attempt)
  results.csv       the table: label, seed, status ('done' | 'failed') and the metric columns,
  results.json      one row per finished run in grid order, rewritten atomically after each run;
                    its content does not depend on interruptions or worker count. The JSON rows
                    add workdir, config, overrides and, for failed runs, the log's tail.
  LABEL-seedSEED/NAME/
                    an analysis' output, with sweep-analysis.json (the module and args that made
                    it) and NAME.log beside it (the analysis' output, appended by each attempt)
  timing.json       wall time and attempts per run and per analysis (kept out of the table)

Rerunning the same command resumes the sweep: runs with a results.json are skipped, the others
rerun main in their workdir, which resumes from its latest checkpoint (failed runs are retried).
Analyses whose output folder exists are skipped; the others (re)start from scratch. So another
study with the same runs and --root reuses their trainings: e.g. configs/studies/sharpness.py
adds the sharpness analysis to the runs of configs/studies/denoise_params.py, and its table
holds all of that study's columns and the sharpness ones. A run is done when its training and
every analysis are; a failed analysis fails its run (its row keeps the training's columns).
A workdir whose config.json is not the study's config for that run is an error (give the run
another label or use another --root), as is an analysis folder made with other args or not by
the sweep, and a workdir still locked by a training or analysis that outlived an earlier sweep.

SIGINT / SIGTERM stop the sweep: the running trainings get SIGTERM, save their state and exit;
a second signal kills them. Exit status: 0 when every run is done, 1 when some run failed, 2 for
a bad study or command line, 128 + the signal number when stopped by a signal.

Workers: runs start in grid order, `--workers` at a time (default 1). Parallel workers share the
host's accelerators: on a GPU each run may take 90%/N of its memory (XLA_PYTHON_CLIENT_MEM_FRACTION,
unless the environment sets a GPU memory option); a TPU chip serves one process, so use one worker
per TPU host. `--main-flag` passes a flag to every run's main, e.g. `--main-flag=--cpu_devices=2`.
"""

from __future__ import annotations

import argparse
import collections.abc
import csv
import dataclasses
import difflib
import fcntl
import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from typing import Any, Dict, List, Optional, Sequence, Tuple

import ml_collections

from dxnet_jax import config_files

STUDY_FIELDS = ('runs', 'seeds', 'overrides', 'metrics', 'compare', 'analyses')
RUN_FIELDS = ('label', 'config', 'overrides')
ANALYSIS_FIELDS = ('name', 'module', 'args', 'results')
LABEL_PATTERN = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.+=-]*\Z')
EVAL_METRICS = ('psnr', 'ssim')
RESULT_METRICS = {
    'best_validation': ('best_validation', 'value'),
    'best_validation_step': ('best_validation', 'step'),
    'parameters': ('parameters',),
    'steps': ('steps',),
}
TABLE_KEYS = ('label', 'seed', 'status')
DONE, FAILED = 'done', 'failed'

LOG_NAME = 'train.log'
ANALYSIS_RECORD = 'sweep-analysis.json'
PARTIAL = '.partial'
RUN_LOCK = '.sweep-run.lock'
ROOT_LOCK = '.sweep.lock'
TAIL_LINES = 40
POLL_SECONDS = 0.2
GPU_MEMORY_VARS = (
    'XLA_PYTHON_CLIENT_MEM_FRACTION',
    'XLA_PYTHON_CLIENT_PREALLOCATE',
    'XLA_PYTHON_CLIENT_ALLOCATOR',
)

EXIT_FAILED = 1
EXIT_USAGE = 2


class StudyError(ValueError):
  """A study, root or command line that cannot be run; the message names the fix."""


# ----------------------------------------------------------------------------------- the study


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of the grid: a label's config and overrides at one seed."""

  label: str
  seed: int
  config: str
  overrides: Tuple[Tuple[str, Any], ...]

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
  groups = _check_runs(fields['runs'], spec)
  runs, configs, eval_sets = [], {}, {}
  loader = _ConfigLoader()
  for label, config_string, own in groups:
    overrides = {**common, **own}
    if 'seed' in overrides:
      raise StudyError(f'run {label!r}: the seed comes from study.seeds, not from overrides.')
    loader.check_fields(label, config_string, overrides)
    for seed in seeds:
      run = Run(label, seed, config_string, tuple(overrides.items()))
      config = loader.load(run)
      runs.append(run)
      configs[run.name] = json.loads(config.to_json_best_effort())
      for eval_set in _eval_sets(config):
        eval_sets.setdefault(_set_name(eval_set), set()).add(eval_set)
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


def _check_runs(runs: Any, spec: str) -> List[Tuple[str, str, Dict[str, Any]]]:
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
    groups.append((label, config, overrides))
  return groups


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
    if isinstance(args, str) or not all(isinstance(a, str) for a in args):
      raise StudyError(f'{what}: args must be a tuple of strings, got {args!r}.')
    for arg in args:
      if arg.lstrip('-').split('=', 1)[0] in ('workdir', 'out'):
        raise StudyError(f'{what}: arg {arg!r}: the sweep sets --workdir and --out.')
    if not isinstance(results, str) or not results or os.path.isabs(results) or '..' in results:
      raise StudyError(
          f'{what}: results must name a JSON file in the output folder, got {results!r}.'
      )
    checked.append(Analysis(name, module, tuple(args), results))
  return checked


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


def _set_name(eval_set: str) -> str:
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


# ----------------------------------------------------------------------------- results and table


def read_results(workdir: str) -> Optional[Dict[str, Any]]:
  """The run's results.json, or None while it is missing or incomplete."""
  try:
    with open(os.path.join(workdir, 'results.json')) as f:
      results = json.load(f)
  except (OSError, ValueError):
    return None
  return results if isinstance(results, dict) and 'steps' in results else None


def metric_value(results: Dict[str, Any], column: str, run_name: str) -> Any:
  """One table cell from a results.json; None when the run does not report it."""
  if column in RESULT_METRICS:
    value = results
    for key in RESULT_METRICS[column]:
      if not isinstance(value, dict):
        return None
      value = value.get(key)
    return value
  kind, _, eval_set = column.partition('/')
  for row in results.get('evaluation') or ():
    if row.get('method') == run_name and _set_name(row.get('set', '')) == eval_set:
      return row.get(kind)
  return None


def _read_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def analysis_values(folder: str, analysis: Analysis) -> Dict[str, Any]:
  """The values an analysis wrote into `folder`; StudyError when they are missing."""
  path = os.path.join(folder, analysis.results)
  values = _read_json(path)
  if isinstance(values, list) and len(values) == 1:
    values = values[0]
  if not isinstance(values, dict):
    raise StudyError(
        f'{path} is missing or holds no JSON object of values: check study.analyses '
        f'{analysis.name!r} results.'
    )
  return values


def read_analysis(workdir: str, analysis: Analysis) -> Optional[Dict[str, Any]]:
  """The values of the workdir's finished analysis, or None when it has not finished.

  An output folder the sweep did not make, or made with other settings, is a StudyError: it is
  neither reused nor replaced.
  """
  out = analysis.output(workdir)
  if not os.path.exists(out):
    return None
  record = _read_json(os.path.join(out, ANALYSIS_RECORD))
  if record is None:
    raise StudyError(
        f'{out} was not made by the sweep (no {ANALYSIS_RECORD}): move it away or give the '
        f'analysis {analysis.name!r} another name.'
    )
  if record != analysis.settings():
    raise StudyError(
        f'{out} was made with other settings ({_config_difference(record, analysis.settings())}):'
        ' move it away to redo it, give the analysis another name, or use another --root.'
    )
  return analysis_values(out, analysis)


def missing_values(study: Study, analysis: Analysis, values: Dict[str, Any]) -> List[str]:
  """The study's columns of `analysis` whose keys `values` lacks."""
  return [
      column
      for column in study.columns
      if column.partition('/')[0] == analysis.name and column.partition('/')[2] not in values
  ]


def _missing_message(study: Study, analysis: Analysis, workdir: str, values: Dict[str, Any]):
  path = os.path.join(analysis.output(workdir), analysis.results)
  return (
      f'study.metrics asks for {missing_values(study, analysis, values)}, which {path} lacks '
      f'(it has {sorted(values)}): fix study.metrics.'
  )


def _atomic_write(path: str, text: str):
  with open(path + '.tmp', 'w') as f:
    f.write(text)
  os.replace(path + '.tmp', path)


def table_rows(study: Study, outcomes: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
  """The table's rows: finished runs in grid order."""
  rows = []
  for run in study.runs:
    outcome = outcomes.get(run.name)
    if outcome is None:
      continue
    row = {'label': run.label, 'seed': run.seed, 'status': outcome['status']}
    results = outcome.get('results')
    analyses = outcome.get('analyses') or {}
    row['metrics'] = {}
    for column in study.columns:
      name, _, key = column.partition('/')
      if name in analyses:
        row['metrics'][column] = analyses[name].get(key)
      else:
        row['metrics'][column] = metric_value(results, column, run.name) if results else None
    row.update(workdir=run.name, config=run.config, overrides=dict(run.overrides))
    if outcome['status'] == FAILED:
      row['error'] = outcome['error']
    rows.append(row)
  return rows


def write_table(study: Study, root: str, rows: List[Dict[str, Any]]):
  """results.json and results.csv under `root`, each replaced atomically."""
  payload = {
      'study': study.spec,
      'runs': len(study.runs),
      'columns': [*TABLE_KEYS, *study.columns],
      'rows': rows,
  }
  _atomic_write(os.path.join(root, 'results.json'), json.dumps(payload, indent=1) + '\n')
  text = io.StringIO()
  writer = csv.writer(text, lineterminator='\n')
  writer.writerow(payload['columns'])
  for row in rows:
    cells = [row[k] for k in TABLE_KEYS] + [row['metrics'][c] for c in study.columns]
    writer.writerow(['' if cell is None else cell for cell in cells])
  _atomic_write(os.path.join(root, 'results.csv'), text.getvalue())


# --------------------------------------------------------------------------------- workdir state


def _try_lock(path: str) -> Optional[int]:
  """An fd holding an exclusive lock on `path`, or None when another process holds it."""
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    os.close(fd)
    return None
  return fd


def _lock_holder(path: str) -> str:
  try:
    with open(path) as f:
      return f.read().strip() or 'unknown'
  except OSError:
    return 'unknown'


def _write_pid(fd: int, pid: int, analysis: str = ''):
  os.ftruncate(fd, 0)
  os.pwrite(fd, f'{pid} {analysis}'.strip().encode() + b'\n', 0)


def _lock_user(path: str) -> str:
  """Who holds a run's lock: 'being trained by process N' or 'being analysed (NAME) by ...'."""
  pid, _, analysis = _lock_holder(path).partition(' ')
  if analysis:
    return f'being analysed ({analysis}) by process {pid}'
  return f'being trained by process {pid}'


def _flat(config: Any, prefix: str = '') -> Dict[str, Any]:
  if isinstance(config, dict):
    out = {}
    for key, value in config.items():
      out.update(_flat(value, f'{prefix}{key}.'))
    return out
  return {prefix[:-1]: config}


def _config_difference(saved: Dict[str, Any], wanted: Dict[str, Any]) -> str:
  a, b = _flat(saved), _flat(wanted)
  keys = [k for k in dict.fromkeys([*b, *a]) if a.get(k, '<absent>') != b.get(k, '<absent>')]
  shown = ', '.join(f'{k}: {a.get(k, "<absent>")!r} -> {b.get(k, "<absent>")!r}' for k in keys[:4])
  return shown + (f' and {len(keys) - 4} more' if len(keys) > 4 else '')


def check_workdirs(study: Study, root: str):
  """Existing workdirs must hold this study's config and no live training process."""
  problems = []
  for run in study.runs:
    workdir = os.path.join(root, run.name)
    lock = os.path.join(workdir, RUN_LOCK)
    if os.path.exists(lock):
      fd = _try_lock(lock)
      if fd is None:
        problems.append(
            f'{workdir} is {_lock_user(lock)} (left by an earlier sweep?): wait for it to end '
            'or stop it, then rerun.'
        )
        continue
      os.close(fd)
    config_path = os.path.join(workdir, 'config.json')
    if not os.path.exists(config_path):
      continue
    try:
      with open(config_path) as f:
        saved = json.load(f)
    except (OSError, ValueError) as e:
      problems.append(f'{config_path} is unreadable ({e}).')
      continue
    wanted = study.configs[run.name]
    if saved != wanted:
      problems.append(
          f'{workdir} was trained with another config ({_config_difference(saved, wanted)}): '
          'restore the study, give the run a new label, or use another --root.'
      )
    problems += _analysis_problems(study, workdir)
  if problems:
    raise StudyError('\n'.join(problems))


def _analysis_problems(study: Study, workdir: str) -> List[str]:
  """Finished analyses of `workdir` that this study cannot reuse."""
  problems = []
  for analysis in study.analyses:
    try:
      values = read_analysis(workdir, analysis)
    except StudyError as e:
      problems.append(str(e))
      continue
    if values is not None and missing_values(study, analysis, values):
      problems.append(_missing_message(study, analysis, workdir, values))
  return problems


# ------------------------------------------------------------------------------------- the sweep


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  return f'{hours}h{rest // 60:02d}m' if hours else f'{rest // 60}m{rest % 60:02d}s'


def _exit_reason(returncode: int) -> str:
  if returncode < 0:
    try:
      return f'killed by {signal.Signals(-returncode).name}'
    except ValueError:
      return f'killed by signal {-returncode}'
  if returncode == 128 + signal.SIGTERM:
    return 'stopped by SIGTERM (exit 143) with its state saved; rerun the sweep to resume it'
  return f'exit status {returncode}'


def _log_tail(path: str, offset: int) -> str:
  try:
    with open(path, 'rb') as f:
      f.seek(offset)
      text = f.read().decode(errors='replace')
  except OSError:
    return ''
  return '\n'.join(text.splitlines()[-TAIL_LINES:])


# A run's steps: None is its training, an Analysis one of its analyses.
Step = Optional[Analysis]


@dataclasses.dataclass
class _Active:
  run: Run
  step: Step
  todo: List[Step]  # the run's steps after this one
  proc: subprocess.Popen
  started: float
  log_path: str
  log_offset: int


class Sweep:
  """Runs a study's grid under `root`, `workers` runs at a time (each its steps in order)."""

  def __init__(
      self,
      study: Study,
      root: str,
      workers: int = 1,
      main_flags: Sequence[str] = (),
  ):
    self.study, self.root, self.workers = study, root, workers
    self.main_flags = list(main_flags)
    self.outcomes: Dict[str, Dict[str, Any]] = {}
    self.progress: Dict[str, Dict[str, Any]] = {}  # run name -> results and analyses so far
    self.active: List[_Active] = []
    self.pending: List[Tuple[Run, List[Step]]] = []
    self.signals: List[int] = []
    self.terminated = self.killed = False
    self.timing_path = os.path.join(root, 'timing.json')
    self.timing: Dict[str, Dict[str, Any]] = {}

  # -- bookkeeping

  def _read_timing(self) -> Dict[str, Dict[str, Any]]:
    try:
      with open(self.timing_path) as f:
        return json.load(f)['runs']
    except (OSError, ValueError, KeyError, TypeError):
      return {}

  def _timing_entry(self, run: Run, step: Step) -> Dict[str, Any]:
    """A run's attempts: its training's at the top level, each analysis' under its name."""
    entry = self.timing.setdefault(run.name, {})
    return entry if step is None else entry.setdefault(step.name, {})

  def _record_attempt(self, run: Run, step: Step, seconds: float, returncode: int):
    entry = self._timing_entry(run, step)
    entry['attempts'] = entry.get('attempts', 0) + 1
    entry['wall_s'] = round(entry.get('wall_s', 0.0) + seconds, 3)
    entry['last_exit'] = returncode
    _atomic_write(self.timing_path, json.dumps({'runs': self.timing}, indent=1) + '\n')

  def _write_table(self):
    write_table(self.study, self.root, table_rows(self.study, self.outcomes))

  def _count(self, status: str) -> int:
    return sum(o['status'] == status for o in self.outcomes.values())

  def _mean_wall(self, step: Step) -> Optional[float]:
    """Mean wall time of a step over the done runs that timed it; None before any."""
    walls = []
    for name, outcome in self.outcomes.items():
      entry = self.timing.get(name, {})
      entry = entry if step is None else entry.get(step.name, {})
      if outcome['status'] == DONE and 'wall_s' in entry:
        walls.append(entry['wall_s'])
    return sum(walls) / len(walls) if walls else None

  def _eta(self) -> str:
    """Time left from the mean time of each step; '' while some step has no measurement."""
    if not (self.pending or self.active):
      return ''
    now = time.monotonic()
    queued = [step for _, steps in self.pending for step in steps]
    queued += [step for active in self.active for step in active.todo]
    means = [self._mean_wall(step) for step in queued]
    running = [(self._mean_wall(a.step), now - a.started) for a in self.active]
    if None in means or any(mean is None for mean, _ in running):
      return ''
    left = sum(means) + sum(max(mean - elapsed, 0.0) for mean, elapsed in running)
    return f', ETA {_duration(left / min(self.workers, len(self.pending) + len(self.active)))}'

  def _say(self, message: str):
    total = len(self.study.runs)
    status = (
        f'{self._count(DONE)}/{total} done, {len(self.active)} running, '
        f'{self._count(FAILED)} failed{self._eta()}'
    )
    print(f'sweep [{time.strftime("%H:%M:%S")}] {status} | {message}', file=sys.stderr, flush=True)

  # -- processes

  def _environment(self) -> Dict[str, str]:
    env = dict(os.environ)
    env.setdefault('PYTHONUNBUFFERED', '1')
    if self.workers > 1 and not any(v in env for v in GPU_MEMORY_VARS):
      env['XLA_PYTHON_CLIENT_MEM_FRACTION'] = f'{min(0.75, 0.9 / self.workers):.3f}'
    return env

  def command(self, run: Run, step: Step = None) -> List[str]:
    workdir = os.path.join(self.root, run.name)
    if step is not None:
      return step.command(workdir)
    return [
        sys.executable,
        '-m',
        'dxnet_jax.main',
        *run.config_args(),
        f'--workdir={workdir}',
        *self.main_flags,
    ]

  def _start(self, run: Run, steps: List[Step]):
    """Starts the first of a run's steps; the others follow it in the same worker."""
    step, todo = steps[0], steps[1:]
    workdir = os.path.join(self.root, run.name)
    os.makedirs(workdir, exist_ok=True)
    lock = os.path.join(workdir, RUN_LOCK)
    fd = _try_lock(lock)
    if fd is None:
      self._fail(run, f'{workdir} is {_lock_user(lock)}', '')
      return
    try:
      if step is None:
        log_path = os.path.join(workdir, LOG_NAME)
      else:
        log_path = step.output(workdir) + '.log'
        if os.path.exists(step.output(workdir)):
          self._fail(run, f'{step.output(workdir)} exists: give the analysis another name', '')
          return
        shutil.rmtree(step.output(workdir) + PARTIAL, ignore_errors=True)  # an attempt's remains
        os.makedirs(step.output(workdir) + PARTIAL)
      command = self.command(run, step)
      with open(log_path, 'ab') as log:
        offset = log.tell()
        log.write(f'==== {time.strftime("%Y-%m-%d %H:%M:%S")} {shlex.join(command)}\n'.encode())
        log.flush()
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self._environment(),
            # Its own process group: a terminal's Ctrl-C reaches the sweep only, which stops
            # the trainings with SIGTERM (they save and exit) rather than interrupting them.
            start_new_session=True,
            # The process holds the workdir's lock for as long as it lives.
            pass_fds=(fd,),
        )
      _write_pid(fd, proc.pid, '' if step is None else step.name)
    finally:
      os.close(fd)
    self.outcomes.pop(run.name, None)
    self.active.append(_Active(run, step, todo, proc, time.monotonic(), log_path, offset))
    self._say(f'started {run.name}' + ('' if step is None else f' {step.name}'))

  def _signal_all(self, signum: int):
    for active in self.active:
      try:
        os.killpg(active.proc.pid, signum)
      except (ProcessLookupError, PermissionError):
        pass

  def _fail(self, run: Run, reason: str, tail: str):
    self.outcomes[run.name] = {
        **self.progress.get(run.name, {}),
        'status': FAILED,
        'error': f'{reason}\n{tail}'.rstrip(),
    }
    self._write_table()
    shown = '\n'.join(tail.splitlines()[-12:])
    self._say(f'FAILED {run.name}: {reason}\n{shown}')

  def _collect(self, run: Run, step: Step) -> Optional[str]:
    """Records a step that exited 0: None, or why its output is not usable."""
    workdir = os.path.join(self.root, run.name)
    progress = self.progress.setdefault(run.name, {'results': None, 'analyses': {}})
    if step is None:
      progress['results'] = read_results(workdir)
      return None if progress['results'] is not None else 'exited 0 without a results.json'
    partial = step.output(workdir) + PARTIAL
    try:
      values = analysis_values(partial, step)
    except StudyError as e:
      return str(e)
    _atomic_write(os.path.join(partial, ANALYSIS_RECORD), json.dumps(step.settings()) + '\n')
    os.replace(partial, step.output(workdir))
    progress['analyses'][step.name] = values
    if missing_values(self.study, step, values):
      return _missing_message(self.study, step, workdir, values)
    return None

  def _finish(self, active: _Active, returncode: int):
    run, step, seconds = active.run, active.step, time.monotonic() - active.started
    self._record_attempt(run, step, seconds, returncode)
    what = '' if step is None else f'{step.name} analysis: '
    problem = self._collect(run, step) if returncode == 0 else _exit_reason(returncode)
    if problem and self.signals:
      self._say(f'{run.name}: {what}{problem}')
    elif problem:
      tail = _log_tail(active.log_path, active.log_offset)
      self._fail(run, f'{what}{problem} (log: {active.log_path})', tail)
    elif not active.todo:
      self.outcomes[run.name] = {'status': DONE, **self.progress[run.name]}
      self._write_table()
      self._say(f'{run.name} done in {_duration(seconds)}')
    else:
      self._say(f'{run.name}: {what or "training "}done in {_duration(seconds)}')
      if not self.signals:
        self._start(run, active.todo)

  # -- the loop

  def _on_signal(self, signum, frame):  # pylint: disable=unused-argument
    self.signals.append(signum)

  def _steps_left(self, run: Run) -> List[Step]:
    """The run's unfinished steps; records what its finished ones produced."""
    workdir = os.path.join(self.root, run.name)
    results = read_results(workdir)
    analyses = {a.name: read_analysis(workdir, a) for a in self.study.analyses}
    self.progress[run.name] = {
        'results': results,
        'analyses': {name: values for name, values in analyses.items() if values is not None},
    }
    steps = [None] if results is None else []
    return steps + [a for a in self.study.analyses if analyses[a.name] is None]

  def run(self) -> int:
    """Runs every unfinished run; returns the exit status (see the module docstring)."""
    self.timing = self._read_timing()
    for run in self.study.runs:
      steps = self._steps_left(run)
      if steps:
        self.pending.append((run, steps))
      else:
        self.outcomes[run.name] = {'status': DONE, **self.progress[run.name]}
    self._write_table()
    self._say(
        f'{self.study.spec}: {len(self.study.runs)} runs under {self.root}, '
        f'{len(self.outcomes)} already finished, {self.workers} worker(s)'
    )
    handlers = {}
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGINT, signal.SIGTERM):
        handlers[signum] = signal.signal(signum, self._on_signal)
    try:
      self._loop()
    except BaseException:
      self._signal_all(signal.SIGTERM)  # an error of the sweep itself leaves no process behind
      for active in self.active:
        active.proc.wait()
      raise
    finally:
      for signum, handler in handlers.items():
        signal.signal(signum, handler)
    if self.signals:
      return 128 + self.signals[0]
    return EXIT_FAILED if self._count(FAILED) else 0

  def _loop(self):
    while self.pending or self.active:
      if self.signals and not self.terminated:
        self.terminated = True
        self.pending = []
        self._signal_all(signal.SIGTERM)
        self._say(f'{signal.Signals(self.signals[0]).name}: stopping the running trainings')
      if len(self.signals) > 1 and not self.killed:
        self.killed = True
        self._signal_all(signal.SIGKILL)
      while self.pending and len(self.active) < self.workers:
        self._start(*self.pending.pop(0))
      for active in list(self.active):
        returncode = active.proc.poll()
        if returncode is not None:
          self.active.remove(active)
          self._finish(active, returncode)
      if self.active:
        time.sleep(POLL_SECONDS)


# --------------------------------------------------------------------------------------- the CLI


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog='python -m dxnet_jax.sweep',
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument('study', help='study file, path.py[:arg]')
  parser.add_argument('--root', required=True, help='folder of the workdirs and the table')
  parser.add_argument('--workers', type=int, default=1, help='trainings at a time (default 1)')
  parser.add_argument(
      '--main-flag',
      dest='main_flags',
      action='append',
      default=[],
      metavar='FLAG',
      help='a flag for every run of dxnet_jax.main, e.g. --main-flag=--cpu_devices=2',
  )
  parser.add_argument(
      '--dry-run', action='store_true', help='check the study, print the runs, start nothing'
  )
  return parser.parse_args(argv)


def _check_main_flags(flags: Sequence[str]):
  for flag in flags:
    if not flag.startswith('-'):
      raise StudyError(f'--main-flag {flag!r} is not a flag; write --main-flag=--name=value.')
    name = flag.lstrip('-').split('=', 1)[0]
    if name == 'workdir' or name.startswith('config'):
      raise StudyError(
          f'--main-flag {flag!r}: the sweep sets --workdir and --config; put config changes '
          'into the study (overrides), where they are checked and recorded.'
      )


def _summary(study: Study, root: str):
  """The per-label statistics of the finished runs, as markdown on stdout."""
  from dxnet_jax.analysis import stats  # pylint: disable=g-import-not-at-top

  with open(os.path.join(root, 'results.json')) as f:
    rows = json.load(f)['rows']
  if any(row['status'] == DONE for row in rows):
    print(stats.markdown_summary(rows, study.columns, study.compare))


def _lock_root(root: str) -> int:
  """Holds --root for this sweep: a second sweep on it would race for the table."""
  os.makedirs(root, exist_ok=True)
  path = os.path.join(root, ROOT_LOCK)
  fd = _try_lock(path)
  if fd is None:
    raise StudyError(f'another sweep (process {_lock_holder(path)}) is running on {root}.')
  _write_pid(fd, os.getpid())
  return fd


def _print_commands(study: Study, sweep_runner: Sweep):
  for run in study.runs:
    workdir = os.path.join(sweep_runner.root, run.name)
    state = 'done' if read_results(workdir) else 'to run'
    print(f'{run.name} ({state}): {shlex.join(sweep_runner.command(run))}')
    for analysis in study.analyses:
      state = 'done' if read_analysis(workdir, analysis) is not None else 'to run'
      command = shlex.join(sweep_runner.command(run, analysis))
      print(f'{run.name} {analysis.name} ({state}): {command}')


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = _parse_args(argv)
  try:
    if args.workers < 1:
      raise StudyError(f'--workers must be at least 1, got {args.workers}.')
    _check_main_flags(args.main_flags)
    study = load_study(args.study)
    runner = Sweep(study, args.root, args.workers, args.main_flags)
    if args.dry_run:
      _print_commands(study, runner)
      return 0
    root_lock = _lock_root(args.root)
    try:
      check_workdirs(study, args.root)
      status = runner.run()
    finally:
      os.close(root_lock)
  except StudyError as e:
    print(f'sweep: error: {e}', file=sys.stderr)
    return EXIT_USAGE
  _summary(study, args.root)
  return status


if __name__ == '__main__':
  sys.exit(main())
