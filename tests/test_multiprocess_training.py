"""The trainer across processes: `python -m dxnet_jax.main` as 2 processes x 2 CPU devices on
localhost (jax.distributed, gloo) against 1 process x 4 devices; checkpoints that move between
the two; a process killed mid-run, and a restart that resumes.

A tiny gray denoiser (DenseNet 1-1 trunk, k=4) on eight random 32x32 images keeps every run to
seconds. Run as a script this file is also the checkpoint inspector the tests start:
``python tests/test_multiprocess_training.py inspect WORKDIR OUT.npz [WORKDIR OUT.npz ...]``; it
also writes what `load_for_inference` reads from the first workdir (``WORKDIR.loaded.npz``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import multiprocess_helpers as mp

HEARTBEAT_S = 5  # heartbeat timeout of the run whose process is killed
DETECTION_BOUND_S = HEARTBEAT_S + 20  # heartbeat timeout + one interval + slack on 2 loaded cores

CONFIG = """\
import os

from dxnet_jax.train import defaults


def get_config():
  here = os.path.dirname(os.path.abspath(__file__))
  config = defaults.base_config(
      'denoising', 'densenet_denoise_444', (16, 16, 1),
      train_dirs=(os.path.join(here, 'train'),), validation_set=None, holdout=2,
      patch_size=16, patches_per_epoch=32, validation_crop=16, eval_sets=(), sigma=25.0,
      prefetch=0)
  config.model.blocks = (1, 1)
  config.model.growth_rate = 4
  config.model.stem_features = 8
  config.batch_size = 8
  config.num_steps = 6
  config.log_every_steps = 1
  config.checkpoint_every_steps = 2
  config.final_eval = False
  # SGD, not Adam: Adam turns the float-rounding noise of a gradient that is zero in exact
  # arithmetic (a conv bias followed by BatchNorm) into +-learning_rate steps, so runs that
  # differ only in reduction order would disagree by ~1e-3 in that bias.
  config.optim = defaults.optim_config('sgd', learning_rate=0.05)
  return config
"""


# --------------------------------------------------------------------------- helpers


def train(
    config: Path,
    workdir: Path,
    logdir: Path,
    *,
    processes: int,
    devices: int,
    overrides=(),
    tag: str = 'run',
    heartbeat_s: int = mp.HEARTBEAT_S,
) -> mp.Run:
  """Starts the trainer as `processes` processes; its logs are `logdir/TAG.pI.{out,err}`."""
  args = ['-m', 'dxnet_jax.main', '--config', str(config), '--workdir', str(workdir), *overrides]
  return mp.launch(
      args, logdir, processes=processes, devices=devices, name=tag, heartbeat_s=heartbeat_s
  )


def metrics(workdir: Path, split: str = 'train') -> list[dict]:
  rows = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  return [r for r in rows if r['split'] == split]


def saved_steps(workdir: Path) -> list[int]:
  """Steps of the complete checkpoints (orbax renames a checkpoint's folder when done)."""
  root = workdir / 'checkpoints' / 'latest'
  if not root.is_dir():
    return []
  return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit())


def inspect(logdir: Path, *workdirs: Path) -> list[dict[str, np.ndarray]]:
  """Restore each workdir's latest checkpoint in one fresh 1-process, 1-device run (which also
  runs `load_for_inference` on the first: `_load_for_inference_main`)."""
  args = [str(p) for w in workdirs for p in (w, w.parent / f'{w.name}.npz')]
  result = subprocess.run(
      [sys.executable, str(Path(__file__).resolve()), 'inspect', *args],
      cwd=mp.REPO,
      env=mp.process_env(1),
      capture_output=True,
      text=True,
      timeout=180,
  )
  (logdir / f"inspect.{'.'.join(w.name for w in workdirs)}.err").write_text(result.stderr)
  assert result.returncode == 0, result.stderr[-4000:]
  found = []
  for workdir in workdirs:
    with np.load(workdir.parent / f'{workdir.name}.npz') as f:
      found.append({k: f[k] for k in f.files})
  return found


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  """The tiny config and its eight training images."""
  from PIL import Image

  root = tmp_path_factory.mktemp('mp_train')
  (root / 'train').mkdir()
  rng = np.random.default_rng(0)
  for i in range(8):
    Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8), 'L').save(
        root / 'train' / f'img_{i:02d}.png'
    )
  (root / 'tiny.py').write_text(CONFIG)
  return root


@pytest.fixture(scope='module')
def inspected(two_and_one):
  """The latest checkpoints of the 2x2 and the 1x4 run, as the trainer restores them in a fresh
  1-device process (one process for both; two tests read them)."""
  _, two, one, logs = two_and_one
  return inspect(logs, two, one)


@pytest.fixture(scope='module')
def two_and_one(setup):
  """6 steps as 2 processes x 2 devices and as 1 process x 4 devices, run side by side."""
  config, logs = setup / 'tiny.py', setup / 'logs'
  two, one = setup / 'two_x2', setup / 'one_x4'
  t0 = time.monotonic()
  with (
      train(config, two, logs, processes=2, devices=2, tag='two') as two_run,
      train(config, one, logs, processes=1, devices=4, tag='one') as one_run,
  ):
    two_run.wait(timeout=600)
    one_run.wait(timeout=600)
  print(f'2x2 and 1x4 trainings of 6 steps: {time.monotonic() - t0:.1f} s')
  return config, two, one, logs


# --------------------------------------------------------------------------- tests

# The tests of the 2x2 and 1x4 runs share one worker, so that the runs and the restore of their
# checkpoints happen once.
MP_TRAINING = pytest.mark.xdist_group('multiprocess_training')


@pytest.mark.slow
@MP_TRAINING
def test_two_processes_reach_the_parameters_of_one(two_and_one, inspected):
  _, two, one, logs = two_and_one
  assert saved_steps(two) == saved_steps(one) == [2, 4, 6]
  a, b = inspected
  assert sorted(a) == sorted(b)
  assert int(a['step']) == int(b['step']) == 6
  assert any(k.startswith('params/') for k in a) and any(k.startswith('batch_stats/') for k in a)
  for key in a:
    np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)
  la = [r['loss'] for r in metrics(two)]
  lb = [r['loss'] for r in metrics(one)]
  assert len(la) == len(lb) == 6
  np.testing.assert_allclose(la, lb, rtol=1e-5)
  assert la[0] != la[-1]  # it trained
  va, vb = metrics(two, 'validation'), metrics(one, 'validation')
  assert [r['step'] for r in va] == [r['step'] for r in vb] and va
  np.testing.assert_allclose([r['loss'] for r in va], [r['loss'] for r in vb], rtol=1e-4)
  # Only process 0 writes the run's files; process 1 logs no progress lines of its own.
  assert (two / 'config.json').exists() and (two / 'results.json').exists()
  # Gloo prints a line for each device group and local rank it connects. Two lines per local
  # device are the two groups dxnet_jax.distributed connects at start-up; a group first used
  # later in the run would be exposed to XLA's 30 s rendezvous (see dxnet_jax/distributed.py).
  for pid in range(2):
    out = (logs / f'two.p{pid}.out').read_text()
    assert out.count(' is connected to ') == 2 * 2, out


@pytest.mark.slow
@MP_TRAINING
def test_two_process_checkpoint_resumes_in_one_process(two_and_one, tmp_path):
  """Training continues from the 2-process checkpoint in a 1-process x 4-device run."""
  config, two, _, logs = two_and_one
  work = tmp_path / 'continued'
  subprocess.run(['cp', '-r', str(two), str(work)], check=True)
  overrides = ['--config.num_steps=8']
  with train(
      config, work, logs, processes=1, devices=4, tag='continue', overrides=overrides
  ) as run:
    run.wait(timeout=480)
  assert (
      'Resumed' in (logs / 'continue.p0.err').read_text()
      and 'from step 6' in (logs / 'continue.p0.err').read_text()
  )
  steps = [r['step'] for r in metrics(work)]
  assert steps == [1, 2, 3, 4, 5, 6, 7, 8]  # 1-6 from the 2-process run, then 7-8 here
  assert saved_steps(work)[-1] == 8


@pytest.mark.slow
@MP_TRAINING
def test_load_for_inference_on_one_device(two_and_one, inspected):
  """`load_for_inference` (evaluate CLI, analysis) reads a checkpoint written by 2 processes
  x 2 devices in a plain 1-device process: the same parameters and statistics as the trainer's
  own restore of it (the inspector), and a model that runs on them."""
  # The inspector's process (a plain 1-device one, no trainer state in it) loaded it before
  # restoring anything: one process start serves both.
  two = two_and_one[1]
  with np.load(two.parent / f'{two.name}.loaded.npz') as f:
    loaded = {k: f[k] for k in f.files}
  restored = inspected[0]
  expected = {k: v for k, v in restored.items() if k.startswith(('params/', 'batch_stats/'))}
  assert expected and sorted(expected) == sorted(k for k in loaded if k != 'output')
  for key, value in expected.items():
    np.testing.assert_array_equal(loaded[key], value, err_msg=key)
  assert loaded['output'].shape == (1, 16, 16, 1) and np.all(np.isfinite(loaded['output']))


@pytest.mark.slow
def test_killed_process_stops_the_run_and_a_restart_resumes(setup, tmp_path):
  config, logs = setup / 'tiny.py', tmp_path / 'logs'
  work = tmp_path / 'killed'
  long_run = ['--config.num_steps=100000', '--config.checkpoint_every_steps=5']
  with train(
      config,
      work,
      logs,
      processes=2,
      devices=2,
      tag='first',
      overrides=long_run,
      heartbeat_s=HEARTBEAT_S,
  ) as run:
    run.wait_until(
        lambda: any(s >= 10 for s in saved_steps(work)), 480, 'a checkpoint at step >= 10 exists'
    )
    os.kill(run[1].pid, signal.SIGKILL)
    t0 = time.monotonic()
    run.wait_exit(0, DETECTION_BOUND_S + 60, 'process 1 was killed')
    elapsed = time.monotonic() - t0
  p0 = run[0]
  print(f'process 0 exited {elapsed:.1f} s after process 1 was killed ({p0.status()})')
  assert p0.returncode != 0
  assert elapsed < DETECTION_BOUND_S
  assert mp.peer_death_reported(p0.stderr_text()), mp.tail(p0.stderr)

  last = saved_steps(work)[-1]
  assert last >= 10
  t0 = time.monotonic()
  overrides = [f'--config.num_steps={last + 3}', '--config.checkpoint_every_steps=5']
  with train(config, work, logs, processes=2, devices=2, tag='restart', overrides=overrides) as run:
    run.wait(timeout=600)
  print(f'restart from step {last}: {time.monotonic() - t0:.1f} s')
  assert f'from step {last}' in (logs / 'restart.p0.err').read_text()
  steps = [r['step'] for r in metrics(work)]
  assert steps[-3:] == [last + 1, last + 2, last + 3]
  assert saved_steps(work)[-1] == last + 3


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_one_step_and_the_run_resumes(setup, tmp_path):
  """JAX's preemption service carries one process's SIGTERM to the other: both save the same
  step through orbax's reached_preemption and exit with 143; a restart resumes from it."""
  config, logs = setup / 'tiny.py', tmp_path / 'logs'
  work = tmp_path / 'preempted'
  long_run = ['--config.num_steps=100000', '--config.checkpoint_every_steps=0']
  with train(config, work, logs, processes=2, devices=2, tag='first', overrides=long_run) as run:
    run.wait_until(lambda: bool(saved_steps(work)), 480, 'an epoch-end checkpoint exists')
    os.kill(run[1].pid, signal.SIGTERM)
    run.wait_exit(0, 240, 'process 1 got SIGTERM')
    run.wait_exit(1, 60, 'process 1 got SIGTERM')
  assert [p.returncode for p in run] == [143, 143], run.report('both exit as preempted')
  stopped = [
      int(p.stderr_text().split('Preempted (SIGTERM) at step ')[1].split(':')[0]) for p in run
  ]
  assert stopped[0] == stopped[1] == saved_steps(work)[-1]
  overrides = [f'--config.num_steps={stopped[0] + 2}', '--config.checkpoint_every_steps=0']
  with train(config, work, logs, processes=2, devices=2, tag='resume', overrides=overrides) as run:
    run.wait(timeout=600)
  assert f'from step {stopped[0]}' in (logs / 'resume.p0.err').read_text()
  assert saved_steps(work)[-1] == stopped[0] + 2


# --------------------------------------------------------------------------- inspector


def _load_for_inference_main(workdir: str, out: str) -> None:
  """`load_for_inference`'s variables of the latest checkpoint, and the model's output on them
  for a fixed 16x16 input, saved as npz."""
  import jax

  from dxnet_jax.train import checkpoint as ckpt_lib

  model, variables, _ = ckpt_lib.load_for_inference(workdir, 'latest')
  flat = {
      k + '/' + jax.tree_util.keystr(p): np.asarray(x)
      for k in variables
      for p, x in jax.tree_util.tree_leaves_with_path(variables[k])
  }
  x = np.linspace(0, 1, 16 * 16, dtype=np.float32).reshape(1, 16, 16, 1)
  flat['output'] = np.asarray(model.apply(variables, x, train=False))
  np.savez(out, **flat)


def _inspect_main(workdir: str, out: str) -> None:
  """Restore the latest checkpoint onto this process's one device and save it as npz."""
  import jax

  from dxnet_jax import models
  from dxnet_jax.train import checkpoint as ckpt_lib
  from dxnet_jax.train import optim as optim_lib
  from dxnet_jax.train import tasks
  from dxnet_jax.train.state import create_train_state

  config = ckpt_lib.load_config(workdir)
  model = models.create(config.model)
  tx = optim_lib.make_optimizer(config.optim, total_steps=1)
  shape = (1,) + tuple(config.input_shape)
  abstract = jax.eval_shape(lambda: create_train_state(model, tx, shape, 0))
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  checkpoints = ckpt_lib.Checkpoints(workdir, tasks.get(config.task), async_save=False)
  state, _ = checkpoints.restore(
      ckpt_lib.abstract_like(abstract, jax.tree.map(lambda _: one, abstract))
  )
  checkpoints.close()
  flat = {'step': np.asarray(state.step)}
  for name in ('params', 'batch_stats', 'opt_state'):
    for path, leaf in jax.tree_util.tree_leaves_with_path(getattr(state, name)):
      flat[name + '/' + jax.tree_util.keystr(path)] = np.asarray(leaf)
  np.savez(out, **flat)


if __name__ == '__main__':
  if len(sys.argv) < 4 or len(sys.argv) % 2 or sys.argv[1] != 'inspect':
    sys.exit('usage: test_multiprocess_training.py inspect WORKDIR OUT.npz [WORKDIR OUT.npz ...]')
  # First, before this process restores anything: load_for_inference as a fresh process runs it.
  _load_for_inference_main(
      sys.argv[2], str(Path(sys.argv[2]).parent / f'{Path(sys.argv[2]).name}.loaded.npz')
  )
  for i in range(2, len(sys.argv), 2):
    _inspect_main(sys.argv[i], sys.argv[i + 1])
