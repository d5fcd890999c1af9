"""The evaluate CLI: baselines, any folder, and a workdir's model through load_for_inference."""

import json

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from dxnet_jax import evaluate
from dxnet_jax import metrics
from dxnet_jax.data import default_config
from dxnet_jax.data import eval_sets
from dxnet_jax.data import paths

SHARED = paths.data_root()
pytestmark = [
    pytest.mark.skipif(not SHARED.is_dir(), reason=f'shared data absent: {SHARED}'),
    pytest.mark.filterwarnings('ignore::dxnet_jax.data.images.DataWarning'),
]


def _json(capsys, argv):
  assert evaluate.main(argv + ['--json']) == 0
  return json.loads(capsys.readouterr().out)


def test_evaluate_images_averages_per_image_scores():
  images = eval_sets.load('Set5', task='super_resolution')
  scores = iter([{'psnr': 30.0, 'ssim': 0.8}, {'psnr': 20.0, 'ssim': 0.6}])
  result = evaluate.evaluate_images(lambda lr: lr, images[:2], lambda out, hr: next(scores))
  assert result['psnr'] == pytest.approx(25.0) and result['ssim'] == pytest.approx(0.7)
  assert [r['name'] for r in result['images']] == [images[0].name, images[1].name]
  with pytest.raises(ValueError, match='no images'):
    evaluate.evaluate_images(lambda x: x, [], metrics.denoising_scores)


def test_bicubic_cli_json(capsys):
  out = _json(capsys, ['--baseline', 'bicubic', '--set', 'Set5'])
  (row,) = out['results']
  assert row['set'] == 'Set5' and row['method'] == 'bicubic' and row['num_images'] == 5
  assert round(row['psnr'], 2) == 28.42
  assert 'Y channel' in out['protocol']


def test_noisy_cli_table_labels_both_rows(capsys):
  assert evaluate.main(['--baseline', 'noisy', '--set', 'Set12', '--sigma', '25']) == 0
  table = capsys.readouterr().out
  assert 'noisy input (unclipped float)' in table and 'noisy input (clipped, 8-bit)' in table
  assert 'sigma=25' in table


def test_any_folder_and_per_image(capsys, tmp_path):
  rng = np.random.default_rng(0)
  for i in range(2):
    evaluate.degrade.Image.fromarray(rng.integers(0, 256, (48, 40), dtype=np.uint8)).save(
        tmp_path / f'{i}.png'
    )
  out = _json(
      capsys, ['--baseline', 'noisy', '--sigma', '15', '--set', str(tmp_path), '--per-image']
  )
  assert [im['name'] for im in out['results'][0]['images']] == ['0.png', '1.png']


def test_mismatched_task_is_an_error(capsys):
  assert evaluate.main(['--baseline', 'bicubic', '--set', 'BSD68']) == 2
  assert 'do not all belong' in capsys.readouterr().err
  assert evaluate.main(['--baseline', 'noisy', '--set', 'BSD68']) == 2
  assert 'needs --sigma' in capsys.readouterr().err


class _Identity(nn.Module):
  """A 'denoiser' that returns its input."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    return x * self.param('gain', nn.initializers.ones, ())


def test_workdir_mode_uses_load_for_inference(capsys, monkeypatch):
  config = ml_collections.ConfigDict()
  config.task = 'denoising'
  config.data = default_config('denoising', sigma=25.0, eval_sets=('Set12',))
  model = _Identity()
  variables = {'params': {'gain': jnp.ones(())}}
  from dxnet_jax.train import checkpoint  # pylint: disable=g-import-not-at-top

  monkeypatch.setattr(checkpoint, 'load_for_inference', lambda workdir: (model, variables, config))

  out = _json(capsys, ['--workdir', '/runs/identity'])
  noisy = _json(capsys, ['--baseline', 'noisy', '--set', 'Set12', '--sigma', '25'])
  (row,) = out['results']
  assert row['set'] == 'Set12' and row['method'] == 'identity'
  assert row['psnr'] == pytest.approx(noisy['results'][1]['psnr'], abs=1e-9)
