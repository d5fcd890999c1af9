"""The trainer: outputs, exact resume (also after SIGKILL), SIGTERM, NaN, foreign checkpoints,
config validation, and the jit / pmap / single-device paths agreeing.

A tiny gray DxNet denoiser (1-1 trunk, k=4) on small random images keeps every run to seconds.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from dxnet_jax import models
from dxnet_jax import train
from dxnet_jax.train import checkpoint as ckpt_lib
from dxnet_jax.train import checks
from dxnet_jax.train import optim
from dxnet_jax.train import tasks
from dxnet_jax.train.state import create_train_state

REPO = Path(__file__).resolve().parents[1]

CONFIG_FILE = """\
import os

from dxnet_jax.train import defaults


def get_config():
  here = os.path.dirname(os.path.abspath(__file__))
  config = defaults.base_config(
      'denoising', 'dxnet_denoise_444', (16, 16, 1),
      train_dirs=(os.path.join(here, 'images'),), validation_set=None, holdout=2,
      patch_size=16, patches_per_epoch=24, validation_crop=16, eval_sets=(), sigma=25.0,
      prefetch=0)
  config.model.blocks = (1, 1)
  config.model.growth_rate = 4
  config.model.stem_features = 8
  config.batch_size = 8
  config.num_steps = 9
  config.log_every_steps = 1
  config.checkpoint_every_steps = 1
  config.final_eval = False
  config.async_checkpoints = False
  config.optim = defaults.optim_config('adam', learning_rate=1e-3)
  return config
"""


@pytest.fixture(scope='module')
def project(tmp_path_factory):
  """A folder with the tiny config file and its training images."""
  root = tmp_path_factory.mktemp('project')
  images = root / 'images'
  images.mkdir()
  rng = np.random.default_rng(0)
  for i in range(8):
    smooth = rng.random((8, 8)) * 255
    pixels = np.kron(smooth, np.ones((4, 4))) + rng.normal(0, 10, (32, 32))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(images / f'{i}.png')
  (root / 'tiny.py').write_text(CONFIG_FILE)
  return root


def tiny_config(project, **overrides):
  namespace = {'__file__': str(project / 'tiny.py')}
  exec(compile(CONFIG_FILE, str(project / 'tiny.py'), 'exec'), namespace)  # noqa: S102
  config = namespace['get_config']()
  config.update_from_flattened_dict(overrides)
  return config


def final_params(workdir):
  _, variables, _ = ckpt_lib.load_for_inference(str(workdir), which='latest')
  return jax.tree.map(np.asarray, variables)


def assert_trees_equal(a, b, rtol=1e-6, atol=1e-7):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


@pytest.fixture(scope='module')
def reference(project, tmp_path_factory):
  """An uninterrupted 9-step run: the ground truth every resumed run must reproduce."""
  workdir = tmp_path_factory.mktemp('reference')
  results = train.train_and_evaluate(tiny_config(project), str(workdir))
  return workdir, results


# The tests that read `reference` share one worker, so that it is trained once per suite run.
REFERENCE = pytest.mark.xdist_group('train_reference')


@pytest.mark.slow  # it trains `reference` (9 steps)
@REFERENCE
def test_a_run_writes_its_outputs(reference):
  workdir, results = reference
  assert (workdir / 'config.json').exists() and (workdir / 'results.json').exists()
  assert list((workdir / 'tensorboard').iterdir())
  records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  train_steps = [r['step'] for r in records if r['split'] == 'train']
  assert train_steps == list(range(1, 10))
  assert {'loss', 'psnr', 'learning_rate', 'images_per_second'} <= set(records[0])
  assert any(r['split'] == 'validation' for r in records)
  # One manager keeps the last 3 checkpoints and the best validated one.
  best = results['best_validation']
  assert results['steps'] == 9 and best['metric'] == 'psnr'
  assert _saved_steps(workdir) == sorted({best['step'], 7, 8, 9})
  assert not (workdir / 'checkpoints/best').exists()
  psnrs = {r['step']: r['psnr'] for r in records if r['split'] == 'validation'}
  assert (
      best['value'] == pytest.approx(max(psnrs.values())) and psnrs[best['step']] == best['value']
  )


@pytest.mark.slow
@REFERENCE
def test_stopping_and_resuming_matches_an_uninterrupted_run(project, reference, tmp_path):
  train.train_and_evaluate(tiny_config(project, num_steps=4), str(tmp_path))
  train.train_and_evaluate(tiny_config(project), str(tmp_path))
  assert_trees_equal(final_params(tmp_path), final_params(reference[0]))


def _rewrite_in_the_two_manager_layout(project, workdir, latest, best_step, best_value):
  """Rewrites `workdir`'s checkpoints as the trainer wrote them before one manager kept both:
  `checkpoints/latest` (the `latest` steps, no orbax metrics) and `checkpoints/best` (one step,
  its validation value in meta['best']), each an orbax manager of Composite(state, meta)."""
  config = tiny_config(project)
  model = models.create(config.model)
  tx = optim.make_optimizer(config.optim, config.num_steps)
  abstract = jax.eval_shape(lambda: create_train_state(model, tx, (1, 16, 16, 1), 0))
  checkpoints = ckpt_lib.Checkpoints(str(workdir), tasks.get(config.task), async_save=False)
  saved = {
      step: checkpoints.restore(ckpt_lib.abstract_like(abstract), step)
      for step in (*latest, best_step)
  }
  checkpoints.close()
  shutil.rmtree(workdir / 'checkpoints')
  record = {'metric': 'psnr', 'value': best_value, 'step': best_step, 'epoch': best_step // 3}
  for which, steps, keep in (('latest', latest, 3), ('best', (best_step,), 1)):
    manager = ocp.CheckpointManager(
        workdir / 'checkpoints' / which,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=False
        ),
        item_names=('state', 'meta'),
    )
    for step in steps:
      state, meta = saved[step]
      meta = {**meta, 'best': record}
      manager.save(
          step,
          args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
          force=True,
      )
    manager.close()
  return jax.tree.map(np.asarray, saved[best_step][0].variables())


@pytest.mark.slow
@REFERENCE
def test_a_workdir_of_the_two_manager_layout_resumes_and_keeps_its_best(
    project, reference, tmp_path
):
  train.train_and_evaluate(tiny_config(project, num_steps=7, checkpoint_keep=10), str(tmp_path))
  # A best checkpoint that the latest folder no longer holds, with a value no later epoch beats.
  best = _rewrite_in_the_two_manager_layout(project, tmp_path, (5, 6, 7), 3, 99.0)
  _, variables, _ = ckpt_lib.load_for_inference(str(tmp_path), which='best')
  assert_trees_equal(jax.tree.map(np.asarray, variables), best, rtol=0, atol=0)

  results = train.train_and_evaluate(tiny_config(project), str(tmp_path))
  assert_trees_equal(final_params(tmp_path), final_params(reference[0]))
  assert not (tmp_path / 'checkpoints/best').exists()
  assert _saved_steps(tmp_path) == [3, 7, 8, 9]
  assert results['best_validation'] == {'metric': 'psnr', 'value': 99.0, 'step': 3, 'epoch': 1}
  _, variables, _ = ckpt_lib.load_for_inference(str(tmp_path), which='best')
  assert_trees_equal(jax.tree.map(np.asarray, variables), best, rtol=0, atol=0)


def _main(project, workdir, *flags):
  env = dict(os.environ, PYTHONUNBUFFERED='1')
  return subprocess.Popen(
      [
          sys.executable,
          '-m',
          'dxnet_jax.main',
          f'--config={project / "tiny.py"}',
          f'--workdir={workdir}',
          *flags,
      ],
      cwd=REPO,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
  )


def _saved_steps(workdir):
  folder = Path(workdir) / 'checkpoints' / 'latest'
  if not folder.exists():
    return []
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def _wait_for_checkpoint(proc, workdir, after, timeout=240):
  start = time.time()
  while time.time() - start < timeout:
    steps = _saved_steps(workdir)
    if steps and steps[-1] > after:
      return steps[-1]
    if proc.poll() is not None:
      return None
    time.sleep(0.05)
  raise TimeoutError('no checkpoint appeared')


@pytest.mark.slow
@REFERENCE
def test_sigkill_at_random_points_then_restart_ends_like_an_uninterrupted_run(
    project, reference, tmp_path
):
  rng = random.Random(0)
  last, kills = 0, 0
  for _ in range(2):
    proc = _main(project, tmp_path)
    saved = _wait_for_checkpoint(proc, tmp_path, last)
    if saved is None:
      break
    time.sleep(rng.uniform(0.0, 1.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    last = _saved_steps(tmp_path)[-1]
    kills += proc.returncode == -signal.SIGKILL and last < 9
  proc = _main(project, tmp_path)
  out = proc.communicate(timeout=300)[0]
  assert proc.returncode == 0, out[-3000:]
  assert kills >= 1  # a faster trainer must not turn this into runs that simply finish
  assert_trees_equal(final_params(tmp_path), final_params(reference[0]))


@pytest.mark.slow
def test_sigterm_saves_and_exits_then_the_run_resumes_to_the_uninterrupted_result(
    project, tmp_path
):
  # 60 steps, so that the notice always lands mid-run; the reference runs the same 60 steps, in
  # this process (as `reference` does: the command computes what train_and_evaluate does).
  flags = ('--config.checkpoint_every_steps=0', '--config.num_steps=60')
  uninterrupted = tmp_path / 'uninterrupted'
  train.train_and_evaluate(
      tiny_config(project, checkpoint_every_steps=0, num_steps=60), str(uninterrupted)
  )
  workdir = tmp_path / 'preempted'
  proc = _main(project, workdir, *flags)
  # No periodic saves: wait for the first epoch-end save (step 3), then send SIGTERM.
  assert _wait_for_checkpoint(proc, workdir, 0) is not None
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=120)[0]
  assert proc.returncode == 143, out[-3000:]
  assert 'Preempted (SIGTERM) at step' in out
  stopped_at = _saved_steps(workdir)[-1]
  assert 3 <= stopped_at < 60
  proc = _main(project, workdir, *flags)
  out = proc.communicate(timeout=300)[0]
  assert proc.returncode == 0, out[-3000:]
  assert f'Resumed {workdir} from step {stopped_at}' in out
  assert _saved_steps(workdir)[-1] == 60
  assert_trees_equal(final_params(workdir), final_params(uninterrupted))


@pytest.mark.slow
@REFERENCE
def test_cpu_devices_flag_trains_data_parallel_to_the_same_parameters(project, reference, tmp_path):
  proc = _main(project, tmp_path, '--cpu_devices=2')
  out = proc.communicate(timeout=300)[0]
  assert proc.returncode == 0, out[-3000:]
  assert '2 local / 2 global devices (cpu)' in out

  # The global batch split over two devices: the same steps up to float summation order. Losses
  # step by step, then parameters (conv biases that feed a BatchNorm get pure rounding noise as
  # gradient, which Adam scales up to a step of its own, hence the absolute tolerance).
  def train_losses(workdir):
    records = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
    return [r['loss'] for r in records if r['split'] == 'train']

  np.testing.assert_allclose(train_losses(tmp_path), train_losses(reference[0]), rtol=1e-4)
  assert_trees_equal(final_params(tmp_path), final_params(reference[0]), rtol=1e-3, atol=1e-4)


def test_cpu_devices_flag_rejects_zero(project, tmp_path):
  proc = _main(project, tmp_path, '--cpu_devices=0')
  out = proc.communicate(timeout=120)[0]
  assert proc.returncode != 0
  assert '--cpu_devices=0' in out and 'positive integer' in out
  assert not (tmp_path / 'checkpoints').exists()


@pytest.mark.slow
def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(project, tmp_path):
  train.train_and_evaluate(tiny_config(project, num_steps=3), str(tmp_path))
  before = {p.name: p.stat().st_mtime for p in (tmp_path / 'checkpoints/latest').iterdir()}
  bad = tiny_config(project, **{'optim.learning_rate': float('inf')})
  with pytest.raises(
      FloatingPointError, match=r'diverged at step 4.*update_norm is (nan|inf).*step 3'
  ):
    train.train_and_evaluate(bad, str(tmp_path))
  after = {p.name: p.stat().st_mtime for p in (tmp_path / 'checkpoints/latest').iterdir()}
  assert after == before
  # The run can be resumed from the kept checkpoint with a sane config.
  train.train_and_evaluate(tiny_config(project, num_steps=4), str(tmp_path))
  assert _saved_steps(tmp_path)[-1] == 4


@pytest.mark.slow  # alone in a quick run, it trains `reference`
@REFERENCE
def test_a_workdir_of_another_model_is_refused_and_left_untouched(project, reference):
  workdir = reference[0]
  before = sorted(str(p) for p in workdir.rglob('*'))
  other = tiny_config(project, **{'model.growth_rate': 6})
  with pytest.raises(train.ForeignCheckpointError, match='another|other parameter shapes'):
    train.train_and_evaluate(other, str(workdir))
  assert sorted(str(p) for p in workdir.rglob('*')) == before


@pytest.mark.parametrize(
    'overrides, message',
    [
        ({'model.name': 'dxnet_k12_13'}, 'Unknown model'),
        ({'model.name': 'dxnet_k12_12'}, 'classification model but config.task'),
        ({'model.blocks': (1, 0)}, 'blocks must be a non-empty'),
        ({'task': 'segmentation'}, 'Unknown task'),
        ({'optim.name': 'lamb'}, 'optim.name'),
        ({'optim.schedule': 'piecewise', 'optim.decay_at': (1.5,)}, 'decay_at'),
        ({'batch_size': 6}, 'multiple of the 4 devices'),
    ],
)
def test_bad_configs_fail_before_compiling_with_a_clear_message(project, overrides, message):
  config = tiny_config(project)
  with config.unlocked():
    for key, value in overrides.items():
      node = config
      *parents, leaf = key.split('.')
      for p in parents:
        node = node[p]
      node[leaf] = value
  with pytest.raises(checks.ConfigError, match=message):
    checks.validate_config(config, device_count=4)


def test_missing_data_directory_names_the_path(project, tmp_path):
  config = tiny_config(project, **{'data.train_dirs': ('no_such_folder_here',)})
  with pytest.raises(FileNotFoundError, match='no_such_folder_here'):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / 'checkpoints').exists()


PARALLEL_SCRIPT = textwrap.dedent("""
    import os, sys
    import jax, numpy as np
    sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[1])))
    from dxnet_jax import data as data_lib, models, sharding
    from dxnet_jax.train import optim, steps, tasks
    from dxnet_jax.train.state import create_train_state
    import importlib.util
    spec = importlib.util.spec_from_file_location('tiny', sys.argv[1])
    tiny = importlib.util.module_from_spec(spec); spec.loader.exec_module(tiny)
    config = tiny.get_config()
    config.optim = __import__('dxnet_jax.train.defaults', fromlist=['x']).optim_config(
        'sgd', learning_rate=0.05)
    assert jax.device_count() == 4
    data = data_lib.build(config, global_batch_size=8, seed=0)
    task = tasks.get('denoising')
    tx = optim.make_optimizer(config.optim, 3)
    lr_fn = lambda s: config.optim.learning_rate
    results = {}
    for mode, devices in (('jit', None), ('pmap', None), ('single', jax.devices()[:1])):
      model_config = config.model.to_dict()
      if mode == 'pmap':
        model_config['bn_axis_name'] = steps.PMAP_AXIS
      model = models.create(model_config)
      mesh = sharding.data_mesh(devices) if devices else None
      runner = steps.Runner('pmap' if mode == 'pmap' else 'jit', task, lr_fn, mesh=mesh)
      state = runner.put_state(create_train_state(model, tx, (1, 16, 16, 1), 0))
      for batch, _ in zip(data.train.iterate(0), range(3)):
        state, metrics = runner.train(state, batch)
      state = jax.device_get(runner.get_state(state))
      results[mode] = (state.params, state.batch_stats)
    # Worst excess over an allclose(rtol=1e-4, atol=1e-6) bound: <= 0 means every value agrees.
    # (A relative error alone is meaningless for leaves that stay near zero, such as a conv bias
    # feeding BatchNorm, whose gradient is pure rounding noise.)
    worst = -1.0
    for mode in ('pmap', 'single'):
      for a, b in zip(jax.tree.leaves(results['jit']), jax.tree.leaves(results[mode])):
        worst = max(worst, float(np.max(np.abs(a - b) - 1e-6 - 1e-4 * np.abs(a))))
    print('WORST', worst)
""")


@pytest.mark.slow
def test_jit_pmap_and_single_device_reach_the_same_parameters_and_batch_stats(project, tmp_path):
  script = tmp_path / 'parallel.py'
  script.write_text(PARALLEL_SCRIPT)
  # The suite's compile options (tests/conftest.py) stay; the device count is added.
  env = dict(
      os.environ,
      XLA_FLAGS=(
          os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=4'
      ).strip(),
      JAX_PLATFORMS='cpu',
      PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')])),
  )
  out = subprocess.run(
      [sys.executable, str(script), str(project / 'tiny.py')],
      env=env,
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  worst = float(out.stdout.split('WORST')[-1])
  assert worst <= 0.0
