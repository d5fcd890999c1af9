"""Parameters against accuracy / PSNR, ours beside the paper's (paper Figs. 1, 6, 8).

The paper's argument is one of budgets: at a given number of parameters a DxNet is more accurate
than a DenseNet (or, equivalently, reaches the same accuracy with fewer parameters). These plots put
every measured model at (parameter count, metric), one panel per data set, with lines joining a
family (DxNet, DenseNet, ...) of one source, and the reported points of `paper_points` beside ours.

Results files: JSON (a list of records, or {"results": [...]}) or JSONL (one record per line). A
record is

    {"model": "DxNet k12 12-12-12", "params": 530000, "metric": "accuracy", "value": 93.1,
     "dataset": "cifar10", "source": "ours"}

with optional "family" (the line it joins; default: the model name) and free-form extras (e.g.
"note", "seed", "citation"). `metric` is 'accuracy' or 'error' (percent; drawn as accuracy,
100 - error) or 'psnr' (dB).
`params` may be null for a method without trained parameters (bicubic, BM3D): it is drawn as a
horizontal line. `value` may be null when it is not known: the point is marked on the parameter
axis only. `append_results` writes records in this schema.

Finished training runs can be read directly (`records_from_workdir`, `--workdir`).

CLI:

    python -m dxnet_jax.analysis.budget_plots --results ours.jsonl [--workdir RUN ...] --out DIR
        [--dataset cifar10]
"""

from __future__ import annotations

import argparse
import json
import math
import os
from typing import Iterable, Sequence

from dxnet_jax import _optional
from dxnet_jax.analysis import figures
from dxnet_jax.analysis import paper_points

METRICS = {'accuracy': 'accuracy (%)', 'error': 'error (%)', 'psnr': 'PSNR (dB)'}
REQUIRED = ('model', 'params', 'metric', 'value', 'dataset', 'source')

# Readable panel titles for the data-set keys used by the project and `paper_points`.
DATASET_TITLES = {
    'cifar10': 'CIFAR-10',
    'svhn': 'SVHN',
    'imagenet': 'ImageNet',
    'bsd68_sigma50': r'BSD68, $\sigma$=50',
    'set12_sigma50': r'Set12, $\sigma$=50',
    'set5_x4': 'Set5, x4',
    'set14_x4': 'Set14, x4',
    'bsd100_x4': 'BSD100, x4',
}


def validate(record: dict) -> dict:
  """Checks one record against the schema and returns it with `family` filled in."""
  missing = [k for k in REQUIRED if k not in record]
  if missing:
    raise ValueError(f'record {record!r} lacks {missing}')
  if record['metric'] not in METRICS:
    raise ValueError(f"unknown metric {record['metric']!r}; one of {sorted(METRICS)}")
  params, value = record['params'], record['value']
  if params is not None and (
      isinstance(params, bool) or not isinstance(params, (int, float)) or params <= 0
  ):
    raise ValueError(f'params must be a positive number or null: {record!r}')
  if value is not None and (
      isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
  ):
    raise ValueError(f'value must be a finite number or null: {record!r}')
  if params is None and value is None:
    raise ValueError(f'a record needs params or value: {record!r}')
  out = dict(record)
  out.setdefault('family', record['model'])
  return out


def load_results(paths: str | Sequence[str]) -> list[dict]:
  """Records from JSON / JSONL files (see the module docstring), validated."""
  if isinstance(paths, (str, os.PathLike)):
    paths = [paths]
  records = []
  for path in paths:
    with open(path) as f:
      text = f.read()
    if str(path).endswith('.jsonl'):
      rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
      data = json.loads(text)
      rows = data['results'] if isinstance(data, dict) else data
    records.extend(validate(r) for r in rows)
  return records


def append_results(path: str, records: Iterable[dict]) -> None:
  """Appends records (validated) to a JSONL results file."""
  rows = [validate(r) for r in records]
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'a') as f:
    for r in rows:
      f.write(json.dumps(r) + '\n')


def family_of(model: str) -> str:
  """'DxNet' / 'DenseNet' / 'DnCNN' from a registry name, else the name itself."""
  name = model.lower()
  for key, family in (('dxnet', 'DxNet'), ('densenet', 'DenseNet'), ('dncnn', 'DnCNN')):
    if name.startswith(key) or f'_{key}' in name:
      return family
  return model


def records_from_workdir(workdir: str) -> list[dict]:
  """Budget records of a finished training run, from its `results.json` and `config.json`.

  Classification: the best validation accuracy (a fraction in results.json, a percentage here)
  on `config.data.name`; note that it is the run's validation split (e.g. the CIFAR-10 holdout),
  not the test set the paper reports, which the record's `note` says. Restoration: the model's
  PSNR on each evaluation set (dataset key `<set>_sigma<s>` or `<set>_x<scale>`), plus the
  bicubic / noisy-input baselines the trainer scored beside it (params null).
  """
  with open(os.path.join(workdir, 'results.json')) as f:
    results = json.load(f)
  with open(os.path.join(workdir, 'config.json')) as f:
    config = json.load(f)
  model, task, params = results['model'], results['task'], results['parameters']
  base = dict(
      model=model,
      params=params,
      source='ours',
      family=family_of(model),
      workdir=os.path.basename(os.path.normpath(workdir)),
      steps=results.get('steps'),
  )
  if task == 'classification':
    best = results['best_validation']
    if best is None or best.get('metric') != 'accuracy':
      raise ValueError(f'{workdir}: no best validation accuracy in results.json')
    return [
        validate(
            {
                **base,
                'metric': 'accuracy',
                'value': 100.0 * best['value'],
                'dataset': config['data']['name'],
                'note': "best validation accuracy (the run's validation split)",
            }
        )
    ]
  data = config['data']
  if task == 'denoising':
    sigma = data.get('eval_sigma') or data.get('sigma')
    suffix = f'_sigma{float(sigma):g}'
  else:
    suffix = f"_x{int(data.get('scale') or 4)}"
  run_name = os.path.basename(os.path.normpath(workdir))
  records = []
  for row in results.get('evaluation', []):
    dataset = row['set'].lower() + suffix
    if row['method'] == run_name:
      records.append(validate({**base, 'metric': 'psnr', 'value': row['psnr'], 'dataset': dataset}))
    elif row['method'] in ('bicubic', 'noisy input (unclipped float)'):
      label = 'Bicubic' if row['method'] == 'bicubic' else 'Noisy input'
      records.append(
          validate(
              {
                  'model': label,
                  'params': None,
                  'metric': 'psnr',
                  'value': row['psnr'],
                  'dataset': dataset,
                  'source': 'ours',
                  'family': label,
              }
          )
      )
  if not records:
    raise ValueError(f'{workdir}: results.json has no evaluation rows of {run_name}')
  return records


def _as_accuracy(record: dict) -> dict:
  """Error rates become accuracies (100 - error) so that both share one panel."""
  if record['metric'] != 'error':
    return record
  value = None if record['value'] is None else 100.0 - record['value']
  return {**record, 'metric': 'accuracy', 'value': value}


def _groups(records):
  """{(dataset, metric): [records]} in first-seen order, errors folded into accuracies."""
  out: dict[tuple[str, str], list[dict]] = {}
  for r in map(_as_accuracy, records):
    out.setdefault((r['dataset'], r['metric']), []).append(r)
  return out


def family_colors(records: Iterable[dict]) -> dict[str, str]:
  """One colour per family, the same in every panel of a figure."""
  families = sorted({r.get('family', r['model']) for r in records})
  return {fam: f'C{i % 10}' for i, fam in enumerate(families)}


def plot_panel(
    ax, records: Sequence[dict], *, title: str | None = None, colors: dict[str, str] | None = None
) -> None:
  """One (data set, metric) panel: parameters (millions) against the metric.

  Ours: filled markers joined per family; paper: hollow markers, dashed; methods without
  parameters: horizontal lines; points of unknown value: 'x' ticks on the parameter axis.
  """
  metric = records[0]['metric']
  color = colors or family_colors(records)
  lines: dict[tuple[str, str], list[dict]] = {}
  for r in records:
    lines.setdefault((r['family'], r['source']), []).append(r)
  for (fam, src), rows in lines.items():
    is_paper = src == paper_points.PAPER
    drawn = sorted(
        (r for r in rows if r['params'] is not None and r['value'] is not None),
        key=lambda r: r['params'],
    )
    if drawn:
      xs = [r['params'] / 1e6 for r in drawn]
      ys = [r['value'] for r in drawn]
      ax.plot(
          xs,
          ys,
          '--' if is_paper else '-',
          marker='o',
          color=color[fam],
          markerfacecolor='white' if is_paper else color[fam],
          ms=6,
          label=f'{fam} ({src})',
      )
      for r, x, y in zip(drawn, xs, ys):
        if r['model'] != fam:
          ax.annotate(r['model'], (x, y), fontsize=6, xytext=(3, 3), textcoords='offset points')
    for r in rows:
      if r['params'] is None:
        ax.axhline(
            r['value'],
            color=color[fam],
            ls=':' if is_paper else '-.',
            lw=1.2,
            label=f"{r['model']} ({src}): {r['value']:g}",
        )
    unknown = [r for r in rows if r['value'] is None]
    if unknown:
      ax.plot(
          [r['params'] / 1e6 for r in unknown],
          [0.0] * len(unknown),
          'x',
          color=color[fam],
          ms=8,
          mew=2,
          clip_on=False,
          transform=ax.get_xaxis_transform(),
          label=f'{fam} ({src}): size only, {metric} not sourced',
      )
  ax.set_xlabel('parameters (millions)')
  ax.set_ylabel(METRICS[metric])
  ax.set_title(title or records[0]['dataset'])
  ax.grid(alpha=0.3)
  ax.legend(fontsize=6, loc='best')


def budget_figure(
    records: Sequence[dict], *, include_paper: bool = True, datasets: Sequence[str] | None = None
):
  """A matplotlib figure with one panel per (data set, metric) of `records`, plus the paper's
  points of those data sets when `include_paper`. `datasets` restricts (or, with no records of
  ours, chooses) the data sets."""
  records = [validate(r) for r in records]
  if datasets is not None:
    records = [r for r in records if r['dataset'] in datasets]
  if include_paper:
    ours = {r['dataset'] for r in records}
    wanted = set(datasets) if datasets is not None else ours
    records = records + [validate(p) for p in paper_points.POINTS if p['dataset'] in wanted]
  groups = _groups(records)
  if not groups:
    raise ValueError('nothing to plot: no records for the chosen data sets')
  colors = family_colors(records)
  plt = figures.pyplot()
  n = len(groups)
  cols = min(n, 3)
  rows = math.ceil(n / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 4 * rows), squeeze=False)
  for ax, ((dataset, _), recs) in zip(axes.flat, groups.items()):
    plot_panel(ax, recs, title=DATASET_TITLES.get(dataset, dataset), colors=colors)
  for ax in list(axes.flat)[n:]:
    ax.axis('off')
  fig.tight_layout()
  return fig


def plot_budget(
    records: Sequence[dict],
    path: str,
    *,
    include_paper: bool = True,
    datasets: Sequence[str] | None = None,
    dpi: int = 100,
) -> str:
  """`budget_figure` written to a PNG; returns its path."""
  fig = budget_figure(records, include_paper=include_paper, datasets=datasets)
  return figures.save(fig, path, dpi)


def main(argv: Sequence[str] | None = None) -> str:
  parser = argparse.ArgumentParser(
      prog='python -m dxnet_jax.analysis.budget_plots',
      description="Parameters against accuracy / PSNR, ours beside the paper's points.",
  )
  parser.add_argument(
      '--results', action='append', default=[], help='JSON or JSONL results file; repeatable'
  )
  parser.add_argument(
      '--workdir',
      action='append',
      default=[],
      help='a finished training workdir (results.json); repeatable',
  )
  parser.add_argument('--out', required=True, help='output folder (or a .png path)')
  parser.add_argument(
      '--dataset',
      action='append',
      default=None,
      help='only these data sets (repeatable); default: those in the results',
  )
  parser.add_argument('--no-paper', action='store_true', help="leave out the paper's points")
  args = parser.parse_args(argv)
  if not args.results and not args.workdir and not args.dataset:
    parser.error("give --results or --workdir, or --dataset to plot the paper's points alone")
  _optional.require('matplotlib', 'plots', 'python -m dxnet_jax.analysis.budget_plots').use('Agg')
  records = load_results(args.results) if args.results else []
  for workdir in args.workdir:
    records += records_from_workdir(workdir)
  out = args.out if args.out.endswith('.png') else os.path.join(args.out, 'budget.png')
  path = plot_budget(records, out, include_paper=not args.no_paper, datasets=args.dataset)
  print(f'wrote {path}')
  return path


if __name__ == '__main__':
  main()
