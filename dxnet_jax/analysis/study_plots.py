"""Figures of a sweep's results table (`dxnet_jax.sweep`): every seed, and the mean ± std of each
label over its seeds.

Kinds, one per study of configs/studies/:

  params     PSNR against parameter count, one panel per eval set (paper Fig. 8;
             denoise_params.py). A marker per model with the std over seeds as error bar, the
             seeds as faint points, the models of a family (the label's prefix: dxnet_444 ->
             dxnet) joined by a line. Needs the columns 'parameters' and 'psnr/SET'.
  designs    PSNR against depth, one panel per eval set, one line per design (paper Fig. 4;
             xunit_designs.py). Labels are DESIGN_DEPTH (relu_3, dxnet_5, gaussian_7). Needs
             'psnr/SET'.
  sharpness  The Hutchinson trace Tr(H) and the mean Hessian eigenvalue Tr(H) / n per model, and
             the loss increase under random weight perturbation against its sigma (mean ± std
             over seeds) read from each run's WORKDIR/sharpness/sharpness.json (paper Figs. 9-10;
             sharpness.py). Needs 'sharpness/trace_hutchinson' or
             'sharpness/mean_eigenvalue_hutchinson'.

Only rows with status 'done' are drawn.

CLI: `python -m dxnet_jax.analysis.study_plots ROOT/results.json --kind KIND --out FILE.png`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from dxnet_jax import _optional
from dxnet_jax.analysis import figures
from dxnet_jax.analysis import stats

KINDS = ('params', 'designs', 'sharpness')
STUDIES = {
    'params': 'configs/studies/denoise_params.py',
    'designs': 'configs/studies/xunit_designs.py',
    'sharpness': 'configs/studies/sharpness.py',
}
FAMILY_NAMES = {
    'dxnet': 'DxNet',
    'densenet': 'DenseNet',
    'dncnn': 'DnCNN',
    'relu': 'Conv+BN+ReLU',
    'gaussian': 'Gaussian xUnit (2018)',
}
FAMILY_COLORS = {'dxnet': 'C3', 'densenet': 'C0', 'dncnn': 'C1', 'relu': 'C7', 'gaussian': 'C2'}
FAMILY_COLORMAPS = {'dxnet': 'Reds', 'densenet': 'Blues', 'relu': 'Greys', 'gaussian': 'Greens'}
SHARPNESS_VALUES = {
    'sharpness/trace_hutchinson': 'Tr(H), Hutchinson',
    'sharpness/mean_eigenvalue_hutchinson': r'mean eigenvalue $\bar\lambda$ = Tr(H) / n',
}
SHARPNESS_FILE = os.path.join('sharpness', 'sharpness.json')
DESIGN_LABEL = re.compile(r'(?P<design>.+)_(?P<depth>\d+)\Z')
SEED_ALPHA = 0.35
SEED_SPREAD = 0.02  # of a model's parameter count, or of the step between depths


class TableError(ValueError):
  """A table that lacks what a figure needs; the message names the fix."""


@dataclasses.dataclass
class Table:
  """A sweep's results.json: its columns and rows; run workdirs are relative to `root`."""

  path: str
  columns: List[str]
  rows: List[Dict[str, Any]]

  @property
  def root(self) -> str:
    return os.path.dirname(os.path.abspath(self.path))

  def labels(self) -> List[str]:
    """Labels with a finished run, in grid order."""
    return stats.labels_of(row for row in self.rows if row['status'] == 'done')


def load_table(path: str) -> Table:
  """Reads a sweep's results.json."""
  with open(path) as f:
    try:
      payload = json.load(f)
    except ValueError as e:
      raise TableError(f'{path} is not JSON ({e}).') from None
  if not isinstance(payload, dict) or not {'columns', 'rows'} <= set(payload):
    raise TableError(f'{path} is not a sweep results table (no columns and rows).')
  return Table(path, list(payload['columns']), list(payload['rows']))


def _require(table: Table, kind: str, columns: Sequence[str]):
  missing = [c for c in columns if c not in table.columns]
  if missing:
    raise TableError(
        f'{table.path} has no column {missing}, which the {kind} figure needs: add it to the '
        f'metrics of the study ({STUDIES[kind]}) and rerun the sweep on the same --root (its '
        'finished runs are reused).'
    )


def _psnr_columns(table: Table, kind: str) -> List[str]:
  columns = [c for c in table.columns if c.startswith('psnr/')]
  if not columns:
    _require(table, kind, ['psnr/SET'])
  return columns


def _check_done(table: Table):
  if not table.labels():
    raise TableError(f'{table.path} has no finished run to draw.')


def family(label: str) -> str:
  """The family of a label: its prefix (dxnet_444 -> dxnet, gaussian_7 -> gaussian)."""
  return label.split('_')[0]


def _family_name(name: str) -> str:
  return FAMILY_NAMES.get(name, name)


def _family_colors(families: Sequence[str]) -> Dict[str, str]:
  spare = iter(f'C{i}' for i in range(10) if f'C{i}' not in FAMILY_COLORS.values())
  return {f: FAMILY_COLORS.get(f) or next(spare, 'k') for f in dict.fromkeys(families)}


def label_colors(labels: Sequence[str]) -> Dict[str, Any]:
  """A colour per label: shades of its family's colour map, darker for later labels."""
  plt = figures.pyplot()
  by_family: Dict[str, List[str]] = {}
  for label in labels:
    by_family.setdefault(family(label), []).append(label)
  colors, others = {}, iter(plt.get_cmap('tab10').colors)
  for name, members in by_family.items():
    if name in FAMILY_COLORMAPS:
      shades = plt.get_cmap(FAMILY_COLORMAPS[name])(np.linspace(0.55, 0.95, len(members)))
    else:
      shades = [next(others)] * len(members)
    colors.update(zip(members, shades))
  return colors


def _seed_values(table: Table, label: str, metric: str) -> Dict[int, float]:
  return stats.values_by_seed(table.rows, label, metric)


def _mean_std(values: Sequence[float]) -> Tuple[float, float]:
  """Mean and std over seeds; the std of a single seed is drawn as 0."""
  mean, std, _ = stats.mean_std(list(values))
  return mean, 0.0 if math.isnan(std) else std


def _seeds(ax, x: float, ys: Sequence[float], spread: float, color, label: str):
  """A label's seeds, faint, spread over x +- `spread` so that its error bar hides none; `gid`
  'seeds:LABEL' names them for readers of the figure."""
  xs = x + np.linspace(-spread, spread, len(ys)) if len(ys) > 1 else [x]
  ax.scatter(xs, ys, s=14, color=color, alpha=SEED_ALPHA, lw=0, gid=f'seeds:{label}', zorder=2)


def _panels(count: int, width: float = 5.0, height: float = 4.0):
  plt = figures.pyplot()
  fig, axes = plt.subplots(1, count, figsize=(width * count, height), squeeze=False)
  return fig, list(axes.flat)


def _set_title(column: str) -> str:
  return column.partition('/')[2]


def _psnr_axes(ax, column: str, xlabel: str):
  """Title (the eval set of `column`), axis labels, grid and legend of a PSNR panel."""
  ax.set_title(_set_title(column))
  ax.set_xlabel(xlabel)
  ax.set_ylabel('PSNR (dB)')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)


# ------------------------------------------------------------------------------------- params


def params_figure(table: Table):
  """PSNR against parameters, one panel per eval set, a line per family (paper Fig. 8)."""
  _require(table, 'params', ['parameters'])
  columns = _psnr_columns(table, 'params')
  _check_done(table)
  labels = table.labels()
  colors = _family_colors([family(label) for label in labels])
  fig, axes = _panels(len(columns))
  for ax, column in zip(axes, columns):
    for name, color in colors.items():
      points = []
      for label in (label for label in labels if family(label) == name):
        params = _seed_values(table, label, 'parameters')
        psnr = _seed_values(table, label, column)
        seeds = sorted(set(params) & set(psnr))
        if not seeds:
          continue
        x = float(np.mean([params[s] for s in seeds])) / 1e3
        ys = [psnr[s] for s in seeds]
        _seeds(ax, x, ys, SEED_SPREAD * x, color, label)
        points.append((x, *_mean_std(ys), label))
      if not points:
        continue
      points.sort()
      x, y, err, model_labels = zip(*points)
      ax.errorbar(x, y, yerr=err, fmt='-o', ms=6, capsize=3, color=color, label=_family_name(name))
      for xi, yi, label in zip(x, y, model_labels):
        text = label[len(name) + 1 :] or label
        ax.annotate(text, (xi, yi), fontsize=7, xytext=(4, -10), textcoords='offset points')
    _psnr_axes(ax, column, 'parameters (thousands)')
  fig.tight_layout()
  return fig


# ------------------------------------------------------------------------------------ designs


def _designs(labels: Sequence[str]) -> Dict[str, List[Tuple[int, str]]]:
  """{design: [(depth, label)]} in first-seen order."""
  designs: Dict[str, List[Tuple[int, str]]] = {}
  for label in labels:
    match = DESIGN_LABEL.match(label)
    if not match:
      raise TableError(
          f"label {label!r} is not DESIGN_DEPTH (e.g. 'relu_3', 'dxnet_5'): the designs figure "
          'reads the depth from the label.'
      )
    designs.setdefault(match['design'], []).append((int(match['depth']), label))
  return designs


def designs_figure(table: Table):
  """PSNR against depth, one panel per eval set, one line per design (paper Fig. 4)."""
  columns = _psnr_columns(table, 'designs')
  _check_done(table)
  designs = _designs(table.labels())
  colors = _family_colors(list(designs))
  depths = sorted({depth for members in designs.values() for depth, _ in members})
  # Side by side at each depth, so that error bars and seeds do not hide one another.
  step = min(np.diff(depths)) if len(depths) > 1 else 1.0
  offsets = np.linspace(-0.1, 0.1, len(designs)) * step if len(designs) > 1 else [0.0]
  fig, axes = _panels(len(columns))
  for ax, column in zip(axes, columns):
    for (design, members), offset in zip(designs.items(), offsets):
      points = []
      for depth, label in sorted(members):
        psnr = list(_seed_values(table, label, column).values())
        if psnr:
          _seeds(ax, depth + offset, psnr, SEED_SPREAD * step, colors[design], label)
          points.append((depth + offset, *_mean_std(psnr)))
      if points:
        x, y, err = zip(*points)
        ax.errorbar(
            x,
            y,
            yerr=err,
            fmt='-o',
            ms=5,
            capsize=3,
            color=colors[design],
            label=design_name(design),
        )
    ax.set_xticks(depths)
    _psnr_axes(ax, column, 'depth (convolution layers)')
  fig.tight_layout()
  return fig


def design_name(design: str) -> str:
  return 'Conv+xUnit (DxNet)' if design == 'dxnet' else _family_name(design)


# ---------------------------------------------------------------------------------- sharpness


def sharpness_curves(table: Table, label: str) -> Tuple[np.ndarray, np.ndarray]:
  """(sigmas, increases[seed, sigma]) of a label's finished runs: the mean loss under
  perturbation minus the unperturbed loss, from each run's sharpness.json."""
  sigmas, increases = None, []
  for row in table.rows:
    if row['label'] != label or row['status'] != 'done':
      continue
    path = os.path.join(table.root, row['workdir'], SHARPNESS_FILE)
    try:
      with open(path) as f:
        measured = json.load(f)
    except (OSError, ValueError) as e:
      raise TableError(
          f"{path} is missing or unreadable ({e}): the sharpness figure reads each run's "
          f'measurement; run {STUDIES["sharpness"]} with the sweep on this --root.'
      ) from None
    measured = measured[0] if isinstance(measured, list) and len(measured) == 1 else measured
    run_sigmas = np.asarray(measured['sigmas'], np.float64)
    if sigmas is not None and (
        run_sigmas.shape != sigmas.shape or not np.allclose(run_sigmas, sigmas)
    ):
      raise TableError(
          f'{path} was measured at other sigmas than the other seeds of {label!r}: measure every '
          'run with one sigma grid.'
      )
    sigmas = run_sigmas
    increases.append(np.asarray(measured['mean_loss'], np.float64) - measured['base_loss'])
  return sigmas, np.stack(increases)


def sharpness_figure(table: Table):
  """Tr(H) and the mean eigenvalue per model (seeds and mean ± std), and the loss increase
  under weight perturbation against sigma (paper Figs. 9-10)."""
  values = [c for c in SHARPNESS_VALUES if c in table.columns]
  if not values:
    _require(table, 'sharpness', list(SHARPNESS_VALUES)[:1])
  _check_done(table)
  labels = table.labels()
  colors = label_colors(labels)
  fig, axes = _panels(len(values) + 1, width=4.5)
  for ax, column in zip(axes, values):
    for x, label in enumerate(labels):
      seeds = list(_seed_values(table, label, column).values())
      if not seeds:
        continue
      _seeds(ax, x, seeds, 0.15, colors[label], label)
      mean, std = _mean_std(seeds)
      ax.errorbar([x], [mean], yerr=[std], fmt='D', ms=6, capsize=4, color=colors[label])
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha='right')
    ax.set_xlim(-0.5, len(labels) - 0.5)
    ax.set_title(SHARPNESS_VALUES[column])
    ax.grid(alpha=0.3, axis='y')
  ax = axes[-1]
  for label in labels:
    sigmas, increases = sharpness_curves(table, label)
    mean, std = increases.mean(axis=0), increases.std(axis=0, ddof=1) if len(increases) > 1 else 0
    ax.plot(sigmas, mean, '-o', ms=3, color=colors[label], label=f'{label} ({len(increases)})')
    ax.fill_between(sigmas, mean - std, mean + std, color=colors[label], alpha=0.2, lw=0)
  ax.set_title('loss under random weight perturbation')
  ax.set_xlabel(r'perturbation $\sigma$ of every convolution kernel')
  ax.set_ylabel('loss increase (mean ± std over seeds)')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, title='model (seeds)', title_fontsize=7)
  fig.tight_layout()
  return fig


# ----------------------------------------------------------------------------------- the CLI

FIGURES = {'params': params_figure, 'designs': designs_figure, 'sharpness': sharpness_figure}


def study_figure(table: Table, kind: str):
  """The figure of `kind` (one of KINDS) for a table."""
  if kind not in FIGURES:
    raise ValueError(f'unknown kind {kind!r}; one of {KINDS}')
  return FIGURES[kind](table)


def plot_study(table: Table, kind: str, path: str, *, dpi: int = 120) -> str:
  """`study_figure` written to a PNG; returns its path."""
  fig = study_figure(table, kind)
  return figures.save(fig, path, dpi)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m dxnet_jax.analysis.study_plots',
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument('results', help="a sweep's ROOT/results.json")
  parser.add_argument('--kind', required=True, choices=KINDS)
  parser.add_argument('--out', required=True, help='the PNG to write')
  parser.add_argument('--dpi', type=int, default=120)
  args = parser.parse_args(argv)
  if not args.out.endswith('.png'):
    parser.error(f'--out {args.out!r}: give a .png path')
  _optional.require('matplotlib', 'plots', 'python -m dxnet_jax.analysis.study_plots').use('Agg')
  try:
    path = plot_study(load_table(args.results), args.kind, args.out, dpi=args.dpi)
  except (OSError, TableError) as e:
    parser.error(str(e))
  print(f'wrote {path}')
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
