"""Shipped pretrained models: every one loads in one call, matches its manifest and model card,
and runs; export and measure write what load reads."""

import json
import pathlib
import re
import shutil

import jax
import numpy as np
import pytest
from flax import serialization
from PIL import Image

from dxnet_jax import metrics
from dxnet_jax import evaluate
from dxnet_jax import pretrained
from dxnet_jax import train
from dxnet_jax.data import eval_sets
from dxnet_jax.data import images as images_lib
from dxnet_jax.data import paths
from dxnet_jax.train import checkpoint
from dxnet_jax.train import defaults

REPO = pathlib.Path(__file__).resolve().parents[1]
NAMES = pretrained.available()
# The best model per restoration task and net, and the blind (noise-level-map) denoisers that
# `dxnet-denoise` runs by default: gray and colour.
SHIPPED = (
    'denoise_densenet_555_s50_h200',
    'denoise_dxnet_444_s50_h200',
    'denoise_dxnet_blind_gray',
    'denoise_dxnet_blind_rgb',
    'sr_densenet16_x4_budget',
    'sr_dxnet16_x4_budget',
)


def _crop(name, box):
  return np.asarray(Image.open(paths.data_root() / name).crop(box))


def _copy(name, folder):
  shutil.copytree(pretrained.root() / name, folder)
  return folder


def test_the_package_ships_the_best_model_per_task_and_net(monkeypatch):
  monkeypatch.delenv(pretrained.ENV_VAR, raising=False)
  assert pretrained.root() == pathlib.Path(pretrained.__file__).parent / 'weights'
  assert tuple(pretrained.available()) == SHIPPED
  total = sum(p.stat().st_size for p in pretrained.root().rglob('*') if p.is_file())
  assert total < 6 * 2**20, f'{total / 2**20:.2f} MiB of shipped models'


@pytest.mark.parametrize('name', NAMES)
def test_manifest_records_command_budget_and_numbers(name):
  info = pretrained.manifest(name)
  assert info['command'].startswith(
      ('python -m dxnet_jax.main --config configs/', 'python launch/timeboxed.py ')
  )
  configs = re.findall(r'configs/[\w/]+\.py', info['command'])
  assert configs and all((REPO / c).is_file() for c in configs), configs
  assert info['wall_seconds'] > 0 and info['results']['steps'] > 0
  assert (pretrained.root() / name / pretrained.WEIGHTS).stat().st_size < pretrained.MAX_BYTES


@pytest.mark.parametrize('name', NAMES)
def test_card_and_manifest_hold_the_scores_of_the_stored_float16_weights(name):
  info = pretrained.manifest(name)
  folder = pretrained.root() / name
  assert (folder / pretrained.CARD).read_text() == pretrained.model_card(info)
  raw = serialization.msgpack_restore((folder / pretrained.WEIGHTS).read_bytes())
  assert {x.dtype for x in jax.tree.leaves(raw)} == {np.dtype(np.float16)}
  measured = info['measured']
  assert info['weights_dtype'] == measured['weights_dtype'] == 'float16'
  assert measured['command'] == 'python -m dxnet_jax.evaluate --pretrained ' + name + ''.join(
      f' --set {s}' for s in pretrained.benchmark_sets(info)
  )
  assert [s['set'] for s in measured['scores']] == list(pretrained.benchmark_sets(info))
  check = info['float16_check']
  assert check['max_psnr_change_db'] < 0.01
  reference = {s['set']: s['psnr'] for s in check['float32_scores']}
  for score in measured['scores']:
    assert abs(score['psnr'] - reference[score['set']]) <= check['max_psnr_change_db'] + 1e-9


# The image re-measured of each benchmark set, compared with its recorded per-image scores: one
# whole image per set (each input shape is one compiled program of a full-size net, and running
# the plain 'xla' parts on the CPU is slow: 110 s for the DxNet denoiser on the whole of Set12).
# The smallest of Set12 and Set5 (256 px; 64 px LR); elsewhere an odd-sized or non-square one: a
# BSD68 portrait (321x481), Set14's 69x69 px LR image and a BSD100 landscape (80x120 px LR).
# Gray references scored as gray (Set14's img_003) are checked in test_data_eval_sets and
# test_metrics; the means of every recorded set in test_card_means_are_the_means_of_....
SUBSETS = {
    'Set12': ('01.png',),
    'BSD68': ('test001.png',),
    'CBSD68': ('101085.png',),
    'Set5': ('img_003_SRF_4_HR.png',),
    'Set14': ('img_006_SRF_4_HR.png',),
    'BSD100': ('img_001_SRF_4_HR.png',),
}
# The smallest benchmark set of each task, re-measured with either kernels ('cpu': what measured
# the cards on the CPU, and what 'auto' runs there; the plain 'xla' parts). A colour denoiser's
# only set is CBSD68.
SMALLEST_SET = {'denoising': 'Set12', 'super_resolution': 'Set5'}


def _smallest_set(name):
  info = pretrained.manifest(name)
  sets = pretrained.benchmark_sets(info)
  return SMALLEST_SET[info['task']] if SMALLEST_SET[info['task']] in sets else sets[0]


@pytest.mark.parametrize('name', NAMES)
def test_card_means_are_the_means_of_the_recorded_per_image_scores(name):
  for score in pretrained.manifest(name)['measured']['scores']:
    images = score['images']
    assert score['num_images'] == len(images) == len({image['name'] for image in images})
    for key in ('psnr', 'ssim'):
      mean = np.mean([image[key] for image in images])
      assert score[key] == pytest.approx(mean, rel=0, abs=1e-12), (score['set'], key)


def _data_root_holding(tmp_path, set_name, chosen_names):
  """A data root whose `set_name` folder lists the set's files in their order: the chosen ones
  themselves, every other one a 32 px stand-in, so `eval_sets.load` reads and degrades the set as
  the card's measurement did (image i's noise is drawn from (seed, i)) without decoding it all
  (BSD100 took 6 s)."""
  source = paths.data_root() / set_name
  folder = tmp_path / 'data' / set_name
  folder.mkdir(parents=True)
  for path in images_lib.list_images(source, images_lib.Issues(str(source))):
    if path.name in chosen_names:
      (folder / path.name).symlink_to(path)
    else:
      with Image.open(path) as image:
        Image.new('L' if image.mode == 'L' else 'RGB', (32, 32), 128).save(folder / path.name)
  return folder.parent


def _remeasure(name, set_name, tmp_path, monkeypatch, kernels='auto'):
  """Re-measures `name` on the SUBSETS images of `set_name` and compares each with its recorded
  scores (model.json `measured`); the set's image names must be the recorded ones."""
  model, variables, config = pretrained.load(name, kernels=kernels)
  setting = evaluate.settings(config.task, config.data)
  protocol = evaluate.protocol_for(config.task, setting['scale'])
  chosen_names = SUBSETS[set_name]
  monkeypatch.setenv(paths.ENV_VAR, str(_data_root_holding(tmp_path, set_name, chosen_names)))
  # The whole set, as the card's measurement loaded it.
  images = eval_sets.load(set_name, task=config.task, **setting)
  (card,) = [s for s in pretrained.manifest(name)['measured']['scores'] if s['set'] == set_name]
  assert [image.name for image in images] == [image['name'] for image in card['images']]
  chosen = [image for image in images if image.name in chosen_names]
  assert len(chosen) == len(chosen_names)
  predict = evaluate.model_predict(model, variables, setting['sigma'])
  scores = evaluate.evaluate_images(predict, chosen, protocol)['images']
  recorded = {image['name']: image for image in card['images']}
  for row in scores:
    want = recorded[row['name']]
    assert abs(row['psnr'] - want['psnr']) < 0.01, (set_name, row, want)
    assert abs(row['ssim'] - want['ssim']) < 1e-3, (set_name, row, want)


# Over about 3 s on a quiet 2-core CPU (a full-size net's compile, and the plain 'xla' parts' run).
SLOW = {
    ('denoise_densenet_555_s50_h200', 'xla'),
    ('denoise_dxnet_444_s50_h200', 'xla'),
    ('sr_densenet16_x4_budget', 'cpu'),
    ('sr_densenet16_x4_budget', 'Set14'),
    ('sr_dxnet16_x4_budget', 'xla'),
    ('sr_dxnet16_x4_budget', 'cpu'),
    ('sr_dxnet16_x4_budget', 'Set14'),
    ('sr_dxnet16_x4_budget', 'BSD100'),
    ('denoise_densenet_555_s50_h200', 'BSD68'),
    ('denoise_dxnet_444_s50_h200', 'BSD68'),
    ('denoise_dxnet_blind_gray', 'xla'),
    ('denoise_dxnet_blind_gray', 'cpu'),
    ('denoise_dxnet_blind_gray', 'BSD68'),
    ('denoise_dxnet_blind_rgb', 'xla'),
    ('denoise_dxnet_blind_rgb', 'cpu'),
}


def _cases(pairs):
  return [pytest.param(*pair, marks=[pytest.mark.slow] if pair in SLOW else []) for pair in pairs]


@pytest.mark.parametrize(
    'name,kernels', _cases([(name, kernels) for name in NAMES for kernels in ('xla', 'cpu')])
)
def test_every_shipped_model_scores_its_recorded_psnr_with_either_kernels(
    name, kernels, tmp_path, monkeypatch
):
  set_name = _smallest_set(name)
  _remeasure(name, set_name, tmp_path, monkeypatch, kernels)


# The model cards' other sets (BSD68; Set14, BSD100), re-measured on their SUBSETS images.
CARD_SETS = [
    (name, set_name)
    for name in NAMES
    for set_name in pretrained.benchmark_sets(pretrained.manifest(name))
    if set_name != _smallest_set(name)
]


@pytest.mark.parametrize('name,set_name', _cases(CARD_SETS))
def test_every_shipped_model_scores_its_card_on_every_benchmark_set(
    name, set_name, tmp_path, monkeypatch
):
  _remeasure(name, set_name, tmp_path, monkeypatch)


@pytest.mark.parametrize('name', NAMES)
def test_load_gives_variables_matching_the_model(name):
  model, variables, config = pretrained.load(name)
  abstract = jax.eval_shape(
      lambda: model.init(
          jax.random.key(0), np.zeros((1,) + tuple(config.input_shape), np.float32), train=False
      )
  )
  want = jax.tree.map(lambda x: x.shape, {k: abstract[k] for k in variables})
  assert jax.tree.map(np.shape, variables) == want
  assert pretrained.manifest(name)['parameters'] == sum(
      x.size for x in jax.tree.leaves(variables['params'])
  )


def test_denoiser_beats_the_noisy_input_on_a_real_crop():
  name = next(n for n in NAMES if pretrained.manifest(n)['model'] == 'dxnet_denoise_444')
  model, variables, config = pretrained.load(name)
  clean = _crop('Set12/01.png', (64, 64, 128, 128))[..., None]
  rng = np.random.default_rng(0)
  noisy = clean / 255.0 + rng.standard_normal(clean.shape) * config.data.sigma / 255.0
  out = evaluate.model_predict(model, variables)(noisy.astype(np.float32))  # one compiled program
  noisy_psnr = metrics.psnr(metrics.to_uint8(noisy), clean)
  # Measured: 16.47 -> 26.50 dB (+10.0 dB); a 1 dB margin.
  assert metrics.psnr(metrics.to_uint8(out), clean) > noisy_psnr + 9.0


def test_sr_output_is_four_times_larger():
  sr = next(n for n in NAMES if pretrained.manifest(n)['task'] == 'super_resolution')
  model, variables, _ = pretrained.load(sr)
  out = evaluate.model_predict(model, variables)(np.zeros((8, 12, 3), np.float32))
  assert out.shape == (32, 48, 3) and np.all(np.isfinite(out))


def test_unknown_name_lists_the_available_ones():
  with pytest.raises(
      ValueError, match=r"Unknown pretrained model 'nope'.*Available: .*" + NAMES[0]
  ):
    pretrained.load('nope')


def test_env_override_and_mismatched_files(tmp_path, monkeypatch):
  name = next(n for n in NAMES if pretrained.manifest(n)['model'] == 'dxnet_denoise_444')
  for folder in ('good', 'wrong_model', 'corrupt'):
    _copy(name, tmp_path / folder)
  monkeypatch.setenv(pretrained.ENV_VAR, str(tmp_path))
  info = json.loads((tmp_path / 'wrong_model' / 'model.json').read_text())
  info['config']['model']['blocks'] = [4, 4, 5]
  (tmp_path / 'wrong_model' / 'model.json').write_text(json.dumps(info))
  (tmp_path / 'corrupt' / pretrained.WEIGHTS).write_bytes(b'not msgpack at all')
  assert pretrained.available() == ['corrupt', 'good', 'wrong_model']
  pretrained.load('good')
  with pytest.raises(ValueError, match='does not match model'):
    pretrained.load('wrong_model')
  with pytest.raises(ValueError, match='corrupt'):
    pretrained.load('corrupt')
  monkeypatch.setenv(pretrained.ENV_VAR, str(tmp_path / 'missing'))
  assert pretrained.available() == []
  with pytest.raises(ValueError, match='Available: none'):
    pretrained.load('good')


def test_load_reads_float16_and_float32_files_as_float32(tmp_path, monkeypatch):
  name = SHIPPED[1]
  _, shipped, _ = pretrained.load(name)
  for dtype in ('float32', 'float64'):
    folder = _copy(name, tmp_path / dtype)
    blob = serialization.to_bytes(jax.tree.map(lambda x: x.astype(dtype), shipped))
    (folder / pretrained.WEIGHTS).write_bytes(blob)
  monkeypatch.setenv(pretrained.ENV_VAR, str(tmp_path))
  _, variables, _ = pretrained.load('float32')
  assert {x.dtype for x in jax.tree.leaves(variables)} == {np.dtype(np.float32)}
  assert jax.tree.structure(variables) == jax.tree.structure(shipped)
  assert all(
      np.array_equal(a, b)
      for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(shipped), strict=True)
  )
  with pytest.raises(ValueError, match=r"holds \['float64'\] arrays"):
    pretrained.load('float64')


def test_to_bytes_stores_the_chosen_dtype_and_refuses_what_float16_cannot_hold():
  tree = {'params': {'w': np.array([0.1, -2.5, 1000.0], np.float32)}}
  for dtype in pretrained.DTYPES:
    restored = serialization.msgpack_restore(pretrained.to_bytes(tree, dtype))
    assert restored['params']['w'].dtype == dtype
    np.testing.assert_allclose(restored['params']['w'], tree['params']['w'], rtol=1e-3)
  with pytest.raises(ValueError, match='does not fit float16.*--dtype float32'):
    pretrained.to_bytes({'params': {'w': np.array([1e5], np.float32)}}, 'float16')
  with pytest.raises(ValueError, match='weights dtype'):
    pretrained.to_bytes(tree, 'bfloat16')


def _tiny_run(tmp_path):
  """A 2-step training workdir of a tiny gray DxNet denoiser on random images."""
  images = tmp_path / 'images'
  images.mkdir()
  rng = np.random.default_rng(0)
  for i in range(4):
    Image.fromarray(rng.integers(0, 256, (24, 24), np.uint8)).save(images / f'{i}.png')
  config = defaults.base_config(
      'denoising',
      'dxnet_denoise_444',
      (16, 16, 1),
      train_dirs=(str(images),),
      validation_set=None,
      holdout=1,
      patch_size=16,
      patches_per_epoch=8,
      validation_crop=16,
      eval_sets=(),
      sigma=25.0,
      prefetch=0,
  )
  config.model.update(blocks=(1, 1), growth_rate=4, stem_features=8)
  config.update(batch_size=4, num_steps=2, final_eval=False, async_checkpoints=False)
  workdir = tmp_path / 'run'
  train.train_and_evaluate(config, str(workdir))
  return workdir


@pytest.mark.slow  # trains a tiny net for 2 steps
def test_export_writes_what_load_reads_in_either_dtype(tmp_path, monkeypatch):
  workdir = _tiny_run(tmp_path)
  _, trained, _ = checkpoint.load_for_inference(str(workdir))
  out = tmp_path / 'models'
  for dtype in pretrained.DTYPES:
    folder = pretrained.export(str(workdir), dtype, 'cmd', out_root=str(out), dtype=dtype)
    info = json.loads((folder / pretrained.MANIFEST).read_text())
    assert info['weights_dtype'] == dtype and info['command'] == 'cmd'
    assert (folder / pretrained.CARD).read_text() == pretrained.model_card(info)
  monkeypatch.setenv(pretrained.ENV_VAR, str(out))
  for dtype, tolerance in (('float32', 0), ('float16', 1e-3)):
    _, variables, _ = pretrained.load(dtype)
    want_tree = {k: dict(trained)[k] for k in variables}
    assert jax.tree.structure(variables) == jax.tree.structure(want_tree)
    for got, want in zip(jax.tree.leaves(variables), jax.tree.leaves(want_tree)):
      assert got.dtype == np.float32
      np.testing.assert_allclose(got, want, rtol=tolerance, atol=tolerance * 1e-2)


def test_export_never_overwrites_a_model(tmp_path):
  _copy(SHIPPED[1], tmp_path / 'taken')
  before = (tmp_path / 'taken' / pretrained.WEIGHTS).read_bytes()
  with pytest.raises(FileExistsError, match='already holds'):
    pretrained.export(str(tmp_path / 'no_workdir'), 'taken', 'cmd', out_root=str(tmp_path))
  assert (tmp_path / 'taken' / pretrained.WEIGHTS).read_bytes() == before


@pytest.mark.slow  # a `python -m dxnet_jax.evaluate` subprocess
def test_measure_records_scores_and_rewrites_the_card(tmp_path, monkeypatch):
  crops = tmp_path / 'crops'
  crops.mkdir()
  for i, box in enumerate(((0, 0, 48, 48), (64, 64, 112, 112))):
    Image.open(paths.data_root() / 'Set12/01.png').crop(box).save(crops / f'{i}.png')
  _copy(SHIPPED[1], tmp_path / 'models' / 'copy')
  monkeypatch.setenv(pretrained.ENV_VAR, str(tmp_path / 'models'))
  measured = pretrained.measure('copy', sets=[str(crops)])
  assert measured == pretrained.manifest('copy')['measured']
  (score,) = measured['scores']
  assert score['num_images'] == 2 and score['psnr'] > 20
  assert [image['name'] for image in score['images']] == ['0.png', '1.png']
  for key in ('psnr', 'ssim'):
    assert score[key] == pytest.approx(np.mean([image[key] for image in score['images']]))
  assert measured['weights_dtype'] == 'float16'
  card = (tmp_path / 'models' / 'copy' / pretrained.CARD).read_text()
  assert f"| {crops} | 2 | {score['psnr']:.2f} |" in card


@pytest.mark.parametrize(
    'name', [n for n in NAMES if pretrained.manifest(n)['config']['data'].get('level_map')]
)
def test_blind_cards_score_every_level_with_the_estimated_level_within_0_1_db(name):
  info = pretrained.manifest(name)
  rows = info['measured_levels']['scores']
  assert [(r['set'], r['sigma']) for r in rows] == [
      (s, sigma) for sigma in pretrained.BLIND_SIGMAS for s in pretrained.benchmark_sets(info)
  ]
  for row in rows:
    assert abs(row['psnr_estimated_level'] - row['psnr']) <= 0.1, row
