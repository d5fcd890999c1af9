"""Parameter-budget plots: schema, paper points, and a PNG written from a small results file."""

import json

import numpy as np
import pytest
from PIL import Image

from dxnet_jax.analysis import budget_plots, paper_points

OURS = [
    {
        'model': 'DxNet k12 12-12-12',
        'params': 532_000,
        'metric': 'accuracy',
        'value': 91.5,
        'dataset': 'cifar10',
        'source': 'ours',
        'family': 'DxNet',
    },
    {
        'model': 'DenseNet-BC k12 16-16-16',
        'params': 769_162,
        'metric': 'error',
        'value': 9.0,
        'dataset': 'cifar10',
        'source': 'ours',
        'family': 'DenseNet-BC',
    },
    {
        'model': 'DxNet k16 4-4-4',
        'params': 141_000,
        'metric': 'psnr',
        'value': 25.9,
        'dataset': 'bsd68_sigma50',
        'source': 'ours',
        'family': 'DxNet',
    },
    {
        'model': 'BM3D',
        'params': None,
        'metric': 'psnr',
        'value': 25.60,
        'dataset': 'bsd68_sigma50',
        'source': 'ours',
    },
]


def test_paper_points_are_sourced_and_valid():
  for p in paper_points.POINTS:
    budget_plots.validate(p)
    assert p['citation'], p
  by = {(p['model'], p['dataset']): p for p in paper_points.POINTS}
  assert by[('DnCNN', 'bsd68_sigma50')]['value'] == 26.23
  assert by[('DnCNN', 'bsd68_sigma50')]['params'] == 556_000
  assert by[('BM3D', 'bsd68_sigma50')]['value'] == 25.62
  assert [by[('Bicubic', d)]['value'] for d in ('set5_x4', 'set14_x4', 'bsd100_x4')] == [
      28.42,
      25.99,
      25.96,
  ]
  # Accuracies we cannot source are missing, not invented.
  assert all(p['value'] is None for p in paper_points.points('cifar10'))


def test_schema_rejects_bad_records(tmp_path):
  good = dict(OURS[0])
  with pytest.raises(ValueError, match='lacks'):
    budget_plots.validate({k: v for k, v in good.items() if k != 'dataset'})
  with pytest.raises(ValueError, match='unknown metric'):
    budget_plots.validate({**good, 'metric': 'top5'})
  with pytest.raises(ValueError, match='params'):
    budget_plots.validate({**good, 'params': -3})
  with pytest.raises(ValueError, match='value'):
    budget_plots.validate({**good, 'value': float('nan')})
  path = tmp_path / 'r.jsonl'
  budget_plots.append_results(str(path), OURS[:2])
  budget_plots.append_results(str(path), OURS[2:])
  loaded = budget_plots.load_results(str(path))
  assert [r['model'] for r in loaded] == [r['model'] for r in OURS]
  assert loaded[3]['family'] == 'BM3D'
  as_json = tmp_path / 'r.json'
  as_json.write_text(json.dumps({'results': OURS}))
  assert budget_plots.load_results(str(as_json)) == loaded


def test_cli_writes_png_with_one_panel_per_dataset(tmp_path):
  results = tmp_path / 'results.json'
  results.write_text(json.dumps(OURS))
  path = budget_plots.main(['--results', str(results), '--out', str(tmp_path / 'plots')])
  img = np.asarray(Image.open(path).convert('RGB'))
  # Two data sets -> two panels side by side at 5x4 inches, 100 dpi.
  assert img.shape == (400, 1000, 3)
  assert img.std() > 10  # something was drawn

  # The error record is drawn as accuracy (100 - 9 = 91) beside the DxNet point (91.5).
  groups = budget_plots._groups([budget_plots.validate(r) for r in OURS])
  cifar = groups[('cifar10', 'accuracy')]
  assert sorted(r['value'] for r in cifar) == [91.0, 91.5]


def test_paper_points_alone(tmp_path):
  path = budget_plots.main(
      ['--dataset', 'set5_x4', '--dataset', 'set14_x4', '--out', str(tmp_path / 'sr.png')]
  )
  assert Image.open(path).size == (1000, 400)
  with pytest.raises(ValueError, match='nothing to plot'):
    budget_plots.plot_budget(OURS, str(tmp_path / 'x.png'), datasets=['svhn'])


def test_records_from_a_restoration_workdir(tmp_path):
  # The layout `dxnet_jax.train.loop._final_results` writes (a classification run is read in
  # tests/analysis/test_analysis_cli.py from a real trainer workdir).
  run = tmp_path / 'dxnet_run'
  run.mkdir()
  (run / 'config.json').write_text(
      json.dumps({'task': 'denoising', 'data': {'sigma': 50.0, 'eval_sigma': None}})
  )
  (run / 'results.json').write_text(
      json.dumps(
          {
              'model': 'dxnet_denoise_444',
              'task': 'denoising',
              'steps': 100,
              'parameters': 140353,
              'best_validation': {'metric': 'psnr', 'value': 25.1, 'step': 100, 'epoch': 1},
              'evaluation': [
                  {'set': 'BSD68', 'method': 'dxnet_run', 'psnr': 25.4, 'ssim': 0.7},
                  {
                      'set': 'BSD68',
                      'method': 'noisy input (unclipped float)',
                      'psnr': 14.2,
                      'ssim': 0.1,
                  },
                  {
                      'set': 'BSD68',
                      'method': 'noisy input (clipped, 8-bit)',
                      'psnr': 14.9,
                      'ssim': 0.1,
                  },
              ],
          }
      )
  )
  records = budget_plots.records_from_workdir(str(run))
  assert [(r['model'], r['dataset'], r['value'], r['params']) for r in records] == [
      ('dxnet_denoise_444', 'bsd68_sigma50', 25.4, 140353),
      ('Noisy input', 'bsd68_sigma50', 14.2, None),
  ]
  assert records[0]['family'] == 'DxNet'
  path = budget_plots.main(['--workdir', str(run), '--out', str(tmp_path)])
  assert Image.open(path).size == (500, 400)  # one panel, beside the paper's BSD68 points
