"""Tests of dxnet_jax.distributed and dxnet_jax.sharding.

The multi-process tests start real processes on localhost (JAX's coordination service plus gloo
CPU collectives, 2 CPU devices each). Run as a script this file is also the worker those tests
start: ``python tests/test_distributed.py {sgd,loop} ...`` with the DXNET_* variables set.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import multiprocess_helpers as mp

WORKER = str(Path(__file__).resolve())
HEARTBEAT_S = 5  # heartbeat timeout the dying-process tests run with
# A survivor must be gone within this long after its peer died: heartbeat timeout, one heartbeat
# interval, and slack for a loaded 2-core machine. JAX's defaults would take 100-300 s.
DETECTION_BOUND_S = HEARTBEAT_S + 20
# Longer than XLA's 30 s gloo rendezvous, which collectives connected at start-up do not wait in.
LATE_S = 40


# --------------------------------------------------------------------------- resolution (pure)


@pytest.fixture
def dist(monkeypatch):
  """The module with a fresh recorded state and an environment without DXNET_/JAX_ setup."""
  from dxnet_jax import distributed

  for var in list(os.environ):
    if var.startswith('DXNET_') or var in (
        'JAX_COORDINATOR_ADDRESS',
        'JAX_NUM_PROCESSES',
        'JAX_PROCESS_ID',
        'JAX_LOCAL_DEVICE_IDS',
    ):
      monkeypatch.delenv(var)
  return distributed


def test_nothing_configured_is_single(dist):
  plan = dist.plan_initialization(env={}, tpu_detected=False)
  assert plan.kind == 'single'


def test_explicit_from_dxnet_env(dist):
  env = {
      'DXNET_COORDINATOR': '10.0.0.1:1234',
      'DXNET_NUM_PROCESSES': '4',
      'DXNET_PROCESS_ID': '3',
      'DXNET_LOCAL_DEVICE_IDS': '0, 1',
  }
  plan = dist.plan_initialization(env=env, tpu_detected=True)
  assert plan == dist.Plan('explicit', '10.0.0.1:1234', 4, 3, (0, 1), plan.reason)


def test_jax_style_env_and_precedence(dist):
  env = {'JAX_COORDINATOR_ADDRESS': 'h:1', 'JAX_NUM_PROCESSES': '2', 'JAX_PROCESS_ID': '1'}
  plan = dist.plan_initialization(env=env, tpu_detected=False)
  assert (plan.kind, plan.coordinator_address, plan.num_processes, plan.process_id) == (
      'explicit',
      'h:1',
      2,
      1,
  )
  env['DXNET_COORDINATOR'] = 'd:2'  # DXNET_* wins over JAX_*
  assert dist.plan_initialization(env=env, tpu_detected=False).coordinator_address == 'd:2'
  plan = dist.plan_initialization('a:3', 8, 5, env=env, tpu_detected=False)  # arguments win
  assert (plan.coordinator_address, plan.num_processes, plan.process_id) == ('a:3', 8, 5)


@pytest.mark.parametrize('drop', ['DXNET_COORDINATOR', 'DXNET_NUM_PROCESSES', 'DXNET_PROCESS_ID'])
def test_partial_configuration_is_an_error(dist, drop):
  env = {'DXNET_COORDINATOR': 'h:1', 'DXNET_NUM_PROCESSES': '2', 'DXNET_PROCESS_ID': '0'}
  del env[drop]
  with pytest.raises(ValueError, match=f'but not .*{drop}'):
    dist.plan_initialization(env=env, tpu_detected=False)


def test_partial_arguments_error_names_what_is_missing(dist):
  with pytest.raises(
      ValueError,
      match=r'num_processes \(from argument num_processes\).*'
      r'not coordinator_address .*process_id',
  ):
    dist.plan_initialization(num_processes=2, env={}, tpu_detected=False)


@pytest.mark.parametrize(
    'env,match',
    [
        (
            {'DXNET_COORDINATOR': 'h:1', 'DXNET_NUM_PROCESSES': 'two', 'DXNET_PROCESS_ID': '0'},
            'DXNET_NUM_PROCESSES must be an integer',
        ),
        (
            {'DXNET_COORDINATOR': 'h:1', 'DXNET_NUM_PROCESSES': '2', 'DXNET_PROCESS_ID': '2'},
            r'process_id \(2, from DXNET_PROCESS_ID\) must be < num_processes',
        ),
        (
            {'DXNET_COORDINATOR': 'h:1', 'DXNET_NUM_PROCESSES': '0', 'DXNET_PROCESS_ID': '0'},
            'must be >= 1',
        ),
        (
            {'DXNET_COORDINATOR': 'hostonly', 'DXNET_NUM_PROCESSES': '2', 'DXNET_PROCESS_ID': '0'},
            "must be 'host:port'",
        ),
        ({'DXNET_DISTRIBUTED': 'sometimes'}, 'DXNET_DISTRIBUTED must be one of'),
        ({'DXNET_LOCAL_DEVICE_IDS': '0,x'}, 'DXNET_LOCAL_DEVICE_IDS must be an integer'),
    ],
)
def test_malformed_values_are_errors(dist, env, match):
  with pytest.raises(ValueError, match=match):
    dist.plan_initialization(env=env, tpu_detected=False)


def test_one_process_and_off_mode_are_single(dist):
  env = {'DXNET_COORDINATOR': 'h:1', 'DXNET_NUM_PROCESSES': '1', 'DXNET_PROCESS_ID': '0'}
  assert dist.plan_initialization(env=env, tpu_detected=False).kind == 'single'
  env = {'DXNET_DISTRIBUTED': 'off', 'DXNET_COORDINATOR': 'h:1'}
  assert dist.plan_initialization(env=env, tpu_detected=True).kind == 'single'


def test_tpu_and_detect_modes(dist):
  assert dist.plan_initialization(env={}, tpu_detected=True).kind == 'tpu'
  plan = dist.plan_initialization(
      env={'DXNET_DISTRIBUTED': 'detect', 'JAX_COORDINATOR_ADDRESS': 'h:9'}, tpu_detected=False
  )
  assert (plan.kind, plan.coordinator_address, plan.num_processes) == ('detect', 'h:9', None)


def test_tpu_detection_from_environment(dist):
  assert dist.on_cloud_tpu_vm({'TPU_WORKER_HOSTNAMES': 't0,t1'})
  assert dist.on_cloud_tpu_vm({'MEGASCALE_COORDINATOR_ADDRESS': 't0'})
  # JAX_PLATFORMS without tpu: the TPUs (if any) are not used, so no TPU start-up.
  assert not dist.on_cloud_tpu_vm({'TPU_WORKER_HOSTNAMES': 't0', 'JAX_PLATFORMS': 'cpu'})
  # This test machine has no TPU chips.
  assert not dist.on_cloud_tpu_vm({})


SINGLE_SCRIPT = """
import os, signal, time
import jax
from jax.experimental import multihost_utils
from dxnet_jax import distributed
info = distributed.initialize()
assert (info.kind, info.process_id, info.num_processes) == ('single', 0, 1), info
assert jax.distributed.is_initialized()
assert distributed.initialize().kind == 'started'  # a second call starts nothing
for step in range(3000):  # steps of 10 ms: the notice reaches the sync point in the background
  if step == 10:
    os.kill(os.getpid(), signal.SIGTERM)  # caught by JAX's preemption service
  if multihost_utils.reached_preemption_sync_point(step):
    print('PREEMPTED', step)
    break
  time.sleep(0.01)
"""


def test_initialize_single_starts_a_runtime_whose_preemption_service_catches_sigterm(tmp_path):
  script = tmp_path / 'single.py'
  script.write_text(SINGLE_SCRIPT)
  out = subprocess.run(
      [sys.executable, str(script)],
      env=mp.process_env(1),
      cwd=mp.REPO,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert int(out.stdout.split('PREEMPTED')[-1]) >= 10


def test_a_single_process_gets_a_heartbeat_timeout_that_outlasts_a_pause(dist, monkeypatch):
  """One process runs the coordination service only for the preemption notice: its heartbeat
  timeout is a week, so a run paused for minutes (SIGSTOP, a laptop asleep) is not aborted by
  its own service on resuming; DXNET_HEARTBEAT_TIMEOUT still sets it."""
  import jax

  calls = []
  monkeypatch.setattr(jax.distributed, 'is_initialized', lambda: False)
  monkeypatch.setattr(jax.distributed, 'initialize', lambda *args, **kw: calls.append(kw))
  assert dist.initialize().kind == 'single'
  assert calls[-1]['heartbeat_timeout_seconds'] >= 24 * 3600
  monkeypatch.setenv('DXNET_HEARTBEAT_TIMEOUT', '30')
  dist.initialize()
  assert calls[-1]['heartbeat_timeout_seconds'] == 30


def test_initialize_partial_env_raises_before_touching_jax(dist, monkeypatch):
  import jax

  monkeypatch.setenv('DXNET_PROCESS_ID', '1')
  with pytest.raises(ValueError, match='DXNET_COORDINATOR'):
    dist.initialize()
  assert not jax.distributed.is_initialized()


# --------------------------------------------------------------------------- helpers, 1 process


def test_single_process_sharding_helpers():
  import jax
  from jax.sharding import PartitionSpec as P

  from dxnet_jax import sharding

  mesh = sharding.data_mesh()
  assert mesh.axis_names == ('data',) and mesh.size == jax.device_count()
  n = jax.device_count()
  local = {
      'x': np.arange(2 * n * 3, dtype=np.float32).reshape(2 * n, 3),
      'y': np.arange(2 * n, dtype=np.int32),
  }
  glob = sharding.global_batch_from_local(local, mesh)
  assert glob['x'].shape == (2 * n, 3)
  assert glob['x'].sharding.spec == P('data')
  back = sharding.fetch(glob)
  np.testing.assert_array_equal(back['x'], local['x'])
  np.testing.assert_array_equal(back['y'], local['y'])


# --------------------------------------------------------------------------- multi-process


def _load(path: Path) -> dict[str, np.ndarray]:
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


@pytest.mark.slow
def test_two_processes_match_one_process_sgd(tmp_path):
  """2 processes x 2 CPU devices give the parameters of 1 process x 4 devices."""
  two_prefix, one_prefix = tmp_path / 'two' / 'params', tmp_path / 'one' / 'params'
  t0 = time.monotonic()
  with (
      mp.launch([WORKER, 'sgd', str(two_prefix)], tmp_path / 'two', processes=2, name='two') as two,
      mp.launch([WORKER, 'sgd', str(one_prefix)], tmp_path / 'one', devices=4, name='one') as one,
  ):
    two.wait(timeout=480)
    one.wait(timeout=480)
  print(f'2x2 and 1x4 SGD runs: {time.monotonic() - t0:.1f} s')
  ref = _load(tmp_path / 'one' / 'params.0.npz')
  assert ref['process_count'] == 1 and ref['device_count'] == 4
  assert len([k for k in ref if k.startswith('params/')]) >= 4
  assert any(k.startswith('batch_stats/') for k in ref)
  for pid in range(2):
    got = _load(tmp_path / 'two' / f'params.{pid}.npz')
    assert got['process_count'] == 2 and got['device_count'] == 4
    assert got['process_index'] == pid
    assert sorted(got) == sorted(ref)
    for key in ref:
      if key.startswith(('params/', 'batch_stats/', 'loss')):
        np.testing.assert_allclose(got[key], ref[key], rtol=2e-5, atol=1e-6, err_msg=key)
  # The run moved the parameters (the comparison is not between two initialisations).
  assert not np.allclose(ref['loss'][0], ref['loss'][-1])


@pytest.mark.slow
def test_a_late_process_is_waited_for(tmp_path):
  """A process that reaches the first collective 40 s after the other (a slower compilation, a
  busy machine) is waited for: initialize() connected the CPU collectives, so XLA's 30 s gloo
  rendezvous is behind them."""
  late = ['--steps', '3', '--late-process', '1', '--late-s', str(LATE_S)]
  with mp.launch([WORKER, 'loop', *late], tmp_path, processes=2) as run:
    run.wait(timeout=LATE_S + 300)
  for process in run:
    assert [line.split()[1] for line in _steps(process)] == ['0', '1', '2']
  waited = float(_steps(run[0])[0].split()[-2])
  print(f'process 0 waited {waited:.1f} s in its first collective for process 1')
  assert waited > 30, _steps(run[0])


def _steps(process: mp.Process) -> list[str]:
  return [line for line in process.stdout_text().splitlines() if line.startswith('step ')]


@pytest.mark.parametrize(
    'victim',
    [
        pytest.param(1, id='worker-dies', marks=pytest.mark.slow),
        pytest.param(0, id='coordinator-dies'),
    ],
)
def test_killed_process_makes_the_other_exit(tmp_path, victim):
  survivor_index = 1 - victim
  with mp.launch(
      [WORKER, 'loop'],
      tmp_path,
      processes=2,
      heartbeat_s=HEARTBEAT_S,
      env={'DXNET_SHUTDOWN_TIMEOUT': '120'},
  ) as run:
    run.wait_until(
        lambda: all('step 5 ' in p.stdout_text() for p in run), 300, 'both processes reach step 5'
    )
    os.kill(run[victim].pid, signal.SIGKILL)
    t0 = time.monotonic()
    run.wait_exit(survivor_index, DETECTION_BOUND_S + 30, f'process {victim} was killed')
    elapsed = time.monotonic() - t0
  survivor = run[survivor_index]
  print(
      f'process {survivor_index} exited {elapsed:.1f} s after process {victim} was killed '
      f'({survivor.status()})'
  )
  assert survivor.returncode != 0
  assert elapsed < DETECTION_BOUND_S
  assert mp.peer_death_reported(survivor.stderr_text()), mp.tail(survivor.stderr)


@pytest.mark.slow
def test_uncaught_exception_fails_fast(tmp_path):
  """An exception in one process stops the other within the heartbeat timeout, not after
  the shutdown timeout (120 s here) that a plain interpreter exit would wait for."""
  with mp.launch(
      [WORKER, 'loop', '--raise-at', '8', '--raise-process', '1'],
      tmp_path,
      processes=2,
      heartbeat_s=HEARTBEAT_S,
      env={'DXNET_SHUTDOWN_TIMEOUT': '120'},
  ) as run:
    run.wait_until(lambda: run[1].returncode is not None, 300, 'process 1 raises')
    t0 = time.monotonic()
    run.wait_exit(0, DETECTION_BOUND_S + 30, 'process 1 raised')
    elapsed = time.monotonic() - t0
  print(f'process 0 exited {elapsed:.1f} s after process 1 raised')
  text1 = run[1].stderr_text()
  assert run[1].returncode == 1, text1[-3000:]
  assert 'RuntimeError: injected failure at step 8' in text1
  assert 'process 1 of 2 failed with an uncaught RuntimeError' in text1
  assert 'another process probably died' not in text1  # its own error, not a lost peer
  assert run[0].returncode != 0
  assert elapsed < DETECTION_BOUND_S
  assert mp.peer_death_reported(run[0].stderr_text())


# --------------------------------------------------------------------------- worker side


def _worker_sgd(out_prefix: str, steps: int = 3) -> None:
  """A tiny conv+BatchNorm classifier trained data-parallel with jit over global arrays."""
  from dxnet_jax import distributed, sharding as dist

  info = distributed.initialize()
  assert distributed.initialize().num_processes == info.num_processes  # starts nothing new
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import optax
  from jax.experimental import multihost_utils
  from jax.sharding import NamedSharding, PartitionSpec as P

  assert (jax.process_count(), jax.process_index()) == (info.num_processes, info.process_id)

  class Net(nn.Module):

    @nn.compact
    def __call__(self, x, train: bool):
      x = nn.Conv(4, (3, 3))(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
      x = nn.relu(x).mean(axis=(1, 2))
      return nn.Dense(3)(x)

  model, tx = Net(), optax.sgd(0.1, momentum=0.9)
  mesh = dist.data_mesh()
  replicated = NamedSharding(mesh, P())
  global_batch = 8
  local = global_batch // jax.process_count()
  rng = np.random.default_rng(0)
  images = rng.normal(size=(steps, global_batch, 6, 6, 2)).astype(np.float32)
  labels = rng.integers(0, 3, size=(steps, global_batch)).astype(np.int32)

  variables = jax.jit(
      lambda k: model.init(k, jnp.zeros((1, 6, 6, 2)), train=False), out_shardings=replicated
  )(jax.random.key(0))
  params, stats = variables['params'], variables['batch_stats']
  opt_state = jax.jit(tx.init, out_shardings=replicated)(params)

  @jax.jit
  def train_step(params, stats, opt_state, batch):
    def loss_fn(p):
      logits, new = model.apply(
          {'params': p, 'batch_stats': stats}, batch['x'], train=True, mutable=['batch_stats']
      )
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch['y']).mean()
      return loss, new['batch_stats']

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state, loss

  losses = []
  p = info.process_id
  for s in range(steps):
    rows = slice(p * local, (p + 1) * local)
    batch = dist.global_batch_from_local({'x': images[s, rows], 'y': labels[s, rows]}, mesh)
    assert batch['x'].shape == (global_batch, 6, 6, 2)
    np.testing.assert_array_equal(dist.fetch(batch['x']), images[s])  # row order
    params, stats, opt_state, loss = train_step(params, stats, opt_state, batch)
    losses.append(float(dist.fetch(loss)))

  out = {
      'process_count': np.array(jax.process_count()),
      'device_count': np.array(jax.device_count()),
      'process_index': np.array(jax.process_index()),
      'loss': np.array(losses),
  }
  for name, tree in (('params', params), ('batch_stats', stats)):
    for path, leaf in jax.tree_util.tree_leaves_with_path(dist.fetch(tree)):
      out[name + '/' + '/'.join(str(getattr(k, 'key', k)) for k in path)] = leaf
  np.savez(f'{out_prefix}.{p}.npz', **out)
  multihost_utils.sync_global_devices('sgd-end')


def _worker_loop(
    raise_at: int | None,
    raise_process: int,
    steps: int,
    late_process: int | None,
    late_s: float,
) -> None:
  """A cross-process sum in a loop, printing ``step i <value> <seconds> s`` each step; process
  ``late_process`` first sleeps ``late_s`` seconds after the start-up."""
  from dxnet_jax import distributed, sharding as dist

  info = distributed.initialize()
  import jax
  from jax.sharding import NamedSharding, PartitionSpec as P

  mesh = dist.data_mesh()
  total = jax.jit(lambda x: x.sum(), out_shardings=NamedSharding(mesh, P()))
  if info.process_id == late_process:
    time.sleep(late_s)
  for i in range(steps):
    t0 = time.monotonic()
    x = dist.global_batch_from_local(np.full((2,), i, np.float32), mesh)
    value = float(dist.fetch(total(x)))
    assert value == i * 2 * info.num_processes, value
    print(f'step {i} {value} {time.monotonic() - t0:.2f} s', flush=True)
    if raise_at == i and info.process_id == raise_process:
      raise RuntimeError(f'injected failure at step {i}')
    time.sleep(0.05)


def _worker_main(argv: list[str]) -> None:
  parser = argparse.ArgumentParser()
  sub = parser.add_subparsers(dest='mode', required=True)
  sgd = sub.add_parser('sgd')
  sgd.add_argument('out_prefix')
  loop = sub.add_parser('loop')
  loop.add_argument('--raise-at', type=int)
  loop.add_argument('--raise-process', type=int, default=1)
  loop.add_argument('--steps', type=int, default=3000)
  loop.add_argument('--late-process', type=int)
  loop.add_argument('--late-s', type=float, default=0.0)
  args = parser.parse_args(argv)
  if args.mode == 'sgd':
    _worker_sgd(args.out_prefix)
  else:
    _worker_loop(args.raise_at, args.raise_process, args.steps, args.late_process, args.late_s)


if __name__ == '__main__':
  _worker_main(sys.argv[1:])
