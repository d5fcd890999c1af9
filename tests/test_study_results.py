"""docs/results.md shows the multi-seed studies as the committed results files say.

Every `python -m dxnet_jax.analysis.stats docs/results/studies/...` command in docs/results.md is
rerun on the committed table and its output must appear in the page verbatim; every
`python -m dxnet_jax.analysis.study_plots ...` command names a committed figure the page shows,
and redraws it from the committed files.
"""

import json
import pathlib
import re
import shlex

import numpy as np
import pytest
from PIL import Image

from dxnet_jax import sweep
from dxnet_jax.analysis import stats
from dxnet_jax.analysis import study_plots

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGE = REPO / 'docs' / 'results.md'
STUDIES = REPO / 'docs' / 'results' / 'studies'
STUDY_NAMES = ('authors_layout', 'denoise_params', 'xunit_cell_order', 'xunit_designs')
# The study config whose sweep wrote each committed table (sharpness.py extends denoise_params.py).
STUDY_CONFIGS = {
    'authors_layout': 'authors_layout.py',
    'denoise_params': 'sharpness.py',
    'xunit_cell_order': 'xunit_cell_order.py',
    'xunit_designs': 'xunit_designs.py',
}


def _commands(module):
  pattern = re.compile(rf'^python -m {re.escape(module)} (docs/results/studies/.+)$', re.M)
  return [shlex.split(m.group(1)) for m in pattern.finditer(PAGE.read_text())]


STATS = _commands('dxnet_jax.analysis.stats')
PLOTS = _commands('dxnet_jax.analysis.study_plots')


@pytest.mark.parametrize('name', STUDY_NAMES)
def test_committed_studies_are_complete(name):
  table = json.loads((STUDIES / name / 'results.json').read_text())
  assert len(table['rows']) == table['runs'] > 0
  assert all(row['status'] == 'done' for row in table['rows'])
  seeds = {}
  for row in table['rows']:
    seeds.setdefault(row['label'], set()).add(row['seed'])
  assert all(len(s) >= 3 for s in seeds.values()), seeds
  timing = json.loads((STUDIES / name / 'timing.json').read_text())['runs']
  assert set(timing) == {row['workdir'] for row in table['rows']}
  for path in (STUDIES / name).rglob('*.json'):
    assert not list(_absolute_paths(json.loads(path.read_text()))), path


def _absolute_paths(value):
  """The strings in a JSON value that look like absolute paths of the measuring machine."""
  if isinstance(value, dict):
    value = list(value.values())
  if isinstance(value, list):
    for item in value:
      yield from _absolute_paths(item)
  elif isinstance(value, str) and value.startswith('/'):
    yield value


@pytest.mark.parametrize('name', STUDY_NAMES)
def test_committed_results_come_from_the_study_configs(name, monkeypatch):
  monkeypatch.chdir(REPO)
  study = sweep.load_study(f'configs/studies/{STUDY_CONFIGS[name]}')
  expected = {(run.label, run.seed): (run.config, dict(run.overrides)) for run in study.runs}
  table = json.loads((STUDIES / name / 'results.json').read_text())
  assert table['columns'] == [*sweep.TABLE_KEYS, *study.columns]
  for row in table['rows']:
    assert (row['config'], row['overrides']) == expected[row['label'], row['seed']]
    for analysis in study.analyses:
      record = STUDIES / name / row['workdir'] / analysis.name / sweep.ANALYSIS_RECORD
      assert json.loads(record.read_text()) == analysis.settings()


def test_every_study_has_its_table_and_figure_in_the_page():
  tables = {pathlib.Path(args[0]).parent.name for args in STATS}
  figures = {args[args.index('--kind') + 1] for args in PLOTS}
  assert tables == set(STUDY_NAMES)
  assert figures == set(study_plots.KINDS)


@pytest.mark.parametrize('args', STATS, ids=lambda args: ' '.join(args[:1] + args[-2:]))
def test_page_tables_are_the_stats_of_the_committed_results(args, capsys, monkeypatch):
  monkeypatch.chdir(REPO)
  assert stats.main(args) == 0
  printed = capsys.readouterr().out.strip()
  assert (
      printed in PAGE.read_text()
  ), f'rerun `python -m dxnet_jax.analysis.stats {shlex.join(args)}`'


@pytest.mark.parametrize('args', PLOTS, ids=lambda args: args[args.index('--kind') + 1])
def test_page_figures_redraw_from_the_committed_results(args, tmp_path, monkeypatch):
  monkeypatch.chdir(REPO)
  out = args[args.index('--out') + 1]
  assert (
      REPO / out
  ).is_file() and f']({pathlib.Path(out).relative_to("docs")})' in PAGE.read_text()
  redrawn = tmp_path / 'figure.png'
  args = [*args[: args.index('--out')], '--out', str(redrawn)]
  assert study_plots.main(args) == 0
  committed, drawn = (
      np.asarray(Image.open(p).convert('RGB'), np.int16) for p in (REPO / out, redrawn)
  )
  assert drawn.shape == committed.shape
  # Redrawn here, every pixel was identical. Moving one seed's point of one panel by 0.1 dB
  # changes 0.19% of the pixels by over 32 levels; other font renderers' antialiasing stays below.
  changed = float(np.mean(np.abs(drawn - committed).max(axis=-1) > 32))
  assert changed < 0.001, f'{changed:.2%} of the pixels differ: rerun the command on the page'
