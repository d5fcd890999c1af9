"""Seed statistics of a sweep's results table (`dxnet_jax.sweep`), as markdown.

Rows are the table's rows: dicts with `label`, `seed`, `status` and `metrics` ({column: value});
only rows with status 'done' and a value for the metric count.

- `group_stats`: per label, the mean, standard deviation (ddof=1) and count over seeds.
- `paired_difference`: label B minus label A seed by seed (same seeds only), with the mean, std
  and count of the differences and a verdict. The rule: the difference is 'within noise' when
  |mean| < 2 * std / sqrt(n) (two standard errors of the paired mean) or when every difference
  is zero; otherwise B is 'higher' or 'lower'. With fewer than two shared seeds there is no std
  and the verdict is 'too few seeds'.
- `markdown_summary`: both as markdown tables; `print_summary` prints them.
- `timing_summary`: the wall time of the trainings and of each analysis, from the sweep's
  timing.json beside the table.

CLI: `python -m dxnet_jax.analysis.stats ROOT/results.json [--metric M ...] [--compare A B ...]
[--timing]`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

TOO_FEW = 'too few seeds'
WITHIN_NOISE = 'within noise'


def load_rows(path: str) -> List[Dict[str, Any]]:
  """The rows of a sweep's results.json."""
  with open(path) as f:
    return json.load(f)['rows']


def labels_of(rows: Iterable[Dict[str, Any]]) -> List[str]:
  """Labels in order of first appearance (the study's grid order)."""
  return list(dict.fromkeys(row['label'] for row in rows))


def values_by_seed(rows: Iterable[Dict[str, Any]], label: str, metric: str) -> Dict[int, float]:
  """{seed: value} of the finished runs of `label` that report `metric`."""
  return {
      row['seed']: float(row['metrics'][metric])
      for row in rows
      if row['label'] == label
      and row['status'] == 'done'
      and row['metrics'].get(metric) is not None
  }


def mean_std(values: Sequence[float]) -> Tuple[float, float, int]:
  """(mean, sample std with ddof=1 (nan for fewer than 2 values), n)."""
  n = len(values)
  if not n:
    return math.nan, math.nan, 0
  mean = math.fsum(values) / n
  if n < 2:
    return mean, math.nan, n
  return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)), n


def group_stats(rows: Sequence[Dict[str, Any]], metrics: Sequence[str]) -> List[Dict[str, Any]]:
  """[{label, metric, mean, std, n}] for every label (grid order) and metric."""
  out = []
  for label in labels_of(rows):
    for metric in metrics:
      mean, std, n = mean_std(list(values_by_seed(rows, label, metric).values()))
      out.append({'label': label, 'metric': metric, 'mean': mean, 'std': std, 'n': n})
  return out


def paired_difference(
    rows: Sequence[Dict[str, Any]], metric: str, label_a: str, label_b: str
) -> Dict[str, Any]:
  """`label_b - label_a` over the seeds both finished, with its mean, std, n and verdict."""
  a = values_by_seed(rows, label_a, metric)
  b = values_by_seed(rows, label_b, metric)
  seeds = sorted(set(a) & set(b))
  diffs = [b[s] - a[s] for s in seeds]
  mean, std, n = mean_std(diffs)
  return {
      'metric': metric,
      'a': label_a,
      'b': label_b,
      'seeds': seeds,
      'mean': mean,
      'std': std,
      'n': n,
      'verdict': verdict(diffs, label_b),
  }


def verdict(diffs: Sequence[float], label_b: str = 'B') -> str:
  """The plain reading of paired differences (rule in the module docstring)."""
  mean, std, n = mean_std(diffs)
  if n < 2:
    return TOO_FEW
  if all(d == 0 for d in diffs) or abs(mean) < 2 * std / math.sqrt(n):
    return WITHIN_NOISE
  return f'{label_b} higher' if mean > 0 else f'{label_b} lower'


def format_number(x: Optional[float]) -> str:
  """4 significant digits; large integral values (parameter counts) in full."""
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return '-'
  if float(x).is_integer() and abs(x) >= 1000:
    return f'{x:,.0f}'
  return f'{x:.4g}'


def decimals_for(std: Optional[float]) -> Optional[int]:
  """Decimals that show `std` to two significant digits; None when it has none (0, nan)."""
  if std is None or not math.isfinite(std) or std == 0:
    return None
  return max(0, 1 - math.floor(math.log10(abs(std))))


def format_mean_std(mean: float, std: float) -> str:
  """`mean ± std`, both to the decimals of std's second significant digit."""
  places = decimals_for(std)
  if places is None:
    return f'{format_number(mean)} ± {format_number(std) if math.isnan(std) else 0}'
  return f'{mean:,.{places}f} ± {std:.{places}f}'


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
  """A GitHub-flavoured markdown table."""
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join('---' for _ in header) + '|']
  lines += ['| ' + ' | '.join(str(cell) for cell in row) + ' |' for row in body]
  return '\n'.join(lines)


def summary_table(rows: Sequence[Dict[str, Any]], metrics: Sequence[str]) -> str:
  """One line per label: `mean ± std (n)` per metric."""
  stats = {(s['label'], s['metric']): s for s in group_stats(rows, metrics)}
  body = []
  for label in labels_of(rows):
    cells = [label]
    for metric in metrics:
      s = stats[label, metric]
      cells.append(f"{format_mean_std(s['mean'], s['std'])} ({s['n']})")
    body.append(cells)
  return markdown_table(['label', *(f'{m}: mean ± std (n)' for m in metrics)], body)


def differences_table(
    rows: Sequence[Dict[str, Any]], metrics: Sequence[str], pairs: Sequence[Tuple[str, str]]
) -> str:
  """One line per (pair, metric): the paired difference B - A and its verdict."""
  body = []
  for label_a, label_b in pairs:
    for metric in metrics:
      d = paired_difference(rows, metric, label_a, label_b)
      places = decimals_for(d['std'])
      body.append(
          [
              f'{label_b} - {label_a}',
              metric,
              format_number(d['mean']) if places is None else f"{d['mean']:+.{places}f}",
              format_number(d['std']) if places is None else f"{d['std']:.{places}f}",
              str(d['n']),
              d['verdict'],
          ]
      )
  return markdown_table(['B - A', 'metric', 'mean', 'std', 'n', 'verdict'], body)


def markdown_summary(
    rows: Sequence[Dict[str, Any]],
    metrics: Sequence[str],
    pairs: Sequence[Tuple[str, str]] = (),
) -> str:
  """The per-label table and, when `pairs` are given, the paired differences."""
  text = summary_table(rows, metrics)
  if pairs:
    rule = 'within noise: |mean| < 2 std / sqrt(n) of the paired differences'
    text += f'\n\nPaired differences over shared seeds ({rule}):\n\n'
    text += differences_table(rows, metrics, pairs)
  return text


def print_summary(
    rows: Sequence[Dict[str, Any]],
    metrics: Sequence[str],
    pairs: Sequence[Tuple[str, str]] = (),
) -> None:
  print(markdown_summary(rows, metrics, pairs))


def _minutes(seconds: float) -> str:
  minutes = round(seconds / 60)
  return f'{minutes // 60} h {minutes % 60:02d} min' if minutes >= 60 else f'{minutes} min'


def timing_summary(path: str) -> str:
  """A markdown list, an item per step (the training, then each analysis) of a sweep's
  timing.json: the number of runs, their wall time in all and per run, and the attempts."""
  with open(path) as f:
    runs = json.load(f)['runs']
  steps: Dict[str, List[Dict[str, Any]]] = {}
  for entry in runs.values():
    if 'wall_s' in entry:
      steps.setdefault('training', []).append(entry)
    for name, value in entry.items():
      if isinstance(value, dict) and 'wall_s' in value:
        steps.setdefault(name, []).append(value)
  lines = []
  for name, entries in steps.items():
    total = math.fsum(e['wall_s'] for e in entries)
    attempts = sum(e.get('attempts', 1) for e in entries)
    lines.append(
        f'- {name}: {len(entries)} runs, {_minutes(total)} in all, '
        f'{total / len(entries) / 60:.1f} min per run ({attempts} attempts)'
    )
  return '\n'.join(lines)


def _metric_columns(rows: Sequence[Dict[str, Any]]) -> List[str]:
  return list(dict.fromkeys(k for row in rows for k in row['metrics']))


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m dxnet_jax.analysis.stats',
      description='Seed statistics of a sweep results table (dxnet_jax.sweep) as markdown.',
  )
  parser.add_argument('results', help="a sweep's results.json")
  parser.add_argument('--metric', action='append', help='a column (default: all of them)')
  parser.add_argument(
      '--compare',
      nargs=2,
      action='append',
      default=[],
      metavar=('A', 'B'),
      help='print the paired difference B - A (repeatable)',
  )
  parser.add_argument(
      '--timing', action='store_true', help="add the wall times from the table's timing.json"
  )
  args = parser.parse_args(argv)
  rows = load_rows(args.results)
  metrics = args.metric or _metric_columns(rows)
  unknown = sorted(set(metrics) - set(_metric_columns(rows)))
  if unknown:
    parser.error(f'--metric names columns not in the table: {unknown}')
  labels = set(labels_of(rows))
  unknown = sorted({label for pair in args.compare for label in pair} - labels)
  if unknown:
    parser.error(f'--compare names labels not in the table: {unknown}; labels: {sorted(labels)}')
  print_summary(rows, metrics, [tuple(pair) for pair in args.compare])
  if args.timing:
    timing = os.path.join(os.path.dirname(args.results), 'timing.json')
    if not os.path.exists(timing):
      parser.error(f'--timing reads {timing}, which is missing: copy it beside the table.')
    print('\nWall time (timing.json):\n')
    print(timing_summary(timing))
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
