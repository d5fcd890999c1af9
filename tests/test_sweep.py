"""dxnet_jax.sweep (on Ray Tune) and dxnet_jax.analysis.stats.

A toy study (a tiny gray denoiser at noise sigma 25 and 15, two seeds, 6 steps, scored on two
random eval images) is swept once without interruption, by `sweep.main` on the module's local
Ray; by `python -m dxnet_jax.sweep` as the user would run it, killed at random points (SIGKILL
of the sweep, its Ray and its trainings; SIGTERM of the sweep) and rerun (in-process) until
done; and (seed 0 of each label) by the command on a two-node Ray cluster started in a network
namespace of its own. Each must end with the same table. Study errors, stale workdirs and the
table itself are checked in-process on fake workdirs (no training). The tests that sweep on Ray
share one xdist worker, its trained fixtures and one Ray for the in-process sweeps.

Analyses: the minima-sharpness CLI (2 probes, 2 realizations, 3 sigmas) runs on copies of the
swept workdirs, once through and once killed during the analysis step and rerun, to the same
table; the step's bookkeeping (reuse, settings, failures) is checked in-process with a toy
analysis module that writes its values without JAX.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from dxnet_jax import sweep
from dxnet_jax.analysis import stats

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ['label', 'seed', 'status', 'psnr/eval', 'ssim/eval', 'best_validation', 'parameters']
COLUMNS += ['steps']

TRAINING_CONFIG = """\
import os

from dxnet_jax.train import defaults


def get_config(sigma=''):
  here = os.path.dirname(os.path.abspath(__file__))
  config = defaults.base_config(
      'denoising', 'densenet_denoise_444', (16, 16, 1),
      train_dirs=(os.path.join(here, 'train'),), validation_set=None, holdout=2,
      patch_size=16, patches_per_epoch=16, validation_crop=16,
      eval_sets=(os.path.join(here, 'eval'),), sigma=float(sigma or 25), prefetch=0)
  config.model.blocks = (1, 1)
  config.model.growth_rate = 4
  config.model.stem_features = 8
  config.batch_size = 8
  config.num_steps = 6
  config.log_every_steps = 1
  config.checkpoint_every_steps = 1
  config.optim = defaults.optim_config('sgd', learning_rate=0.05)
  return config
"""

STUDY = """\
import os

import ml_collections

TINY = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'tiny.py')


def get_config(arg=''):
  study = ml_collections.ConfigDict()
  study.seeds = (0, 1)
  study.runs = [
      dict(label='sigma25', config=TINY),
      dict(label='sigma15', config=TINY + ':15', overrides={'checkpoint_keep': 2}),
  ]
  study.overrides = {'log_every_steps': 2, 'optim': {'nesterov': True}}
  study.metrics = ('psnr', 'ssim', 'best_validation', 'parameters', 'steps')
  study.compare = [('sigma25', 'sigma15')]
  return study
"""


@pytest.fixture(scope='module')
def toy(tmp_path_factory) -> Path:
  """The training config, its images and the study file in one folder."""
  from PIL import Image

  root = tmp_path_factory.mktemp('sweep_toy')
  rng = np.random.default_rng(0)
  for folder, count, size in (('train', 8, 32), ('eval', 2, 24)):
    (root / folder).mkdir()
    for i in range(count):
      pixels = (rng.random((size, size)) * 255).astype(np.uint8)
      Image.fromarray(pixels, 'L').save(root / folder / f'img_{i:02d}.png')
  (root / 'tiny.py').write_text(TRAINING_CONFIG)
  (root / 'study.py').write_text(STUDY)
  return root


def write_study(toy: Path, body: str) -> str:
  """A study file whose get_config returns `body` (an expression; TINY is the toy config)."""
  (toy / 'studies').mkdir(exist_ok=True)
  path = toy / 'studies' / f'study_{hashlib.sha1(body.encode()).hexdigest()[:12]}.py'
  path.write_text(
      'import ml_collections\n'
      f"TINY = {str(toy / 'tiny.py')!r}\n\n\n"
      f"def get_config(arg=''):\n  return ml_collections.ConfigDict({body})\n"
  )
  return str(path)


# ------------------------------------------------------------------------ running the CLI


def _env() -> dict:
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1')
  env['PYTHONPATH'] = os.pathsep.join([str(REPO)] + [p for p in [env.get('PYTHONPATH')] if p])
  return env


def start_sweep(study: str, root: Path, *flags: str) -> subprocess.Popen:
  log = open(root.parent / f'{root.name}.log', 'a')  # pylint: disable=consider-using-with
  command = [sys.executable, '-m', 'dxnet_jax.sweep', study, '--root', str(root), *flags]
  return subprocess.Popen(command, cwd=REPO, env=_env(), stdout=log, stderr=log)


@pytest.fixture(scope='module')
def local_ray():
  """One local Ray for the module's in-process sweeps (the sweep uses a Ray it finds joined)."""
  ray = pytest.importorskip('ray')
  temp_dir = tempfile.mkdtemp(prefix='ray')  # short: Ray's socket paths live under it
  ray.init(
      address='local',
      num_cpus=2,
      include_dashboard=False,
      log_to_driver=False,
      object_store_memory=80 * 1024**2,
      _temp_dir=temp_dir,
  )
  yield ray
  ray.shutdown()
  shutil.rmtree(temp_dir, ignore_errors=True)


def sweep_log(root: Path) -> str:
  return (root.parent / f'{root.name}.log').read_text()


def sweep_here(study: str, root: Path, *flags: str) -> int:
  """`sweep.main` in this process, on the module's Ray (`local_ray`): what it prints goes to the
  log a started sweep writes. Saves a Python and a Ray start where the process is not the point
  (the sweeps that are killed still run the command; the reruns that complete them need not:
  what they resume from is in the workdirs, and the two-node test runs the command through)."""
  log = root.parent / f'{root.name}.log'
  root.parent.mkdir(parents=True, exist_ok=True)
  with open(log, 'a') as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
    return sweep.main([study, '--root', str(root), *flags])


# The tests that sweep on Ray: one worker shares the module's trained fixtures and its Ray.
SWEEPS = pytest.mark.xdist_group('sweep')


def _processes() -> dict[int, tuple[int, str]]:
  """pid -> (parent pid, command line) of the live processes (from /proc)."""
  found = {}
  for entry in os.listdir('/proc'):
    if entry.isdigit():
      try:
        fields = Path(f'/proc/{entry}/stat').read_text().rsplit(')', 1)[1].split()
        command = Path(f'/proc/{entry}/cmdline').read_bytes().replace(b'\0', b' ').decode()
      except OSError:
        continue
      if fields[0] != 'Z':
        found[int(entry)] = (int(fields[1]), command)
  return found


def descendants(pid: int) -> list[int]:
  """Live processes below `pid`: the sweep's Ray, its workers and their trainings."""
  processes, found = _processes(), [pid]
  for parent in found:
    found += [p for p, (ppid, _) in processes.items() if ppid == parent and p not in found]
  return found[1:]


def trainings(root: Path) -> list[int]:
  """Live trainings and analyses of workdirs under `root`."""
  return [p for p, (_, command) in _processes().items() if f'--workdir={root}/' in command]


def alive(pid: int) -> bool:
  try:
    return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
  except OSError:
    return False


def wait_gone(pids, timeout: float = 60):
  deadline = time.monotonic() + timeout
  while any(alive(p) for p in pids):
    assert time.monotonic() < deadline, f'processes {pids} outlived their kill'
    time.sleep(0.05)


def kill_tree(proc: subprocess.Popen):
  """SIGKILL of the sweep, its Ray and the trainings (as a machine's crash would end them)."""
  os.kill(proc.pid, signal.SIGSTOP)  # no new training starts while we look
  below = descendants(proc.pid)
  for pid in below:
    os.kill(pid, signal.SIGSTOP)
  for pid in [proc.pid, *below]:
    try:
      os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
  proc.wait()
  wait_gone(below)


def checkpoints(root: Path) -> set[tuple[str, str]]:
  """(run, step) of every complete checkpoint of an unfinished run under `root`."""
  found = set()
  for workdir in root.glob('*-seed*'):
    saved = workdir / 'checkpoints' / 'latest'
    if not (workdir / 'results.json').exists() and saved.is_dir():
      found |= {(workdir.name, p.name) for p in saved.iterdir() if p.name.isdigit()}
  return found


def wait_until(condition, proc: subprocess.Popen, timeout: float = 120) -> bool:
  """True once `condition()` holds; False if the sweep ended first."""
  deadline = time.monotonic() + timeout
  while not condition():
    if proc.poll() is not None:
      return False
    assert time.monotonic() < deadline, 'the sweep never reached the kill point'
    time.sleep(0.05)
  return True


def read_table(root: Path):
  with open(root / 'results.csv') as f:
    rows = list(csv.reader(f))
  return rows, json.loads((root / 'results.json').read_text())


# ------------------------------------------------------------------------------ slow tests


@pytest.fixture(scope='module')
def reference(local_ray, toy, tmp_path_factory) -> Path:
  """The toy study swept without interruption on a local Ray, two trainings at a time."""
  root = tmp_path_factory.mktemp('reference') / 'sweep'
  assert sweep_here(str(toy / 'study.py'), root, '--cpus-per-run', '1') == 0, sweep_log(root)
  return root


@pytest.mark.slow
@SWEEPS
def test_sweep_writes_the_table_in_grid_order(toy, reference):
  rows, table = read_table(reference)
  assert rows[0] == COLUMNS
  assert [r[:3] for r in rows[1:]] == [
      ['sigma25', '0', 'done'],
      ['sigma25', '1', 'done'],
      ['sigma15', '0', 'done'],
      ['sigma15', '1', 'done'],
  ]
  assert table['columns'] == COLUMNS and table['runs'] == 4
  for row in table['rows']:
    results = json.loads((reference / row['workdir'] / 'results.json').read_text())
    model_row = next(r for r in results['evaluation'] if r['method'] == row['workdir'])
    assert row['metrics'] == {
        'psnr/eval': model_row['psnr'],
        'ssim/eval': model_row['ssim'],
        'best_validation': results['best_validation']['value'],
        'parameters': results['parameters'],
        'steps': 6,
    }
    assert 15 < model_row['psnr'] < 40
  sigma25, sigma15 = table['rows'][0]['metrics'], table['rows'][2]['metrics']
  assert sigma15['psnr/eval'] > sigma25['psnr/eval'] + 2  # less noise, as the config arg says
  overrides = {'log_every_steps': 2, 'optim.nesterov': True, 'checkpoint_keep': 2}
  assert table['rows'][2]['overrides'] == overrides
  config = json.loads((reference / 'sigma15-seed1' / 'config.json').read_text())
  assert (config['seed'], config['data']['sigma'], config['checkpoint_keep']) == (1, 15.0, 2)
  timing = json.loads((reference / 'timing.json').read_text())['runs']
  assert sorted(timing) == ['sigma15-seed0', 'sigma15-seed1', 'sigma25-seed0', 'sigma25-seed1']
  assert all(t['attempts'] == 1 and t['wall_s'] > 0 for t in timing.values())
  log = sweep_log(reference)
  assert '4/4 done, 0 running, 0 failed' in log and 'ETA' in log
  assert '| sigma15 - sigma25 | psnr/eval |' in log  # the summary printed at the end

  # A second run of the same study finds every run finished and starts none.
  before = (reference / 'results.csv').read_text()
  assert sweep_here(str(toy / 'study.py'), reference) == 0
  assert '4 already finished' in sweep_log(reference)
  assert (reference / 'results.csv').read_text() == before
  assert (reference / 'sigma25-seed0' / sweep.LOG_NAME).read_text().count('==== ') == 1


@pytest.mark.slow
@SWEEPS
def test_killed_sweep_resumes_to_the_same_table(toy, reference, tmp_path):
  study, root = str(toy / 'study.py'), tmp_path / 'killed'
  rng = random.Random(0)
  kills, interrupted = [], set()
  # Each kill comes at a random time after this sweep saved a checkpoint mid-run: within the
  # training, its final evaluation, the results' writing or the next run's start.
  for i, (how, within) in enumerate([('TERM', 0.5), ('KILL', 3.0)]):
    before = checkpoints(root)
    proc = start_sweep(study, root, '--cpus-per-run', str(2 - i % 2))
    reached = wait_until(lambda: checkpoints(root) - before, proc)
    time.sleep(rng.uniform(0, within))
    if not reached or proc.poll() is not None:
      break
    kills.append(how)
    if how == 'KILL':
      kill_tree(proc)
    else:
      proc.send_signal(signal.SIGTERM)
      assert proc.wait(timeout=120) == 128 + signal.SIGTERM, sweep_log(root)
      wait_gone(trainings(root), timeout=30)  # Ray stopped the trainings: they saved and exit
    # Runs left with a checkpoint and no results (on a busy machine a kill may also land after
    # the run finished): each must continue from its checkpoint.
    interrupted |= {run for run, _ in checkpoints(root)}
  assert kills == ['TERM', 'KILL'], 'the sweep finished before it was killed'
  assert sweep_here(study, root) == 0, sweep_log(root)  # the killed commands' rerun, in-process

  assert (root / 'results.csv').read_text() == (reference / 'results.csv').read_text()
  assert read_table(root)[1] == read_table(reference)[1]
  for run in interrupted:
    assert 'Resumed' in (root / run / sweep.LOG_NAME).read_text(), run


@pytest.mark.slow
@SWEEPS
def test_a_failing_run_is_reported_and_the_others_finish(local_ray, toy, tmp_path):
  study = write_study(
      toy,
      "dict(seeds=(0,), metrics=('psnr', 'steps'), runs=["
      "dict(label='broken', config=TINY, overrides={'model.name': 'no_such_model'}),"
      "dict(label='sigma25', config=TINY)])",
  )
  root = tmp_path / 'failing'
  assert sweep_here(study, root) == sweep.EXIT_FAILED, sweep_log(root)
  rows, table = read_table(root)
  assert [r[:3] for r in rows[1:]] == [['broken', '0', 'failed'], ['sigma25', '0', 'done']]
  broken = table['rows'][0]
  assert broken['metrics'] == {'psnr/eval': None, 'steps': None}
  assert 'exit status' in broken['error'] and 'no_such_model' in broken['error']
  assert rows[1][3:] == ['', '']
  log = sweep_log(root)
  assert 'FAILED broken-seed0' in log and '1/2 done, 0 running, 1 failed' in log


# Seed 0 of each label, each label on the node that has the resource its runs ask for.
CLUSTER_STUDY = (
    STUDY.replace('study.seeds = (0, 1)', 'study.seeds = (0,)')
    .replace(
        "dict(label='sigma25', config=TINY),",
        "dict(label='sigma25', config=TINY, resources={'head_node': 1}),",
    )
    .replace(
        "overrides={'checkpoint_keep': 2})",
        "overrides={'checkpoint_keep': 2},\n           resources={'second_node': 1})",
    )
)

# Run as the init process of new network and PID namespaces: loopback is the only interface, so
# Ray's nodes advertise and listen on 127.0.0.1 alone, and every process of the cluster ends
# with the script.
CLUSTER_SCRIPT = """\
import json
import subprocess
import sys

from ray.cluster_utils import Cluster

study, root, nodes_file, temp_dir = sys.argv[1:]
ray_args = dict(object_store_memory=80 * 1024**2, temp_dir=temp_dir)
cluster = Cluster(
    initialize_head=True,
    head_node_args=dict(num_cpus=1, resources={'head_node': 1}, include_dashboard=False, **ray_args),
)
cluster.add_node(num_cpus=1, resources={'second_node': 1}, **ray_args)
cluster.wait_for_nodes()
nodes = {node.node_id: node.node_ip_address for node in cluster.list_all_nodes()}
with open(nodes_file, 'w') as f:
  json.dump(nodes, f)
command = [sys.executable, '-m', 'dxnet_jax.sweep', study, '--root', root]
sys.exit(subprocess.call(command + ['--address', cluster.address]))
"""


def namespaces_available() -> str:
  """'' when this process may create network and PID namespaces, else why not."""
  try:
    done = subprocess.run(
        ['unshare', '--net', '--pid', '--fork', '--mount-proc', 'ip', 'link', 'set', 'lo', 'up'],
        capture_output=True,
        text=True,
        timeout=30,
    )
  except (OSError, subprocess.TimeoutExpired) as e:
    return str(e)
  return done.stderr.strip() or f'exit {done.returncode}' if done.returncode else ''


@pytest.mark.slow
@SWEEPS
def test_two_node_cluster_runs_the_study_to_the_same_table(toy, reference, tmp_path):
  """A head and a second node, each with a resource some runs ask for, on loopback only."""
  pytest.importorskip('ray')
  reason = namespaces_available()
  if reason:
    print(f'no network namespace ({reason}): the two-node test is skipped')
    pytest.skip(f'network namespaces unavailable: {reason}')
  (toy / 'cluster_study.py').write_text(CLUSTER_STUDY)
  (tmp_path / 'cluster.py').write_text(CLUSTER_SCRIPT)
  root, nodes_file = tmp_path / 'cluster', tmp_path / 'nodes.json'
  env = dict(_env(), RAY_AUTH_MODE='disabled', RAY_USAGE_STATS_ENABLED='0')
  command = ['unshare', '--net', '--pid', '--fork', '--mount-proc', 'sh', '-c']
  command += ['ip link set lo up && exec "$0" "$@"', sys.executable, str(tmp_path / 'cluster.py')]
  temp_dir = tempfile.mkdtemp(prefix='ray')  # short: Ray's socket paths live under it
  command += [str(toy / 'cluster_study.py'), str(root), str(nodes_file), temp_dir]
  try:
    with open(tmp_path / 'cluster.log', 'w') as log:
      done = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=log, timeout=900)
  finally:
    shutil.rmtree(temp_dir, ignore_errors=True)
  assert done.returncode == 0, (tmp_path / 'cluster.log').read_text()

  nodes = json.loads(nodes_file.read_text())
  assert len(nodes) == 2 and set(nodes.values()) == {'127.0.0.1'}
  ran_on = {}
  for workdir in root.glob('*-seed*'):
    (header,) = [
        l for l in (workdir / sweep.LOG_NAME).read_text().splitlines() if l.startswith('==== ')
    ]
    ran_on[workdir.name] = header.split(' on node ')[1].split()[0]
  assert sorted(ran_on) == ['sigma15-seed0', 'sigma25-seed0']
  head, second = (ran_on[f'{label}-seed0'] for label in ('sigma25', 'sigma15'))
  assert head != second and {node[:12] for node in nodes} == {head, second}
  # The rows of the local sweep's table for seed 0, value for value.
  (rows, table), (local_rows, local_table) = read_table(root), read_table(reference)
  assert rows == [local_rows[0]] + [row for row in local_rows[1:] if row[1] == '0']
  assert table['rows'] == [row for row in local_table['rows'] if row['seed'] == 0]


# ------------------------------------------------------------------------------ fast tests


def test_study_expands_to_the_grid_with_main_flags(toy):
  study = sweep.load_study(str(toy / 'study.py'))
  names = ['sigma25-seed0', 'sigma25-seed1', 'sigma15-seed0', 'sigma15-seed1']
  assert [r.name for r in study.runs] == names
  assert study.columns == COLUMNS[3:]
  assert study.compare == [('sigma25', 'sigma15')]
  assert study.runs[3].config_args() == [
      f"--config={toy / 'tiny.py'}:15",
      '--config.log_every_steps=2',
      '--config.optim.nesterov=true',
      '--config.checkpoint_keep=2',
      '--config.seed=1',
  ]
  config = study.configs['sigma15-seed1']
  assert (config['seed'], config['data']['sigma'], config['checkpoint_keep']) == (1, 15.0, 2)


@pytest.mark.parametrize(
    'body, message',
    [
        ("dict(runs=[dict(label='a', config=TINY)], seed=(0,), metrics=('steps',))", 'seed'),
        (
            "dict(runs=[dict(label='a', config='nope/x.py')], seeds=(0,), metrics=('steps',))",
            "config file 'nope/x.py' not found",
        ),
        (
            "dict(runs=[dict(label='a', config=TINY, overrides={'optim.learning_rat': 1.0})], "
            "seeds=(0,), metrics=('steps',))",
            "no field 'learning_rat'. Did you mean ['learning_rate']",
        ),
        (
            "dict(runs=[dict(label='a', config=TINY, overrides={'num_steps': 'many'})], "
            "seeds=(0,), metrics=('steps',))",
            'main cannot take its overrides',
        ),
        (
            "dict(runs=[dict(label='a', config=TINY, overrides={'seed': 3})], seeds=(0,), "
            "metrics=('steps',))",
            'the seed comes from study.seeds',
        ),
        (
            "dict(runs=[dict(label='a', config=TINY), dict(label='a', config=TINY)], seeds=(0,), "
            "metrics=('steps',))",
            "label 'a' is used twice",
        ),
        (
            "dict(runs=[dict(label='a/b', config=TINY)], seeds=(0,), metrics=('steps',))",
            "label 'a/b' must be",
        ),
        (
            "dict(runs=[dict(label='a', config=TINY)], seeds=(), metrics=('steps',))",
            'study.seeds must be a non-empty tuple',
        ),
        (
            "dict(runs=[dict(label='a', config=TINY)], seeds=(0,), metrics=('psnr/BSD68',))",
            "no run evaluates 'BSD68'",
        ),
        (
            "dict(runs=[dict(label='a', config=TINY, overrides={'final_eval': False})], "
            "seeds=(0,), metrics=('psnr',))",
            'needs runs that score eval sets',
        ),
        (
            "dict(runs=[dict(label='a', config=TINY)], seeds=(0,), metrics=('accuracy',))",
            "unknown metric 'accuracy'",
        ),
        (
            "dict(runs=[dict(label='a', config=TINY)], seeds=(0,), metrics=('steps',), "
            "compare=[('a', 'b')])",
            "unknown labels ['b']",
        ),
        (
            "dict(runs=[dict(label='a', config=TINY + ':x')], seeds=(0,), metrics=('steps',))",
            'failed to load',
        ),
    ],
)
def test_bad_study_is_an_error_before_anything_runs(toy, tmp_path, body, message, capsys):
  study = write_study(toy, body)
  with pytest.raises(sweep.StudyError) as error:
    sweep.load_study(study)
  assert message in str(error.value)
  root = tmp_path / 'root'
  assert sweep.main([study, '--root', str(root)]) == sweep.EXIT_USAGE
  assert message in capsys.readouterr().err
  assert not root.exists()


def test_missing_study_file_and_bad_command_line(tmp_path, toy, capsys):
  assert sweep.main([str(tmp_path / 'nope.py'), '--root', str(tmp_path)]) == sweep.EXIT_USAGE
  assert 'nope.py' in capsys.readouterr().err
  study = str(toy / 'study.py')
  assert sweep.main([study, '--root', str(tmp_path), '--cpus-per-run', '0']) == sweep.EXIT_USAGE
  assert sweep.main([study, '--root', str(tmp_path), '--main-flag=--config.seed=3']) == 2
  assert 'put config changes into the study' in capsys.readouterr().err


def fake_finished_run(root: Path, study: sweep.Study, run: sweep.Run, psnr: float):
  """A workdir as main leaves it after a finished run (config.json and results.json)."""
  workdir = root / run.name
  workdir.mkdir(parents=True)
  (workdir / 'config.json').write_text(json.dumps(study.configs[run.name]))
  evaluation = [
      {'set': '/somewhere/eval', 'method': run.name, 'psnr': psnr, 'ssim': 0.5},
      {'set': '/somewhere/eval', 'method': 'noisy input (clipped, 8-bit)', 'psnr': 1.0},
  ]
  results = {'steps': 6, 'parameters': 10, 'best_validation': None, 'evaluation': evaluation}
  (workdir / 'results.json').write_text(json.dumps(results))


def test_dry_run_prints_the_commands_and_starts_nothing(toy, tmp_path, capsys):
  root = tmp_path / 'root'
  assert sweep.main([str(toy / 'study.py'), '--root', str(root), '--dry-run']) == 0
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 4 and lines[3].startswith('sigma15-seed1 (to run): ')
  assert lines[3].endswith(f"--config.seed=1 --workdir={root / 'sigma15-seed1'}")
  assert not root.exists()


def test_finished_runs_are_skipped_and_tabled(toy, tmp_path, capsys):
  study_path = str(toy / 'study.py')
  study = sweep.load_study(study_path)
  root = tmp_path / 'root'
  for i, run in enumerate(study.runs):
    fake_finished_run(root, study, run, psnr=20.0 + i / 3)
  assert sweep.main([study_path, '--root', str(root)]) == 0
  rows, table = read_table(root)
  assert rows[1] == ['sigma25', '0', 'done', '20.0', '0.5', '', '10', '6']
  assert rows[4][3] == repr(20.0 + 1)  # floats round-trip exactly
  assert [r['metrics']['psnr/eval'] for r in table['rows']] == [20.0 + i / 3 for i in range(4)]
  out = capsys.readouterr()
  assert '4 already finished' in out.err and '| sigma25 | 20.17 ± 0.24 (2) |' in out.out
  assert not any(root.glob(f'*/{sweep.LOG_NAME}'))  # nothing started
  # The stats CLI reads the same table.
  results = str(root / 'results.json')
  assert stats.main([results, '--metric', 'psnr/eval', '--compare', 'sigma25', 'sigma15']) == 0
  out = capsys.readouterr().out
  assert '| sigma15 - sigma25 | psnr/eval | 0.6667 | 0 | 2 | sigma15 higher |' in out
  with pytest.raises(SystemExit):
    stats.main([results, '--metric', 'psnr/BSD68'])
  assert "columns not in the table: ['psnr/BSD68']" in capsys.readouterr().err


def test_workdir_of_another_config_is_an_error(toy, tmp_path, capsys):
  study_path = str(toy / 'study.py')
  study = sweep.load_study(study_path)
  root = tmp_path / 'root'
  fake_finished_run(root, study, study.runs[0], psnr=20.0)
  config_file = root / 'sigma25-seed0' / 'config.json'
  config = json.loads(config_file.read_text())
  config['num_steps'] = 99
  config_file.write_text(json.dumps(config))
  assert sweep.main([study_path, '--root', str(root)]) == sweep.EXIT_USAGE
  err = capsys.readouterr().err
  assert 'was trained with another config (num_steps: 99 -> 6)' in err
  assert json.loads(config_file.read_text())['num_steps'] == 99  # left as it was
  assert not (root / 'results.csv').exists()


def test_without_ray_the_message_names_the_extra(toy, tmp_path, monkeypatch, capsys):
  monkeypatch.setitem(sys.modules, 'ray', None)  # as if Ray were not installed
  assert sweep.main([str(toy / 'study.py'), '--root', str(tmp_path / 'root')]) == 2
  assert 'pip install "dxnet_jax[sweep]"' in capsys.readouterr().err


# ---------------------------------------------------------------------------------- stats


def _rows(values):
  return [
      {'label': label, 'seed': seed, 'status': 'done', 'metrics': {'psnr': v}}
      for label, seed, v in values
  ]


def test_group_stats_mean_std_n():
  rows = _rows([('a', 0, 1.0), ('a', 1, 2.0), ('a', 2, 4.0), ('b', 0, 5.0)])
  rows.append({'label': 'b', 'seed': 1, 'status': 'failed', 'metrics': {'psnr': None}})
  a, b = stats.group_stats(rows, ['psnr'])
  assert (a['label'], a['n']) == ('a', 3) and a['mean'] == pytest.approx(7 / 3)
  assert a['std'] == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1))
  assert (b['mean'], b['n']) == (5.0, 1) and np.isnan(b['std'])


def test_paired_difference_verdicts():
  noisy = _rows([('a', 0, 1.0), ('a', 1, 2.0), ('a', 2, 3.0)])
  noisy += _rows([('b', 0, 1.5), ('b', 1, 1.5), ('b', 2, 3.2), ('b', 3, 9.0)])
  d = stats.paired_difference(noisy, 'psnr', 'a', 'b')
  assert d['seeds'] == [0, 1, 2] and d['n'] == 3  # seed 3 has no partner
  assert d['mean'] == pytest.approx(0.2 / 3)
  assert d['std'] == pytest.approx(np.std([0.5, -0.5, 0.2], ddof=1))
  assert d['verdict'] == stats.WITHIN_NOISE
  steady = _rows([('a', 0, 1.0), ('a', 1, 2.0), ('b', 0, 1.3), ('b', 1, 2.31)])
  assert stats.paired_difference(steady, 'psnr', 'a', 'b')['verdict'] == 'b higher'
  assert stats.paired_difference(steady, 'psnr', 'b', 'a')['verdict'] == 'a lower'
  assert stats.verdict([0.0, 0.0]) == stats.WITHIN_NOISE
  assert stats.verdict([1.0]) == stats.TOO_FEW


def test_markdown_summary():
  rows = _rows([('a', 0, 1.0), ('a', 1, 3.0), ('b', 0, 2.0), ('b', 1, 4.5)])
  text = stats.markdown_summary(rows, ['psnr'], [('a', 'b')])
  lines = text.splitlines()
  assert lines[:4] == [
      '| label | psnr: mean ± std (n) |',
      '|---|---|',
      '| a | 2.0 ± 1.4 (2) |',
      '| b | 3.2 ± 1.8 (2) |',
  ]
  assert lines[-1] == '| b - a | psnr | +1.25 | 0.35 | 2 | b higher |'


def test_timing_summary_counts_trainings_and_analyses(tmp_path, capsys):
  runs = {
      'a-seed0': {'attempts': 2, 'wall_s': 3000.0, 'sharpness': {'attempts': 1, 'wall_s': 120.0}},
      'a-seed1': {'attempts': 1, 'wall_s': 1800.0, 'sharpness': {'attempts': 1, 'wall_s': 60.0}},
  }
  (tmp_path / 'timing.json').write_text(json.dumps({'runs': runs}))
  assert stats.timing_summary(str(tmp_path / 'timing.json')).splitlines() == [
      '- training: 2 runs, 1 h 20 min in all, 40.0 min per run (3 attempts)',
      '- sharpness: 2 runs, 3 min in all, 1.5 min per run (2 attempts)',
  ]
  rows = _rows([('a', 0, 1.0), ('a', 1, 3.0)])
  (tmp_path / 'results.json').write_text(json.dumps({'rows': rows}))
  assert stats.main([str(tmp_path / 'results.json'), '--timing']) == 0
  assert '- training: 2 runs, 1 h 20 min in all' in capsys.readouterr().out
  (tmp_path / 'timing.json').unlink()
  with pytest.raises(SystemExit):
    stats.main([str(tmp_path / 'results.json'), '--timing'])
  assert 'timing.json, which is missing' in capsys.readouterr().err


# ------------------------------------------------------------------------------- analyses

SHARPNESS_STUDY = """\
import os

import ml_collections

TINY = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'tiny.py')


def get_config(arg=''):
  study = ml_collections.ConfigDict()
  study.seeds = (0, 1)
  study.runs = [dict(label='sigma25', config=TINY)]
  study.overrides = {'log_every_steps': 2, 'optim': {'nesterov': True}}
  study.analyses = [
      dict(
          name='sharpness',
          module='dxnet_jax.analysis.sharpness',
          args=('--sigmas=0.01,0.02,0.04', '--probes=2', '--realizations=2', '--batch-size=2'),
          results='sharpness.json',
      )
  ]
  study.metrics = ('psnr', 'sharpness/trace_hutchinson', 'sharpness/trace_fit')
  return study
"""

SHARPNESS_COLUMNS = ['label', 'seed', 'status', 'psnr/eval']
SHARPNESS_COLUMNS += ['sharpness/trace_hutchinson', 'sharpness/trace_fit']


def trained_copy(reference: Path, root: Path) -> Path:
  """The reference sweep's workdirs under a new root, as another study of them finds them."""
  root.mkdir(parents=True)
  for workdir in reference.glob('*-seed*'):
    shutil.copytree(workdir, root / workdir.name)
  return root


def log_starts(path: Path) -> int:
  return path.read_text().count('==== ') if path.exists() else 0


@pytest.fixture(scope='module')
def analysed(local_ray, toy, reference, tmp_path_factory) -> Path:
  """The sharpness study swept on copies of the reference's trained workdirs."""
  (toy / 'sharpness_study.py').write_text(SHARPNESS_STUDY)
  root = trained_copy(reference, tmp_path_factory.mktemp('analysed') / 'sweep')
  assert sweep_here(str(toy / 'sharpness_study.py'), root) == 0, sweep_log(root)
  return root


@pytest.mark.slow
@SWEEPS
def test_sharpness_analysis_of_trained_workdirs(analysed):
  rows, table = read_table(analysed)
  assert rows[0] == SHARPNESS_COLUMNS
  assert [r[:3] for r in rows[1:]] == [['sigma25', '0', 'done'], ['sigma25', '1', 'done']]
  for row in table['rows']:
    workdir = analysed / row['workdir']
    assert log_starts(workdir / sweep.LOG_NAME) == 1  # trained once, by the reference sweep
    (measured,) = json.loads((workdir / 'sharpness' / 'sharpness.json').read_text())
    assert measured['sigmas'] == pytest.approx([0.01, 0.02, 0.04])
    assert (measured['probes'], measured['realizations']) == (2, 2)
    assert row['metrics']['sharpness/trace_hutchinson'] == measured['trace_hutchinson']
    assert row['metrics']['sharpness/trace_fit'] == measured['trace_fit']
    assert (workdir / 'sharpness' / 'sharpness.png').exists()
    record = json.loads((workdir / 'sharpness' / sweep.ANALYSIS_RECORD).read_text())
    assert record['module'] == 'dxnet_jax.analysis.sharpness' and '--probes=2' in record['args']
    assert not (workdir / 'sharpness.partial').exists()
  timing = json.loads((analysed / 'timing.json').read_text())['runs']
  assert timing['sigma25-seed0']['sharpness']['attempts'] == 1
  assert '| sigma25 | ' in sweep_log(analysed)  # the summary, sharpness columns included


@pytest.mark.slow
@SWEEPS
def test_sweep_killed_during_an_analysis_resumes_to_the_same_table(toy, reference, analysed):
  study = str(toy / 'sharpness_study.py')
  root = trained_copy(reference, analysed.parent / 'killed')
  proc = start_sweep(study, root)
  started = wait_until(lambda: any(root.glob('*/sharpness.partial')), proc)
  time.sleep(random.Random(1).uniform(0, 3))
  assert started and proc.poll() is None, 'the sweep finished before it was killed'
  kill_tree(proc)
  # Ray may run either seed's analysis first: note which ones the kill interrupted.
  workdirs = [root / f'sigma25-seed{s}' for s in (0, 1)]
  finished = [(w / 'sharpness').exists() for w in workdirs]
  interrupted = [(w / 'sharpness.partial').exists() for w in workdirs]
  starts = [log_starts(w / 'sharpness.log') for w in workdirs]
  assert any(interrupted) and not all(finished)
  assert sweep_here(study, root) == 0, sweep_log(root)
  assert (root / 'results.csv').read_text() == (analysed / 'results.csv').read_text()
  assert read_table(root)[1]['rows'] == read_table(analysed)[1]['rows']
  for workdir, done, before in zip(workdirs, finished, starts, strict=True):
    # A finished analysis is not run again; an unfinished one (the killed one) runs once more.
    assert log_starts(workdir / 'sharpness.log') == before + (0 if done else 1)
    assert log_starts(workdir / sweep.LOG_NAME) == 1


TOY_ANALYSIS = """\
import argparse
import json
import os
import sys

parser = argparse.ArgumentParser()
parser.add_argument('--workdir')
parser.add_argument('--out')
parser.add_argument('--scale', type=float, default=1.0)
parser.add_argument('--fail', action='store_true')
parser.add_argument('--no-values', action='store_true')
args = parser.parse_args()
if args.fail:
  sys.exit('the toy analysis fails on purpose')
with open(os.path.join(args.workdir, 'results.json')) as f:
  steps = json.load(f)['steps']
with open(os.path.join(args.out, 'notes.txt'), 'w') as f:
  f.write('measured\\n')
if not args.no_values:
  with open(os.path.join(args.out, 'values.json'), 'w') as f:
    json.dump([{'scaled_steps': args.scale * steps, 'curve': [1, 2]}], f)
"""


@pytest.fixture
def toy_analysis(toy, monkeypatch):
  """`toy_analysis`, importable here and in the processes the sweep starts."""
  modules = toy / 'modules'
  modules.mkdir(exist_ok=True)
  (modules / 'toy_analysis.py').write_text(TOY_ANALYSIS)
  monkeypatch.syspath_prepend(str(modules))
  paths = [str(modules), str(REPO), os.environ.get('PYTHONPATH', '')]
  monkeypatch.setenv('PYTHONPATH', os.pathsep.join(p for p in paths if p))
  return modules


def analysis_study(toy: Path, *args: str, metrics=("'toy/scaled_steps'",)) -> str:
  return write_study(
      toy,
      "dict(seeds=(0, 1), runs=[dict(label='sigma25', config=TINY)], "
      f"metrics=('psnr', {', '.join(metrics)}), analyses=[dict(name='toy', "
      f"module='toy_analysis', args={args!r}, results='values.json')])",
  )


def finished_runs(study_path: str, root: Path) -> sweep.Study:
  study = sweep.load_study(study_path)
  for i, run in enumerate(study.runs):
    fake_finished_run(root, study, run, psnr=20.0 + i)
  return study


@pytest.mark.slow  # a Ray start and Tune trials
@SWEEPS
def test_analysis_runs_once_per_finished_workdir(local_ray, toy, toy_analysis, tmp_path, capsys):
  study_path, root = analysis_study(toy, '--scale=2'), tmp_path / 'root'
  finished_runs(study_path, root)
  assert sweep.main([study_path, '--root', str(root)]) == 0
  rows, table = read_table(root)
  assert rows == [
      ['label', 'seed', 'status', 'psnr/eval', 'toy/scaled_steps'],
      ['sigma25', '0', 'done', '20.0', '12.0'],
      ['sigma25', '1', 'done', '21.0', '12.0'],
  ]
  out = capsys.readouterr()
  assert '| sigma25 | 20.50 ± 0.71 (2) | 12 ± 0 (2) |' in out.out
  assert 'started sigma25-seed0' in out.err and '0 already finished' in out.err
  workdir = root / 'sigma25-seed1'
  assert (workdir / 'toy' / 'notes.txt').read_text() == 'measured\n'
  assert json.loads((workdir / 'toy' / sweep.ANALYSIS_RECORD).read_text()) == {
      'module': 'toy_analysis',
      'args': ['--scale=2'],
  }
  assert not (workdir / 'toy.partial').exists() and not (workdir / sweep.LOG_NAME).exists()
  assert log_starts(workdir / 'toy.log') == 1
  timing = json.loads((root / 'timing.json').read_text())['runs']
  assert timing['sigma25-seed1']['toy']['attempts'] == 1

  # Done analyses are reused; the same study finds nothing to do.
  before = (root / 'results.csv').read_text()
  assert sweep.main([study_path, '--root', str(root)]) == 0
  assert '2 already finished' in capsys.readouterr().err
  assert (root / 'results.csv').read_text() == before and log_starts(workdir / 'toy.log') == 1

  # Other args, or a value the analysis does not write, are errors that leave the outputs be.
  for study_path, message in (
      (analysis_study(toy, '--scale=3'), "was made with other settings (args: ['--scale=2'] ->"),
      (
          analysis_study(toy, '--scale=2', metrics=("'toy/nope'",)),
          "study.metrics asks for ['toy/nope'], which",
      ),
  ):
    assert sweep.main([study_path, '--root', str(root)]) == sweep.EXIT_USAGE
    assert message in capsys.readouterr().err
    assert (root / 'results.csv').read_text() == before and log_starts(workdir / 'toy.log') == 1


def test_dry_run_lists_the_analyses(toy, toy_analysis, tmp_path, capsys):
  study_path, root = analysis_study(toy), tmp_path / 'root'
  finished_runs(study_path, root)
  assert sweep.main([study_path, '--root', str(root), '--dry-run']) == 0
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 4 and lines[0].startswith('sigma25-seed0 (done): ')
  workdir = root / 'sigma25-seed0'
  assert lines[1].startswith('sigma25-seed0 toy (to run): ')
  assert lines[1].endswith(f"-m toy_analysis --workdir={workdir} --out={workdir / 'toy.partial'}")
  assert not (workdir / 'toy.partial').exists()


@pytest.mark.slow  # a Ray start and Tune trials
@SWEEPS
def test_failed_analysis_fails_its_run_and_is_retried(
    local_ray, toy, toy_analysis, tmp_path, capsys
):
  root = tmp_path / 'root'
  finished_runs(analysis_study(toy), root)
  assert sweep.main([analysis_study(toy, '--fail'), '--root', str(root)]) == sweep.EXIT_FAILED
  rows, table = read_table(root)
  assert rows[1:] == [
      ['sigma25', '0', 'failed', '20.0', ''],
      ['sigma25', '1', 'failed', '21.0', ''],
  ]
  error = table['rows'][0]['error']
  assert error.startswith('toy analysis: exit status 1 (log: ') and 'on purpose' in error
  assert 'FAILED sigma25-seed0: toy analysis' in capsys.readouterr().err
  workdir = root / 'sigma25-seed0'
  assert not (workdir / 'toy').exists() and (workdir / 'toy.partial').is_dir()

  # Exit status 0 without the values file is a failure too, and leaves no output in place.
  assert sweep.main([analysis_study(toy, '--no-values'), '--root', str(root)]) == 1
  error = read_table(root)[1]['rows'][0]['error']
  assert 'values.json is missing or holds no JSON object of values' in error
  assert not (workdir / 'toy').exists()

  # The retry starts afresh from an empty folder and completes the runs.
  assert sweep.main([analysis_study(toy), '--root', str(root)]) == 0
  assert [r[2:] for r in read_table(root)[0][1:]] == [
      ['done', '20.0', '6.0'],
      ['done', '21.0', '6.0'],
  ]
  assert log_starts(workdir / 'toy.log') == 3
  assert sorted(p.name for p in (workdir / 'toy').iterdir()) == [
      'notes.txt',
      sweep.ANALYSIS_RECORD,
      'values.json',
  ]


def test_analysis_folder_not_made_by_the_sweep_is_an_error(toy, toy_analysis, tmp_path, capsys):
  study_path, root = analysis_study(toy), tmp_path / 'root'
  finished_runs(study_path, root)
  (root / 'sigma25-seed1' / 'toy').mkdir()
  (root / 'sigma25-seed1' / 'toy' / 'mine.txt').write_text('keep me')
  assert sweep.main([study_path, '--root', str(root)]) == sweep.EXIT_USAGE
  assert f'sigma25-seed1/toy was not made by the sweep (no {sweep.ANALYSIS_RECORD})' in (
      capsys.readouterr().err
  )
  assert (root / 'sigma25-seed1' / 'toy' / 'mine.txt').read_text() == 'keep me'
  assert not (root / 'results.csv').exists()


@pytest.mark.parametrize(
    'analyses, metrics, message',
    [
        ("[dict(name='toy', module='toy_analysis')]", "'steps'", "missing keys ['results']"),
        (
            "[dict(name='toy', module='no_such_module', results='v.json')]",
            "'steps'",
            "module 'no_such_module' is not importable",
        ),
        (
            "[dict(name='psnr', module='toy_analysis', results='v.json')]",
            "'steps'",
            "name 'psnr' is taken",
        ),
        (
            "[dict(name='train', module='toy_analysis', results='v.json')]",
            "'steps'",
            "name 'train' is taken by a metric, the training log",
        ),
        (
            "[dict(name='toy', module='toy_analysis', args=('--out=x',), results='v.json')]",
            "'steps'",
            'the sweep sets --workdir and --out',
        ),
        (
            "[dict(name='toy', module='toy_analysis', results='../v.json')]",
            "'steps'",
            'results must name a JSON file in the output folder',
        ),
        (
            "[dict(name='toy', module='toy_analysis', results='v.json')]",
            "'toy'",
            "metric 'toy' names an analysis; name one of its values, 'toy/KEY'",
        ),
        ('[]', "'toy/x'", "unknown metric 'toy/x'"),
    ],
)
def test_bad_analyses_are_errors(toy, toy_analysis, analyses, metrics, message):
  study = write_study(
      toy,
      f"dict(runs=[dict(label='a', config=TINY)], seeds=(0,), metrics=({metrics},), "
      f'analyses={analyses})',
  )
  with pytest.raises(sweep.StudyError) as error:
    sweep.load_study(study)
  assert message in str(error.value)


def test_sharpness_study_measures_the_runs_of_denoise_params():
  """configs/studies/sharpness.py shares denoise_params.py's workdirs under one --root."""
  params = sweep.load_study(str(REPO / 'configs' / 'studies' / 'denoise_params.py'))
  sharp = sweep.load_study(str(REPO / 'configs' / 'studies' / 'sharpness.py'))
  assert sharp.runs == params.runs and sharp.configs == params.configs
  assert sharp.columns[: len(params.columns)] == params.columns
  assert 'sharpness/trace_hutchinson' in sharp.columns
  assert sharp.compare == params.compare
  (analysis,) = sharp.analyses
  assert (analysis.name, analysis.module) == ('sharpness', 'dxnet_jax.analysis.sharpness')
  assert sum(arg.startswith('--sigmas=') for arg in analysis.args) == 1  # one grid for all
  assert analysis.args[0] == '--sigmas=0.0005,0.001,0.0015,0.002,0.003,0.004'


def test_analysis_values_become_its_flags():
  values = {'sigmas': (0.001, 0.5), 'fit_max_sigma': 2e-3, 'probes': 4, 'plot': True, 'x': False}
  assert sweep.study.command_flags({**values, 'y': None}) == (
      '--sigmas=0.001,0.5',
      '--fit-max-sigma=0.002',
      '--probes=4',
      '--plot',
  )
