"""Tests of the launch scripts: syntax, --help, the exact dry-run commands, argument errors, and
real runs against stand-ins for gcloud and python that record how they were called."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / 'launch'
SCRIPTS = ['local.sh', 'gpu_host.sh', 'tpu_pod.sh']

# A stand-in executable: records its argv and a few environment variables as one JSON line in
# $RECORD; exits with $FAKE_FAIL_STATUS when $FAKE_FAIL_MATCH occurs in its arguments (once
# $FAKE_FAIL_AFTER_RECORDS calls are recorded, if given), and sleeps $FAKE_SLEEP_<process id>
# seconds first when given.
RECORDER = """\
import json, os, sys, time
argv = sys.argv[1:]
keys = ["JAX_PLATFORMS", "XLA_FLAGS", "DXNET_COORDINATOR", "DXNET_NUM_PROCESSES",
        "DXNET_PROCESS_ID", "CUDA_VISIBLE_DEVICES", "TFDS_DATA_DIR", "DXNET_HEARTBEAT_TIMEOUT",
        "DXNET_DATA_DIR"]
with open(os.environ["RECORD"], "a") as f:
    f.write(json.dumps({"prog": os.path.basename(sys.argv[0]), "argv": argv,
                        "env": {k: os.environ[k] for k in keys if k in os.environ}}) + "\\n")
sleep = os.environ.get("FAKE_SLEEP_" + os.environ.get("DXNET_PROCESS_ID", "x"))
if sleep:
    time.sleep(float(sleep))
match = os.environ.get("FAKE_FAIL_MATCH")
if match and any(match in a for a in argv) and \\
        os.environ.get("FAKE_FAIL_PID", os.environ.get("DXNET_PROCESS_ID")) == \\
        os.environ.get("DXNET_PROCESS_ID"):
    # Wait (at most 20 s) until $FAKE_FAIL_AFTER_RECORDS calls are recorded, so that the others
    # have started before this one fails.
    deadline = time.time() + 20
    while time.time() < deadline and len(open(os.environ["RECORD"]).read().splitlines()) < \
            int(os.environ.get("FAKE_FAIL_AFTER_RECORDS", "0")):
        time.sleep(0.05)
    sys.exit(int(os.environ.get("FAKE_FAIL_STATUS", "7")))
"""


def _fake(dirpath: Path, name: str) -> Path:
  path = dirpath / name
  path.write_text(f'#!{sys.executable}\n' + RECORDER)
  path.chmod(path.stat().st_mode | stat.S_IXUSR)
  return path


@pytest.fixture
def fakes(tmp_path):
  """A bin/ with fake gcloud and python3 first on PATH, and the record file they write."""
  bindir = tmp_path / 'bin'
  bindir.mkdir()
  _fake(bindir, 'gcloud')
  _fake(bindir, 'python3')
  record = tmp_path / 'record.jsonl'
  env = {
      k: v
      for k, v in os.environ.items()
      if not k.startswith(('DXNET_', 'FAKE_')) and k not in ('XLA_FLAGS', 'TFDS_DATA_DIR')
  }
  env.update(PATH=f"{bindir}{os.pathsep}{env['PATH']}", RECORD=str(record), TMPDIR=str(tmp_path))
  return env, record


def calls(record: Path) -> list[dict]:
  if not record.exists():
    return []
  return [json.loads(line) for line in record.read_text().splitlines()]


def launch(script: str, *args: str, env=None, cwd=None, timeout=60):
  return subprocess.run(
      ['bash', str(LAUNCH / script), *args],
      capture_output=True,
      text=True,
      env=env,
      cwd=cwd,
      timeout=timeout,
  )


def commands(stdout: str) -> list[str]:
  """The command lines of a dry-run listing (comment lines dropped)."""
  return [line for line in stdout.splitlines() if line and not line.startswith('#')]


@pytest.fixture
def config(tmp_path):
  path = tmp_path / 'configs' / 'quickstart.py'
  path.parent.mkdir()
  path.write_text('def get_config():\n    return None\n')
  return path


@pytest.fixture
def src_repo(tmp_path):
  """A small git checkout with a tracked configs/quickstart.py, to ship as the tarball."""
  src = tmp_path / 'src'
  (src / 'configs').mkdir(parents=True)
  (src / 'configs' / 'quickstart.py').write_text('def get_config():\n    return None\n')
  (src / 'configs' / 'common.py').write_text('')
  (src / 'configs' / 'imagenet.py').write_text('def get_config(arg):\n    return 1\n')
  git = ['git', '-C', str(src), '-c', 'user.email=t@t', '-c', 'user.name=t']
  subprocess.run(['git', 'init', '-q', str(src)], check=True)
  subprocess.run(git + ['add', '.'], check=True)
  subprocess.run(git + ['commit', '-q', '-m', 'init'], check=True)
  return src


# --------------------------------------------------------------------------- syntax and help


@pytest.mark.parametrize('script', SCRIPTS + ['_common.sh'])
def test_bash_syntax(script):
  result = subprocess.run(['bash', '-n', str(LAUNCH / script)], capture_output=True, text=True)
  assert result.returncode == 0, result.stderr


@pytest.mark.parametrize('script', SCRIPTS)
def test_scripts_are_strict_and_executable(script):
  text = (LAUNCH / script).read_text()
  assert text.startswith('#!/usr/bin/env bash\n')
  assert 'set -euo pipefail' in text
  assert os.access(LAUNCH / script, os.X_OK)


@pytest.mark.parametrize('script', SCRIPTS)
def test_help(script):
  for flag in ('--help', '-h'):
    result = launch(script, flag)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f'Usage: launch/{script}')
    assert '--dry-run' in result.stdout


# --------------------------------------------------------------------------- local.sh


def test_local_dry_run(fakes, config):
  env, record = fakes
  result = launch(
      'local.sh', '--config', str(config), '--workdir', '/tmp/w x', '--dry-run', env=env
  )
  assert result.returncode == 0, result.stderr
  assert commands(result.stdout) == [
      f'env JAX_PLATFORMS=cpu python3 -m dxnet_jax.main --config {config} ' f"--workdir '/tmp/w x'"
  ]
  assert calls(record) == []  # nothing ran


def test_local_dry_run_devices_and_overrides(fakes, config):
  env, _ = fakes
  env['XLA_FLAGS'] = '--xla_dump_to=/tmp/d'  # kept, the device count appended
  result = launch(
      'local.sh',
      '--config',
      str(config),
      '--workdir',
      'w',
      '--devices',
      '4',
      '--config.num_train_steps=3',
      '--dry-run',
      '--',
      '--config.name=a b',
      env=env,
  )
  assert result.returncode == 0, result.stderr
  assert commands(result.stdout) == [
      "env JAX_PLATFORMS=cpu 'XLA_FLAGS=--xla_dump_to=/tmp/d "
      "--xla_force_host_platform_device_count=4' python3 -m dxnet_jax.main "
      f"--config {config} --workdir w --config.num_train_steps=3 '--config.name=a b'"
  ]


def test_local_dry_run_processes(fakes, config):
  env, record = fakes
  result = launch(
      'local.sh',
      '--config',
      str(config),
      '--workdir',
      'w',
      '--processes',
      '2',
      '--devices',
      '2',
      '--port',
      '12345',
      '--dry-run',
      env=env,
  )
  assert result.returncode == 0, result.stderr
  base = (
      'env JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=2 '
      'DXNET_COORDINATOR=localhost:12345 DXNET_NUM_PROCESSES=2 DXNET_PROCESS_ID={} '
      f'python3 -m dxnet_jax.main --config {config} --workdir w'
  )
  assert commands(result.stdout) == [
      'mkdir -p w/logs',
      base.format(0) + ' &',
      base.format(1) + ' > w/logs/process_1.log 2>&1 &',
      'wait',
  ]
  assert calls(record) == []


def test_local_printed_command_is_exact(fakes, config, tmp_path):
  """The dry-run line, pasted into bash, runs exactly the intended argv."""
  env, record = fakes
  tricky = '--config.note=it\'s a "test" $HOME'
  result = launch(
      'local.sh', '--config', str(config), '--workdir', 'w', '--dry-run', '--', tricky, env=env
  )
  (line,) = commands(result.stdout)
  subprocess.run(['bash', '-c', line], env=env, check=True)
  (call,) = calls(record)
  assert call['argv'] == ['-m', 'dxnet_jax.main', '--config', str(config), '--workdir', 'w', tricky]
  assert call['env']['JAX_PLATFORMS'] == 'cpu'


def test_local_runs_processes_with_distributed_env(fakes, config, tmp_path):
  env, record = fakes
  workdir = tmp_path / 'work'
  result = launch(
      'local.sh',
      '--config',
      str(config),
      '--workdir',
      str(workdir),
      '--processes',
      '3',
      '--devices',
      '2',
      env=env,
  )
  assert result.returncode == 0, result.stderr
  got = sorted(calls(record), key=lambda c: c['env']['DXNET_PROCESS_ID'])
  assert [c['env']['DXNET_PROCESS_ID'] for c in got] == ['0', '1', '2']
  coords = {c['env']['DXNET_COORDINATOR'] for c in got}
  assert len(coords) == 1 and coords.pop().startswith('localhost:')
  for c in got:
    assert c['env']['DXNET_NUM_PROCESSES'] == '3'
    assert c['env']['XLA_FLAGS'] == '--xla_force_host_platform_device_count=2'
    assert c['argv'] == ['-m', 'dxnet_jax.main', '--config', str(config), '--workdir', str(workdir)]
  assert (workdir / 'logs' / 'process_1.log').exists()


def test_local_failure_stops_the_other_processes(fakes, config, tmp_path):
  """Process 1 fails once both run; process 0 (sleeping 60 s) is stopped, the status passed on.

  Process 1 waits for process 0's record before failing: under load process 0 could otherwise
  be stopped before it started, and the test would see one call.
  """
  env, record = fakes
  env.update(
      FAKE_SLEEP_0='60',
      FAKE_FAIL_MATCH='dxnet_jax.main',
      FAKE_FAIL_PID='1',
      FAKE_FAIL_STATUS='5',
      FAKE_FAIL_AFTER_RECORDS='2',
  )
  t0 = time.monotonic()
  result = launch(
      'local.sh',
      '--config',
      str(config),
      '--workdir',
      str(tmp_path / 'w'),
      '--processes',
      '2',
      env=env,
      timeout=50,
  )
  assert time.monotonic() - t0 < 30
  assert result.returncode == 5
  assert 'exited with status 5; stopping the others' in result.stderr
  assert len(calls(record)) == 2


@pytest.mark.parametrize(
    'args,message',
    [
        ([], '--config is required'),
        (['--config', '{cfg}'], '--workdir is required'),
        (['--config', '{cfg}', '--workdir'], '--workdir needs a value'),
        (['--config', 'nope/missing.py', '--workdir', 'w'], 'config file not found'),
        (['--config', 'configs/x.yaml', '--workdir', 'w'], 'must be a python config file'),
        (['--config', '{cfg}', '--workdir', 'w', '--devices', '0'], '--devices must be a positive'),
        (['--config', '{cfg}', '--workdir', 'w', '--processes', 'two'], '--processes must be'),
        (['--config', '{cfg}', '--workdir', 'w', '--port', '99'], '--port only applies'),
        (
            ['--config', '{cfg}', '--workdir', 'w', '--processes', '2', '--port', '70000'],
            '--port must be 1-65535',
        ),
        (
            ['--config', '{cfg}', '--workdir', 'w', '--frobnicate'],
            "unknown argument '--frobnicate'",
        ),
        (['--config', '{cfg}', '--workdir', 'w', '--', 'positional'], 'must be flags like'),
    ],
)
def test_local_bad_arguments(fakes, config, args, message):
  env, record = fakes
  args = [a.replace('{cfg}', str(config)) for a in args]
  result = launch('local.sh', *args, '--dry-run', env=env)
  assert result.returncode == 2
  assert message in result.stderr
  assert result.stdout == ''
  assert calls(record) == []


# --------------------------------------------------------------------------- gpu_host.sh


def test_gpu_host_dry_run_single(fakes, config):
  env, record = fakes
  result = launch(
      'gpu_host.sh', '--config', str(config), '--workdir', 'runs/c10', '--dry-run', env=env
  )
  assert result.returncode == 0, result.stderr
  assert commands(result.stdout) == [
      f'env python3 -m dxnet_jax.main --config {config} --workdir runs/c10'
  ]
  assert calls(record) == []


def test_gpu_host_dry_run_multi_node(fakes, config):
  env, _ = fakes
  result = launch(
      'gpu_host.sh',
      '--config',
      str(config),
      '--workdir',
      'gs://b/in105',
      '--gpus',
      '0,1,2,3',
      '--data-dir',
      'gs://b/tfds',
      '--num-nodes',
      '2',
      '--node-rank',
      '1',
      '--coordinator',
      '10.0.0.2:12355',
      '--install',
      '--config.batch_size=512',
      '--dry-run',
      env=env,
  )
  assert result.returncode == 0, result.stderr
  assert commands(result.stdout) == [
      f"python3 -m pip install -U 'jax[cuda12]' -e {REPO}",
      'env CUDA_VISIBLE_DEVICES=0,1,2,3 TFDS_DATA_DIR=gs://b/tfds '
      'DXNET_COORDINATOR=10.0.0.2:12355 DXNET_NUM_PROCESSES=2 DXNET_PROCESS_ID=1 '
      f'python3 -m dxnet_jax.main --config {config} --workdir gs://b/in105 '
      '--config.batch_size=512',
  ]


def test_gpu_host_runs_the_trainer(fakes, config):
  env, record = fakes
  result = launch('gpu_host.sh', '--config', str(config), '--workdir', 'w', '--gpus', '1', env=env)
  assert result.returncode == 0, result.stderr
  (call,) = calls(record)
  assert call['argv'] == ['-m', 'dxnet_jax.main', '--config', str(config), '--workdir', 'w']
  assert call['env']['CUDA_VISIBLE_DEVICES'] == '1'


@pytest.mark.parametrize(
    'args,message',
    [
        (['--num-nodes', '2'], 'needs --node-rank'),
        (['--num-nodes', '2', '--node-rank', '0'], 'needs --coordinator'),
        (['--num-nodes', '2', '--node-rank', '2', '--coordinator', 'h:1'], 'must be in 0..1'),
        (['--num-nodes', '2', '--node-rank', '0', '--coordinator', 'h'], 'must be HOST:PORT'),
        (['--node-rank', '0'], 'need --num-nodes > 1'),
        (['--num-nodes', '0'], '--num-nodes must be a positive integer'),
        (['--gpus', '0,a'], '--gpus must be a comma-separated list'),
    ],
)
def test_gpu_host_bad_arguments(fakes, config, args, message):
  env, record = fakes
  result = launch(
      'gpu_host.sh', '--config', str(config), '--workdir', 'w', *args, '--dry-run', env=env
  )
  assert result.returncode == 2
  assert message in result.stderr
  assert result.stdout == ''
  assert calls(record) == []


# --------------------------------------------------------------------------- tpu_pod.sh

POD = [
    '--name',
    'dx-in105',
    '--zone',
    'us-central2-b',
    '--accelerator-type',
    'v4-32',
    '--project',
    'my-proj',
    '--config',
    'configs/imagenet.py:dxnet105',
    '--workdir',
    'gs://bkt/runs/in105',
    '--data-dir',
    'gs://bkt/tfds',
]
WHERE = '--zone=us-central2-b --project=my-proj'


def test_tpu_pod_dry_run_tarball(fakes, src_repo, tmp_path):
  env, record = fakes
  result = launch(
      'tpu_pod.sh', *POD, '--src', str(src_repo), '--config.batch_size=1024', '--dry-run', env=env
  )
  assert result.returncode == 0, result.stderr
  tarball = tmp_path / 'dxnet_jax-dx-in105.tar.gz'
  cmds = commands(result.stdout)
  assert cmds[0] == (
      f'gcloud compute tpus tpu-vm create dx-in105 {WHERE} '
      '--accelerator-type=v4-32 --version=tpu-ubuntu2204-base'
  )
  assert cmds[1] == f'git -C {src_repo} archive --format=tar.gz -o {tarball} HEAD'
  assert cmds[2] == (
      f'gcloud compute tpus tpu-vm scp {tarball} dx-in105:dxnet_jax.tar.gz ' f'{WHERE} --worker=all'
  )
  assert cmds[3] == (
      f"gcloud compute tpus tpu-vm ssh dx-in105 {WHERE} --worker=all '--command=set -e; "
      'rm -rf ~/dxnet_jax && mkdir -p ~/dxnet_jax && tar -xzf ~/dxnet_jax.tar.gz -C '
      "~/dxnet_jax && python3 -m pip install -U jax\\[tpu\\] -e ~/dxnet_jax'"
  )
  assert cmds[4] == (
      f"gcloud compute tpus tpu-vm ssh dx-in105 {WHERE} --worker=all '--command=cd "
      '~/dxnet_jax && env TFDS_DATA_DIR=gs://bkt/tfds python3 -m dxnet_jax.main --config '
      "configs/imagenet.py:dxnet105 --workdir gs://bkt/runs/in105 --config.batch_size=1024'"
  )
  assert cmds[5] == f'gcloud compute tpus tpu-vm delete dx-in105 {WHERE} --quiet'
  assert len(cmds) == 6
  assert calls(record) == []
  assert not tarball.exists()  # a dry run builds nothing


def test_tpu_pod_dry_run_git_reuse_keep(fakes):
  env, _ = fakes
  pod = [a for a in POD if a not in ('--project', 'my-proj')]
  result = launch(
      'tpu_pod.sh',
      *pod,
      '--source',
      'git',
      '--git-url',
      'https://github.com/o/dxnet_jax.git',
      '--git-ref',
      'v0.1',
      '--reuse',
      '--env',
      'DXNET_HEARTBEAT_TIMEOUT=60',
      '--dry-run',
      env=env,
  )
  assert result.returncode == 0, result.stderr
  cmds = commands(result.stdout)
  assert len(cmds) == 2  # no create, no delete for a reused TPU
  assert (
      'git clone https://github.com/o/dxnet_jax.git ~/dxnet_jax && git -C ~/dxnet_jax '
      'checkout v0.1 && python3 -m pip install' in cmds[0]
  )
  assert (
      'env TFDS_DATA_DIR=gs://bkt/tfds DXNET_HEARTBEAT_TIMEOUT=60 python3 -m '
      'dxnet_jax.main' in cmds[1]
  )
  assert all('--project' not in c for c in cmds)


def test_tpu_pod_keep_prints_how_to_delete(fakes, src_repo):
  env, _ = fakes
  result = launch(
      'tpu_pod.sh', *POD, '--src', str(src_repo), '--keep', '--spot', '--dry-run', env=env
  )
  assert result.returncode == 0, result.stderr
  cmds = commands(result.stdout)
  assert cmds[0].endswith('--version=tpu-ubuntu2204-base --spot')
  assert not any(' delete ' in c for c in cmds)
  assert '# kept TPU dx-in105; delete it with: gcloud compute tpus tpu-vm delete' in result.stdout


@pytest.mark.parametrize(
    'accel,runtime',
    [
        ('v4-32', 'tpu-ubuntu2204-base'),
        ('v3-8', 'tpu-ubuntu2204-base'),
        ('v5litepod-16', 'v2-alpha-tpuv5-lite'),
        ('v5p-64', 'v2-alpha-tpuv5'),
        ('v6e-64', 'v2-alpha-tpuv6e'),
    ],
)
def test_tpu_pod_default_runtime(fakes, src_repo, accel, runtime):
  env, _ = fakes
  pod = list(POD)
  pod[pod.index('v4-32')] = accel
  result = launch('tpu_pod.sh', *pod, '--src', str(src_repo), '--dry-run', env=env)
  assert result.returncode == 0, result.stderr
  assert f'--accelerator-type={accel} --version={runtime}' in commands(result.stdout)[0]


def test_tpu_pod_printed_train_command_is_exact(fakes, src_repo, tmp_path):
  """Paste the printed ssh line into bash (fake gcloud), then run the remote command it
  carries in a fake home (fake python3): the trainer gets exactly the intended argv."""
  env, record = fakes
  tricky = '--config.note=it\'s "quoted" $HOME'
  result = launch(
      'tpu_pod.sh',
      *POD,
      '--src',
      str(src_repo),
      '--folder-data',
      'gs://bkt/dxnet_data',
      '--dry-run',
      '--',
      tricky,
      env=env,
  )
  cmds = commands(result.stdout)
  assert cmds[4] == (
      f'gcloud compute tpus tpu-vm ssh dx-in105 {WHERE} --worker=all '
      "'--command=mkdir -p ~/dxnet_data && gcloud storage rsync --recursive "
      "gs://bkt/dxnet_data ~/dxnet_data'"
  )
  train_line = cmds[5]
  subprocess.run(['bash', '-c', train_line], env=env, check=True)
  (ssh,) = calls(record)
  assert ssh['prog'] == 'gcloud' and ssh['argv'][:5] == [
      'compute',
      'tpus',
      'tpu-vm',
      'ssh',
      'dx-in105',
  ]
  remote = ssh['argv'][-1]
  assert remote.startswith('--command=')
  home = tmp_path / 'home'
  (home / 'dxnet_jax').mkdir(parents=True)
  subprocess.run(
      ['bash', '-c', remote[len('--command=') :]], env={**env, 'HOME': str(home)}, check=True
  )
  train = calls(record)[1]
  assert train['prog'] == 'python3'
  assert train['argv'] == [
      '-m',
      'dxnet_jax.main',
      '--config',
      'configs/imagenet.py:dxnet105',
      '--workdir',
      'gs://bkt/runs/in105',
      tricky,
  ]
  assert train['env']['TFDS_DATA_DIR'] == 'gs://bkt/tfds'
  assert train['env']['DXNET_DATA_DIR'] == f'{home}/dxnet_data'


def _gcloud_steps(record: Path) -> list[str]:
  return [c['argv'][3] for c in calls(record) if c['prog'] == 'gcloud']


def test_tpu_pod_real_run_with_fake_gcloud(fakes, src_repo, tmp_path):
  env, record = fakes
  log = tmp_path / 'train.log'
  result = launch('tpu_pod.sh', *POD, '--src', str(src_repo), '--log', str(log), env=env)
  assert result.returncode == 0, result.stderr
  assert _gcloud_steps(record) == ['create', 'scp', 'ssh', 'ssh', 'delete']
  tarball = tmp_path / 'dxnet_jax-dx-in105.tar.gz'
  listing = subprocess.run(
      ['tar', '-tzf', str(tarball)], capture_output=True, text=True, check=True
  ).stdout.split()
  assert 'configs/imagenet.py' in listing and 'configs/common.py' in listing
  assert log.exists()
  assert '+ gcloud compute tpus tpu-vm create dx-in105' in result.stderr


def test_tpu_pod_deletes_the_tpu_when_training_fails(fakes, src_repo):
  env, record = fakes
  env.update(FAKE_FAIL_MATCH='dxnet_jax.main', FAKE_FAIL_STATUS='3')
  result = launch('tpu_pod.sh', *POD, '--src', str(src_repo), env=env)
  assert result.returncode == 3
  assert _gcloud_steps(record) == ['create', 'scp', 'ssh', 'ssh', 'delete']


def test_tpu_pod_tarball_includes_uncommitted_edits(fakes, src_repo, tmp_path):
  env, record = fakes
  (src_repo / 'configs' / 'quickstart.py').write_text('def get_config():\n    return 2\n')
  result = launch('tpu_pod.sh', *POD, '--src', str(src_repo), '--reuse', env=env)
  assert result.returncode == 0, result.stderr
  assert _gcloud_steps(record) == ['scp', 'ssh', 'ssh']  # reused: no create, no delete
  extract = tmp_path / 'x'
  extract.mkdir()
  subprocess.run(
      ['tar', '-xzf', str(tmp_path / 'dxnet_jax-dx-in105.tar.gz'), '-C', str(extract)], check=True
  )
  assert 'return 2' in (extract / 'configs' / 'quickstart.py').read_text()


@pytest.mark.parametrize(
    'change,message',
    [
        ({'--name': None}, '--name is required'),
        ({'--zone': None}, '--zone is required'),
        ({'--accelerator-type': None}, '--accelerator-type is required'),
        ({'--config': None}, '--config is required'),
        ({'--workdir': None}, '--workdir is required'),
        ({'--name': 'My_TPU'}, '--name must be lower-case'),
        ({'--zone': 'uscentral'}, '--zone must look like'),
        ({'--accelerator-type': 'tpu-32'}, '--accelerator-type must look like'),
        ({'--accelerator-type': 'v9z-8'}, 'no default --version'),
        ({'--workdir': '/home/me/runs'}, '--workdir must be a gs:// bucket path'),
        ({'--data-dir': '/data/tfds'}, '--data-dir must be a gs:// bucket path'),
        ({'--folder-data': 'shared/data'}, '--folder-data must be a gs:// bucket path'),
        ({'--config': 'configs/missing.py'}, 'is not a tracked file'),
        ({'--config': '/abs/configs/x.py'}, 'must be a path inside the repository'),
        ({'--source': 'rsync'}, "--source must be 'tarball' or 'git'"),
        ({'--source': 'git'}, '--source git needs --git-url'),
        ({'--env': 'NOEQUALS'}, '--env must be KEY=VALUE'),
        ({'--project': 'X'}, '--project is not a valid project id'),
    ],
)
def test_tpu_pod_bad_arguments(fakes, src_repo, change, message):
  env, record = fakes
  args = dict(zip(POD[::2], POD[1::2]))
  args['--src'] = str(src_repo)
  for key, value in change.items():
    if value is None:
      del args[key]
    else:
      args[key] = value
  flat = [x for kv in args.items() for x in kv]
  result = launch('tpu_pod.sh', *flat, '--dry-run', env=env)
  assert result.returncode == 2, result.stdout + result.stderr
  assert message in result.stderr
  assert result.stdout == ''
  assert calls(record) == []


def test_dry_run_lines_parse_as_shell(fakes, src_repo, config):
  """Every printed command line is well-formed shell (balanced quotes)."""
  env, _ = fakes
  outs = [
      launch('tpu_pod.sh', *POD, '--src', str(src_repo), '--dry-run', env=env).stdout,
      launch(
          'local.sh',
          '--config',
          str(config),
          '--workdir',
          'w',
          '--processes',
          '2',
          '--port',
          '1',
          '--dry-run',
          env=env,
      ).stdout,
      launch(
          'gpu_host.sh',
          '--config',
          str(config),
          '--workdir',
          'w',
          '--install',
          '--dry-run',
          env=env,
      ).stdout,
  ]
  for out in outs:
    for line in commands(out):
      assert shlex.split(line)
