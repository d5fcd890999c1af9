"""The tour notebook runs headless from top to bottom and writes its figures."""

import os
import pathlib
import re

import pytest

NOTEBOOK = pathlib.Path(__file__).resolve().parents[2] / 'notebooks' / 'dxnet_tour.ipynb'


@pytest.mark.slow
def test_tour_notebook_executes(tmp_path):
  from dxnet_jax.analysis import notebook

  # A smaller tour than the defaults: fewer training steps (200 and 40), classifiers of one
  # dense layer per block (two), fewer Hutchinson probes (16) and perturbed networks per sigma
  # (12). Every cell, figure and printed check still runs; only how well the tiny nets are
  # trained and how precise the sharpness estimates are changes.
  env = {
      'DXNET_TOUR_OUT': str(tmp_path),
      'DXNET_TOUR_STEPS': '20',
      'DXNET_TOUR_CLS_STEPS': '10',
      'DXNET_TOUR_CLS_BLOCKS': '1,1',
      'DXNET_TOUR_PROBES': '8',
      'DXNET_TOUR_REALIZATIONS': '4',
  }
  nb = notebook.execute(str(NOTEBOOK), env=env, timeout=600)
  text = '\n'.join(
      o.get('text', '')
      for c in nb.cells
      if c.cell_type == 'code'
      for o in c.get('outputs', [])
      if o.get('output_type') == 'stream'
  )
  errors = [
      o
      for c in nb.cells
      if c.cell_type == 'code'
      for o in c.get('outputs', [])
      if o.get('output_type') == 'error'
  ]
  assert not errors
  for name in (
      'tour_denoising.png',
      'tour_cams.png',
      'tour_sharpness.png',
      'budget_paper_points.png',
  ):
    assert (tmp_path / name).stat().st_size > 5_000, name
  print(text)
  # The CAM identity, per classifier: the mean of the class activation map plus the head's bias
  # is the logit, up to float32 rounding (measured: 1.2e-7 for logits of order 1).
  gaps = re.findall(r'^(\S+): max \|mean\(CAM\) \+ bias - logit\| = (\S+)$', text, re.M)
  assert len(gaps) == 2, text
  assert all(float(gap) < 1e-5 for _, gap in gaps), gaps
  # The tour's denoiser beats its noisy input at both noise levels (its table's rows); after the
  # 20 steps here it gained 3.0 dB (sigma 25) and 4.0 dB (sigma 50): a 1 dB margin on each. (A
  # denoiser that returns its input gains 0.47 and 1.08 dB, from clipping and rounding alone.)
  rows = re.findall(r'^sigma (\d+)  noisy: ([\d.]+) dB  DxNet \(tour\): ([\d.]+) dB', text, re.M)
  assert [int(s) for s, _, _ in rows] == [25, 50], text
  for (sigma, noisy, denoised), gain in zip(rows, (3.0, 4.0)):
    assert float(denoised) > float(noisy) + gain - 1.0, (sigma, noisy, denoised)
  assert 'tour finished' in text
  images = [
      c
      for c in nb.cells
      if c.cell_type == 'code'
      for o in c.get('outputs', [])
      if 'image/png' in o.get('data', {})
  ]
  assert len(images) >= 4
  assert all(os.environ.get(k) is None for k in env)  # the runner restores the environment
