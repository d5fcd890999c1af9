"""Figures of sweep tables (dxnet_jax.analysis.study_plots) from synthetic results.json files.

The checks read the matplotlib objects: panel titles, one error-bar series per family or design
(x, mean and std over seeds), the seeds' points (named by their gid), the sharpness curves and
legends; and the errors for tables that lack what a figure needs.
"""

import json

import matplotlib
import numpy as np
import pytest

from dxnet_jax.analysis import study_plots

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position

SEEDS = (0, 1, 2)
PARAMS = {
    'dxnet_444': 140_000,
    'dxnet_666': 227_000,
    'densenet_444': 111_000,
    'densenet_555': 147_000,
    'densenet_666': 188_000,
}


def psnr_of(label: str, seed: int, eval_set: str) -> float:
  """A distinct, known PSNR per run."""
  return 25.0 + len(label) / 10 + seed / 7 + (eval_set == 'Set12')


def write_table(path, rows, columns):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({'study': 'x.py', 'columns': columns, 'rows': rows}))
  return path


def row(label, seed, metrics, status='done'):
  return {
      'label': label,
      'seed': seed,
      'status': status,
      'metrics': metrics,
      'workdir': f'{label}-seed{seed}',
  }


def params_rows():
  rows = []
  for label, params in PARAMS.items():
    for seed in SEEDS:
      metrics = {f'psnr/{s}': psnr_of(label, seed, s) for s in ('BSD68', 'Set12')}
      rows.append(row(label, seed, {**metrics, 'parameters': params}))
  rows[-1] = row('densenet_666', 2, {'psnr/BSD68': None, 'psnr/Set12': None}, status='failed')
  return rows


PARAMS_COLUMNS = ['label', 'seed', 'status', 'psnr/BSD68', 'psnr/Set12', 'parameters']


@pytest.fixture(autouse=True)
def close_figures():
  yield
  plt.close('all')


def series(ax):
  """{legend label: (x, y, yerr)} of the panel's error-bar series."""
  out = {}
  for container in ax.containers:
    line, _, (bars,) = container.lines
    segments = np.asarray(bars.get_segments())
    out[container.get_label()] = (
        np.asarray(line.get_xdata(), float),
        np.asarray(line.get_ydata(), float),
        (segments[:, 1, 1] - segments[:, 0, 1]) / 2,
    )
  return out


def seed_points(ax):
  """{label: [(x, y)] of its seeds}."""
  return {
      c.get_gid().split(':', 1)[1]: np.asarray(c.get_offsets())
      for c in ax.collections
      if (c.get_gid() or '').startswith('seeds:')
  }


def test_params_figure_panels_families_and_seeds(tmp_path):
  table = study_plots.load_table(
      write_table(tmp_path / 'results.json', params_rows(), PARAMS_COLUMNS)
  )
  fig = study_plots.params_figure(table)
  assert [ax.get_title() for ax in fig.axes] == ['BSD68', 'Set12']
  for ax, eval_set in zip(fig.axes, ('BSD68', 'Set12')):
    lines = series(ax)
    assert list(lines) == ['DxNet', 'DenseNet']
    x, y, err = lines['DxNet']
    np.testing.assert_allclose(x, [140, 227])
    expected = [[psnr_of(m, s, eval_set) for s in SEEDS] for m in ('dxnet_444', 'dxnet_666')]
    np.testing.assert_allclose(y, np.mean(expected, axis=1))
    np.testing.assert_allclose(err, np.std(expected, axis=1, ddof=1))
    x, y, err = lines['DenseNet']
    np.testing.assert_allclose(x, [111, 147, 188])  # joined in order of size
    last = [psnr_of('densenet_666', s, eval_set) for s in (0, 1)]  # seed 2 failed
    assert y[2] == pytest.approx(np.mean(last)) and err[2] == pytest.approx(np.std(last, ddof=1))
    points = seed_points(ax)
    assert sorted(points) == sorted(PARAMS)
    assert len(points['densenet_666']) == 2 and len(points['dxnet_444']) == 3
    np.testing.assert_allclose(points['dxnet_666'][:, 0], 227, rtol=0.03)  # beside the bar
    np.testing.assert_allclose(
        points['dxnet_666'][:, 1], [psnr_of('dxnet_666', s, eval_set) for s in SEEDS]
    )
    colors = {c.get_label(): c.lines[0].get_color() for c in ax.containers}
    assert colors['DxNet'] != colors['DenseNet']
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ['DxNet', 'DenseNet']
    assert sorted(t.get_text() for t in ax.texts) == ['444', '444', '555', '666', '666']


def designs_rows(columns=('psnr/BSD68', 'psnr/Set12')):
  rows = []
  for depth in (3, 5, 7):
    for design in ('relu', 'dxnet', 'gaussian'):
      label = f'{design}_{depth}'
      for seed in SEEDS:
        rows.append(row(label, seed, {c: psnr_of(label, seed, c) + depth / 10 for c in columns}))
  return rows


def test_designs_figure_one_line_per_design(tmp_path):
  path = write_table(tmp_path / 'results.json', designs_rows(), PARAMS_COLUMNS[:5])
  fig = study_plots.designs_figure(study_plots.load_table(path))
  assert [ax.get_title() for ax in fig.axes] == ['BSD68', 'Set12']
  for ax in fig.axes:
    lines = series(ax)
    assert list(lines) == ['Conv+BN+ReLU', 'Conv+xUnit (DxNet)', 'Gaussian xUnit (2018)']
    xs = [lines[name][0] for name in lines]
    for x in xs:
      np.testing.assert_allclose(np.round(x), [3, 5, 7])
    assert xs[0][0] < xs[1][0] < xs[2][0]  # side by side at each depth
    x, y, err = lines['Conv+xUnit (DxNet)']
    column = 'psnr/' + ax.get_title()
    expected = [[psnr_of(f'dxnet_{d}', s, column) + d / 10 for s in SEEDS] for d in (3, 5, 7)]
    np.testing.assert_allclose(y, np.mean(expected, axis=1))
    np.testing.assert_allclose(err, np.std(expected, axis=1, ddof=1))
    points = seed_points(ax)
    assert len(points) == 9 and all(len(p) == 3 for p in points.values())
    np.testing.assert_allclose(points['gaussian_5'][:, 0], xs[2][1], atol=0.1)
    assert list(ax.get_xticks()) == [3, 5, 7]


SHARPNESS_COLUMNS = ['label', 'seed', 'status', 'psnr/Set12', 'sharpness/trace_hutchinson']
SHARPNESS_COLUMNS += ['sharpness/mean_eigenvalue_hutchinson']
SIGMAS = [0.001, 0.002, 0.004]


def sharpness_root(
    tmp_path, labels=('dxnet_444', 'densenet_444'), sigmas_of=lambda label, s: SIGMAS
):
  """A table and one sharpness.json per run, as the sharpness study leaves them."""
  rows = []
  for i, label in enumerate(labels):
    for seed in SEEDS:
      trace = 100.0 * (i + 1) + seed
      metrics = {
          'psnr/Set12': 25.0,
          'sharpness/trace_hutchinson': trace,
          'sharpness/mean_eigenvalue_hutchinson': trace / 1e5,
      }
      rows.append(row(label, seed, metrics))
      sigmas = np.asarray(sigmas_of(label, seed))
      measured = {
          'name': f'{label}-seed{seed}',
          'sigmas': list(sigmas),
          'base_loss': 0.01 + seed,
          'mean_loss': list(0.01 + seed + trace / 2 * sigmas**2),
          'trace_hutchinson': trace,
      }
      folder = tmp_path / f'{label}-seed{seed}' / 'sharpness'
      folder.mkdir(parents=True)
      (folder / 'sharpness.json').write_text(json.dumps([measured]))
  return write_table(tmp_path / 'results.json', rows, SHARPNESS_COLUMNS)


def test_sharpness_figure_values_and_curves(tmp_path):
  fig = study_plots.sharpness_figure(study_plots.load_table(sharpness_root(tmp_path)))
  trace_ax, eigen_ax, curve_ax = fig.axes
  assert trace_ax.get_title() == 'Tr(H), Hutchinson' and 'eigenvalue' in eigen_ax.get_title()
  for ax, scale in ((trace_ax, 1.0), (eigen_ax, 1e-5)):
    assert [t.get_text() for t in ax.get_xticklabels()] == ['dxnet_444', 'densenet_444']
    means = [c.lines[0].get_ydata()[0] for c in ax.containers]
    np.testing.assert_allclose(means, np.array([101.0, 201.0]) * scale)
    points = seed_points(ax)
    np.testing.assert_allclose(points['densenet_444'][:, 1], np.array([200, 201, 202]) * scale)
    np.testing.assert_allclose(points['densenet_444'][:, 0], 1, atol=0.2)
  curves = {line.get_label(): line for line in curve_ax.get_lines()}
  assert list(curves) == ['dxnet_444 (3)', 'densenet_444 (3)']
  np.testing.assert_allclose(curves['dxnet_444 (3)'].get_xdata(), SIGMAS)
  # The loss increase, averaged over seeds: mean trace / 2 * sigma^2.
  np.testing.assert_allclose(
      curves['densenet_444 (3)'].get_ydata(), 201.0 / 2 * np.square(SIGMAS), rtol=1e-9
  )
  bands = [c for c in curve_ax.collections if c.get_gid() is None]
  assert len(bands) == 2  # mean ± std over seeds
  colors = [tuple(line.get_color()) for line in curves.values()]
  assert colors[0] != colors[1]


def test_cli_writes_each_kind(tmp_path, capsys):
  cases = {
      'params': write_table(tmp_path / 'p' / 'results.json', params_rows(), PARAMS_COLUMNS),
      'designs': write_table(tmp_path / 'd' / 'results.json', designs_rows(), PARAMS_COLUMNS[:5]),
      'sharpness': sharpness_root(tmp_path / 's'),
  }
  for kind, results in cases.items():
    out = tmp_path / 'figures' / f'{kind}.png'
    assert study_plots.main([str(results), '--kind', kind, '--out', str(out)]) == 0
    assert out.stat().st_size > 10_000
    assert f'wrote {out}' in capsys.readouterr().out


@pytest.mark.parametrize(
    'kind, columns, message',
    [
        ('params', ['label', 'seed', 'status', 'psnr/BSD68'], "no column ['parameters']"),
        ('params', ['label', 'seed', 'status', 'parameters'], "no column ['psnr/SET']"),
        ('designs', ['label', 'seed', 'status', 'ssim/BSD68'], "no column ['psnr/SET']"),
        ('sharpness', PARAMS_COLUMNS, "no column ['sharpness/trace_hutchinson']"),
    ],
)
def test_tables_without_the_needed_columns_are_errors(tmp_path, capsys, kind, columns, message):
  path = write_table(tmp_path / 'results.json', params_rows(), columns)
  with pytest.raises(study_plots.TableError) as error:
    study_plots.study_figure(study_plots.load_table(path), kind)
  assert message in str(error.value) and study_plots.STUDIES[kind] in str(error.value)
  out = tmp_path / 'figure.png'
  with pytest.raises(SystemExit):
    study_plots.main([str(path), '--kind', kind, '--out', str(out)])
  assert message in capsys.readouterr().err
  assert not out.exists()


def test_tables_that_cannot_be_drawn_are_errors(tmp_path):
  labels = [row('relu3', 0, {'psnr/BSD68': 20.0})]
  path = write_table(tmp_path / 'd' / 'results.json', labels, PARAMS_COLUMNS[:4])
  with pytest.raises(study_plots.TableError, match="label 'relu3' is not DESIGN_DEPTH"):
    study_plots.designs_figure(study_plots.load_table(path))

  failed = [row('dxnet_444', 0, {'psnr/BSD68': None, 'parameters': None}, status='failed')]
  path = write_table(tmp_path / 'f' / 'results.json', failed, PARAMS_COLUMNS)
  with pytest.raises(study_plots.TableError, match='has no finished run'):
    study_plots.params_figure(study_plots.load_table(path))

  root = tmp_path / 'missing'
  path = sharpness_root(root)
  (root / 'densenet_444-seed1' / 'sharpness' / 'sharpness.json').unlink()
  with pytest.raises(study_plots.TableError) as error:
    study_plots.sharpness_figure(study_plots.load_table(path))
  assert 'densenet_444-seed1/sharpness/sharpness.json is missing' in str(error.value)
  assert 'configs/studies/sharpness.py' in str(error.value)

  root = tmp_path / 'grids'
  other = lambda label, seed: [0.1, 0.2, 0.4] if seed == 2 else SIGMAS
  path = sharpness_root(root, sigmas_of=other)
  with pytest.raises(study_plots.TableError, match='measured at other sigmas'):
    study_plots.sharpness_figure(study_plots.load_table(path))

  (tmp_path / 'bad.json').write_text('{"rows": []}')
  with pytest.raises(study_plots.TableError, match='not a sweep results table'):
    study_plots.load_table(tmp_path / 'bad.json')
