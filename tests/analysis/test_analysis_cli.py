"""The sharpness and CAM command lines on real trainer workdirs.

Two tiny classifiers (a DenseNet-BC and a DxNet, one dense layer per block) are trained for a few
steps by the project's trainer on a folder of 16x16 images in three classes, then both CLIs read
their checkpoints and validation data the way a user's run would.
"""

import json

import jax
import numpy as np
import pytest
from PIL import Image

from dxnet_jax import train
from dxnet_jax.analysis import budget_plots, cam, sharpness
from dxnet_jax.train import checkpoint, defaults

CLASSES = ('dark', 'stripes', 'bright')


def _write_dataset(root):
  rng = np.random.default_rng(0)
  for label, name in enumerate(CLASSES):
    folder = root / 'train' / name
    folder.mkdir(parents=True)
    for i in range(12):
      base = np.full((16, 16), 60.0 + 70.0 * label)
      if name == 'stripes':
        base[::4] = 230.0
      pixels = base[..., None] + rng.normal(0, 12, (16, 16, 3))
      Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f'{i}.png')


def _config(root, model):
  config = defaults.base_config(
      'classification',
      model,
      (16, 16, 3),
      source='folder',
      root=str(root),
      name='tiny',
      validation_split='holdout',
      holdout=6,
      image_size=16,
      augment='none',
      cutout=0,
      prefetch=0,
  )
  config.model.blocks = (1, 1)
  config.model.growth_rate = 4
  config.model.num_classes = len(CLASSES)
  config.model.xunit_kernel = 3
  config.batch_size = 10
  config.num_steps = 4
  config.log_every_steps = 2
  config.final_eval = False
  config.async_checkpoints = False
  config.optim = defaults.optim_config('adam', learning_rate=1e-2)
  return config


@pytest.fixture(scope='module')
def workdirs(tmp_path_factory):
  root = tmp_path_factory.mktemp('data')
  _write_dataset(root)
  out = []
  for model in ('densenet_bc_k12_16', 'dxnet_k12_12'):
    workdir = tmp_path_factory.mktemp(model)
    train.train_and_evaluate(_config(root, model), str(workdir))
    out.append(str(workdir))
  return out


# The tests that read `workdirs` share one worker, so that the two classifiers train once.
WORKDIRS = pytest.mark.xdist_group('analysis_cli_workdirs')


@pytest.mark.slow
@WORKDIRS
def test_sharpness_cli(workdirs, tmp_path):
  results = sharpness.main(
      [f'--workdir={w}' for w in workdirs]
      + [
          '--name=DenseNet',
          '--name=DxNet',
          f'--out={tmp_path}',
          '--realizations=4',
          '--probes=4',
          '--batch-size=6',
          '--max-batches=1',
          '--chunk-size=4',
      ]
  )
  saved = json.loads((tmp_path / 'sharpness.json').read_text())
  assert [r['name'] for r in saved] == ['DenseNet', 'DxNet']
  for workdir, res, row in zip(workdirs, results, saved):
    _, variables, _ = checkpoint.load_for_inference(workdir)
    params = variables['params']
    # Only convolution kernels are perturbed: all of them, and nothing else.
    kernels = sum(
        np.size(x)
        for p, x in jax.tree_util.tree_flatten_with_path(params)[0]
        if sharpness.path_str(p).endswith('kernel') and np.ndim(x) == 4
    )
    assert row['num_perturbed'] == res.num_perturbed == kernels
    assert kernels < sum(np.size(x) for x in jax.tree.leaves(params))
    assert row['trace_hutchinson'] > 0 and np.isfinite(row['trace_fit'])
    assert len(row['mean_loss']) == 8
  # One shared sweep, sized for the sharper model.
  assert saved[0]['sigmas'] == saved[1]['sigmas']
  assert (tmp_path / 'sharpness.png').stat().st_size > 10_000


@pytest.mark.slow
@WORKDIRS
def test_cam_cli_validation_set_and_folder(workdirs, tmp_path):
  path = cam.main(
      [f'--workdir={w}' for w in workdirs]
      + [f"--out={tmp_path / 'val'}", '--num=4', '--class-of=label', '--per-image']
  )
  assert Image.open(path).size == (600, 840)  # 4 rows, image + 2 models
  per_image = list((tmp_path / 'val').glob('*/cam_*.png'))
  assert len(per_image) == 8

  folder = tmp_path / 'mine'
  folder.mkdir()
  for i in range(3):
    Image.fromarray(np.full((40, 50, 3), 80 * i, np.uint8)).save(folder / f'{i}.jpg')
  path = cam.main(
      [
          f'--workdir={workdirs[1]}',
          f'--images={folder}',
          '--name=DxNet',
          f"--out={tmp_path / 'folder'}",
      ]
  )
  assert Image.open(path).size == (400, 630)  # 3 rows, image + 1 model


@pytest.mark.slow
@WORKDIRS
def test_budget_plot_from_trainer_workdirs(workdirs, tmp_path):
  records = [r for w in workdirs for r in budget_plots.records_from_workdir(w)]
  assert [r['family'] for r in records] == ['DenseNet', 'DxNet']
  for workdir, r in zip(workdirs, records):
    results = json.loads(open(f'{workdir}/results.json').read())
    assert r['params'] == results['parameters']
    assert r['value'] == pytest.approx(100 * results['best_validation']['value'])
    assert r['dataset'] == 'tiny'
  path = budget_plots.main([f'--workdir={w}' for w in workdirs] + [f'--out={tmp_path}'])
  assert Image.open(path).size == (500, 400)
