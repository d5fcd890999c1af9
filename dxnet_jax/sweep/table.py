"""The results table of a study's root: what finished runs left in their workdirs, as rows.

  results.csv / results.json  one row per finished run in grid order (label, seed, status and
                              the metric columns; the JSON rows add workdir, config, overrides
                              and, for failed runs, the error)
  timing.json                 wall time, attempts and last exit status per run and analysis

Each file is replaced atomically; the table does not depend on interruptions or on where or in
what order the runs ran.
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any, Dict, List, Optional

from dxnet_jax.sweep.study import Analysis, RESULT_METRICS, Study, StudyError, set_name

TABLE_KEYS = ('label', 'seed', 'status')
DONE, FAILED = 'done', 'failed'
ANALYSIS_RECORD = 'sweep-analysis.json'


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
    if row.get('method') == run_name and set_name(row.get('set', '')) == eval_set:
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


def missing_values(columns: List[str], analysis: Analysis, values: Dict[str, Any]) -> List[str]:
  """The `columns` of `analysis` whose keys `values` lacks."""
  return [
      column
      for column in columns
      if column.partition('/')[0] == analysis.name and column.partition('/')[2] not in values
  ]


def missing_message(columns: List[str], analysis: Analysis, workdir: str, values: Dict[str, Any]):
  path = os.path.join(analysis.output(workdir), analysis.results)
  return (
      f'study.metrics asks for {missing_values(columns, analysis, values)}, which {path} lacks '
      f'(it has {sorted(values)}): fix study.metrics.'
  )


def atomic_write(path: str, text: str):
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
  atomic_write(os.path.join(root, 'results.json'), json.dumps(payload, indent=1) + '\n')
  text = io.StringIO()
  writer = csv.writer(text, lineterminator='\n')
  writer.writerow(payload['columns'])
  for row in rows:
    cells = [row[k] for k in TABLE_KEYS] + [row['metrics'][c] for c in study.columns]
    writer.writerow(['' if cell is None else cell for cell in cells])
  atomic_write(os.path.join(root, 'results.csv'), text.getvalue())


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
  """Existing workdirs must hold this study's config and reusable analyses."""
  problems = []
  for run in study.runs:
    workdir = os.path.join(root, run.name)
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
    if values is not None and missing_values(study.columns, analysis, values):
      problems.append(missing_message(study.columns, analysis, workdir, values))
  return problems


def read_timing(root: str) -> Dict[str, Dict[str, Any]]:
  """timing.json's runs, or {} before the first attempt."""
  timing = _read_json(os.path.join(root, 'timing.json'))
  return timing['runs'] if isinstance(timing, dict) and 'runs' in timing else {}


def record_attempt(timing: Dict[str, Any], run: str, step: Optional[str], seconds, exit_code):
  """Adds an attempt of a run's training (`step` None) or of its analysis `step` to `timing`."""
  entry = timing.setdefault(run, {})
  entry = entry if step is None else entry.setdefault(step, {})
  entry['attempts'] = entry.get('attempts', 0) + 1
  entry['wall_s'] = round(entry.get('wall_s', 0.0) + seconds, 3)
  entry['last_exit'] = exit_code


def write_timing(root: str, timing: Dict[str, Any]):
  atomic_write(os.path.join(root, 'timing.json'), json.dumps({'runs': timing}, indent=1) + '\n')
