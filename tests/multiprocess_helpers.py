"""Runs JAX programs as several processes on localhost, for the multi-process tests.

:func:`launch` starts one run: ``processes`` copies of a command, each on ``devices`` CPU
devices, joined by jax.distributed through ``dxnet_jax.distributed``'s DXNET_* variables. The
returned :class:`Run` waits for its processes, kills them, and, when something goes wrong, fails
the test with a report of every process: its exit status, its command, the tail of what it
printed, the coordinator port and the timeouts.

Each multi-process run owns its coordinator port until it ends: the port is held by a bound
socket with SO_REUSEPORT, so the kernel hands it to no other ``bind(('', 0))`` -- another test,
an xdist worker, a second copy of the suite -- while process 0's coordination service (gRPC,
which also binds with SO_REUSEPORT) can still listen on it. Picking a free port and closing it
before process 0 binds would leave a window in which another run could pick the same one.

Every command starts through this file (``python multiprocess_helpers.py ARGS``), which wraps
``dxnet_jax.distributed.initialize`` with two things only tests need:

* Fail fast: a process that raises an uncaught exception would wait at JAX's shutdown barrier
  for ``shutdown_timeout`` seconds while its peers wait in a collective; the hook prints the
  traceback and leaves with ``os._exit(1)``, so the others learn of it through the heartbeat.
* Connected CPU collectives: XLA connects gloo for a group of devices the first time a program
  runs a collective over it, and that rendezvous gives up after a fixed 30 s (jax 0.10). On a
  loaded 2-core machine one process can compile 30 s later than another, so the processes meet
  at a coordination-service barrier first and connect the two groups data-parallel programs
  use: all devices, and each local device with its counterparts (orbax's barriers).
"""

from __future__ import annotations

import dataclasses
import os
import runpy
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = str(Path(__file__).resolve())

# How long the processes of a run wait for each other at start-up (DXNET_INIT_TIMEOUT): to
# connect to the coordinator, and to connect the CPU collectives. Python and JAX start in seconds
# on an idle machine and well within this on a busy one.
INIT_TIMEOUT_S = 240
# Seconds without heartbeats before the coordinator declares a process dead, for runs that no
# test kills: long enough that a process starved of CPU is not taken for a dead one.
HEARTBEAT_S = 30
# How long the others of a run may take to stop on their own after one of them failed (they
# learn of it within a heartbeat timeout), so that the report shows what each of them said.
_STOP_GRACE_S = 30

# Settings of the test's own environment that would join the children to another cluster.
_DISTRIBUTED_VARS = (
    'DXNET_',
    'JAX_COORDINATOR',
    'JAX_NUM_PROCESSES',
    'JAX_PROCESS_ID',
    'JAX_LOCAL_DEVICE_IDS',
)


def process_env(devices: int) -> dict[str, str]:
  """The environment of one JAX process on ``devices`` CPU devices, not part of a cluster.

  The suite's compile options (XLA_FLAGS) and caches (tests/conftest.py) carry over.
  """
  env = {
      k: v
      for k, v in os.environ.items()
      if k == 'DXNET_JAX_NATIVE_CACHE' or not k.startswith(_DISTRIBUTED_VARS)
  }
  env.update(
      XLA_FLAGS=(
          os.environ.get('XLA_FLAGS', '') + f' --xla_force_host_platform_device_count={devices}'
      ).strip(),
      JAX_PLATFORMS='cpu',
      PYTHONUNBUFFERED='1',
      PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in [env.get('PYTHONPATH')] if p]),
      TF_CPP_MIN_LOG_LEVEL='0',
  )
  return env


def peer_death_reported(stderr: str) -> bool:
  """The survivor said why it stopped: JAX's coordination service reported the dead task, or
  a collective lost its peer and the fail-fast hook said so."""
  return 'detected fatal errors' in stderr or 'another process probably died' in stderr


def tail(path: Path, chars: int = 3000) -> str:
  """The end of a log, without the stack-frame lines of a fatal absl log."""
  text = path.read_text(errors='replace')[-chars:] if path.exists() else '(no file)'
  return '\n'.join(line for line in text.splitlines() if not line.startswith('    @'))


class _PortReservation:
  """A free localhost port, held until :meth:`release` (see the module docstring)."""

  def __init__(self):
    self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    self._socket.bind(('127.0.0.1', 0))
    self.port = self._socket.getsockname()[1]

  def release(self) -> None:
    self._socket.close()


@dataclasses.dataclass
class Process:
  """One process of a run and the files its output goes to."""

  index: int
  popen: subprocess.Popen
  command: list[str]
  stdout: Path
  stderr: Path

  @property
  def pid(self) -> int:
    return self.popen.pid

  @property
  def returncode(self) -> int | None:
    return self.popen.poll()

  def stdout_text(self) -> str:
    return self.stdout.read_text(errors='replace')

  def stderr_text(self) -> str:
    return self.stderr.read_text(errors='replace')

  def status(self) -> str:
    code = self.popen.poll()
    if code is None:
      return 'still running'
    if code < 0:
      return f'killed by signal {-code}'
    return f'exit status {code}'


class Run:
  """The processes of one run; ends them (and frees the port) when it leaves a ``with``."""

  def __init__(
      self,
      name: str,
      processes: list[Process],
      devices: int,
      settings: dict[str, str],
      port: _PortReservation | None,
  ):
    self.name = name
    self.processes = processes
    self.devices = devices
    self.settings = settings
    self._port = port
    self.started = time.monotonic()

  def __getitem__(self, index: int) -> Process:
    return self.processes[index]

  def __iter__(self) -> Iterator[Process]:
    return iter(self.processes)

  def __len__(self) -> int:
    return len(self.processes)

  def __enter__(self) -> Run:
    return self

  def __exit__(self, *exc_info) -> None:
    self.kill()

  def kill(self) -> None:
    """Kills the processes still running and frees the coordinator port."""
    for process in self.processes:
      if process.popen.poll() is None:
        process.popen.kill()
        process.popen.wait()
    if self._port is not None:
      self._port.release()
      self._port = None

  def running(self) -> bool:
    return any(p.popen.poll() is None for p in self.processes)

  def failed(self) -> list[Process]:
    return [p for p in self.processes if p.popen.poll() not in (None, 0)]

  def wait(self, timeout: float) -> None:
    """Waits until every process exited with status 0; fails the test with a report if one
    did not, or if they still run after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while self.running():
      if self.failed():
        self._stop_after_failure()
        break
      if time.monotonic() > deadline:
        self.fail(f'still running after {timeout:.0f} s')
      time.sleep(0.2)
    if self.failed():
      self.fail(', '.join(f'process {p.index} ended with {p.status()}' for p in self.failed()))
    self.kill()

  def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
    """Waits until ``ready()``, while every process runs; fails the test with a report if one
    exits first or ``ready()`` is still false after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
      exited = [p for p in self.processes if p.popen.poll() is not None]
      if exited:
        self._stop_after_failure()
        self.fail(f'process {exited[0].index} ended with {exited[0].status()} before {what}')
      if time.monotonic() > deadline:
        self.fail(f'still waiting after {timeout:.0f} s until {what}')
      time.sleep(0.2)

  def wait_exit(self, index: int, timeout: float, since: str) -> None:
    """Waits for process ``index`` to exit, with any status; fails the test with a report if
    it still runs ``timeout`` seconds later (``since`` says what it should have noticed)."""
    try:
      self.processes[index].popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      self.fail(f'process {index} still running {timeout:.0f} s after {since}')

  def fail(self, headline: str) -> None:
    """Kills what still runs and fails the test with a report of every process."""
    report = self.report(headline)
    self.kill()
    pytest.fail(report, pytrace=False)

  def report(self, headline: str) -> str:
    elapsed = time.monotonic() - self.started
    settings = ', '.join(f'{k}={v}' for k, v in self.settings.items()) or 'one process'
    lines = [
        f"run '{self.name}' ({len(self)} process(es) x {self.devices} CPU devices): {headline} "
        f'({elapsed:.0f} s after the start)',
        f'settings: {settings}',
    ]
    for p in self.processes:
      lines += [
          f'--- process {p.index} of {len(self)} (pid {p.pid}): {p.status()}',
          f"command: {' '.join(p.command)}",
          f'stderr ({p.stderr}):',
          tail(p.stderr),
          f'stdout ({p.stdout}):',
          tail(p.stdout, 1000),
      ]
    return '\n'.join(lines)

  def _stop_after_failure(self) -> None:
    """Gives the others the time to notice a failed process and stop by themselves."""
    deadline = time.monotonic() + _STOP_GRACE_S
    while self.running() and time.monotonic() < deadline:
      time.sleep(0.2)


def launch(
    args: Sequence[str],
    logdir: Path,
    *,
    processes: int = 1,
    devices: int = 2,
    name: str = 'run',
    heartbeat_s: int = HEARTBEAT_S,
    env: dict[str, str] | None = None,
) -> Run:
  """Starts ``python ARGS`` as ``processes`` processes of one run on ``devices`` CPU devices each.

  Process ``i`` writes to ``logdir/NAME.pI.out`` and ``.err``. One process gets no DXNET_*
  variables: a plain single-process run. ``env`` adds variables to every process.
  """
  logdir.mkdir(parents=True, exist_ok=True)
  port = _PortReservation() if processes > 1 else None
  settings: dict[str, str] = {}
  if port is not None:
    settings = {
        'DXNET_COORDINATOR': f'localhost:{port.port}',
        'DXNET_NUM_PROCESSES': str(processes),
        'DXNET_INIT_TIMEOUT': str(INIT_TIMEOUT_S),
        'DXNET_HEARTBEAT_TIMEOUT': str(heartbeat_s),
    }
  settings.update(env or {})
  command = [sys.executable, LAUNCHER, *args]
  started = []
  try:
    for index in range(processes):
      process_vars = dict(settings, DXNET_PROCESS_ID=str(index)) if port else settings
      out, err = logdir / f'{name}.p{index}.out', logdir / f'{name}.p{index}.err'
      with open(out, 'w') as fo, open(err, 'w') as fe:
        popen = subprocess.Popen(
            command,
            cwd=REPO,
            env=dict(process_env(devices), **process_vars),
            stdout=fo,
            stderr=fe,
        )
      started.append(Process(index, popen, command, out, err))
  except BaseException:
    Run(name, started, devices, settings, port).kill()
    raise
  return Run(name, started, devices, settings, port)


# --------------------------------------------------------------------------- process side

# Substrings of the errors a collective raises when a peer process vanished (gloo on CPU, the
# coordination service elsewhere), and of gloo's rendezvous timing out.
_PEER_LOST_MARKERS = (
    'Connection reset by peer',
    'Connection closed by peer',
    'Connection refused',
    'Gloo',
    'Socket closed',
    'UNAVAILABLE',
    'heartbeat',
)
_RENDEZVOUS_TIMEOUT_MARKERS = ('GetKeyValue() timed out', 'Deadline exceeded in wait()')


def _failure_cause(text: str) -> str:
  """What an uncaught exception's message says about the other processes, as a sentence."""
  if 'Gloo context initialization failed' in text and any(
      m in text for m in _RENDEZVOUS_TIMEOUT_MARKERS
  ):
    return (
        " The other processes did not reach a collective within the 30 s of XLA's gloo "
        'rendezvous: one of them is slow or died; see their logs.'
    )
  if any(m in text for m in _PEER_LOST_MARKERS):
    return (
        ' A cross-process collective lost its connection: another process probably died; '
        'see its log.'
    )
  return ''


def install_fail_fast() -> None:
  """An uncaught exception prints its traceback and ends the process at once."""
  import jax

  where = f'process {jax.process_index()} of {jax.process_count()}'

  def hook(exc_type, exc, tb):
    try:
      sys.stdout.flush()
      traceback.print_exception(exc_type, exc, tb, file=sys.stderr)
      print(
          f'multiprocess_helpers: {where} failed with an uncaught {exc_type.__name__}.'
          f'{_failure_cause(str(exc))} Exiting now (os._exit(1)).',
          file=sys.stderr,
          flush=True,
      )
    finally:
      os._exit(1)

  sys.excepthook = hook


def connect_cpu_collectives(timeout_s: int = INIT_TIMEOUT_S) -> None:
  """Connects gloo for the device groups of data-parallel programs while all processes wait."""
  import jax
  import numpy as np
  from jax._src import distributed as jax_distributed  # the coordination client's barrier
  from jax.experimental import multihost_utils
  from jax.sharding import NamedSharding, PartitionSpec

  from dxnet_jax import sharding

  mesh = sharding.data_mesh()
  ones = sharding.global_batch_from_local(np.ones(jax.local_device_count(), np.float32), mesh)
  replicated = NamedSharding(mesh, PartitionSpec())
  count = jax.jit(lambda x: x.sum(), out_shardings=replicated).lower(ones).compile()
  jax_distributed.global_state.client.wait_at_barrier('connect_cpu_collectives', timeout_s * 1000)
  assert int(sharding.fetch(count(ones))) == jax.device_count()
  multihost_utils.sync_global_devices('connect_cpu_collectives')


def _wrap_initialize() -> None:
  """`dxnet_jax.distributed.initialize`, followed in multi-process runs by the two steps above."""
  from dxnet_jax import distributed

  initialize = distributed.initialize

  def wrapped(*args, **kwargs):
    info = initialize(*args, **kwargs)
    if info.is_multiprocess:
      install_fail_fast()
      connect_cpu_collectives(int(os.environ.get(distributed.ENV_INIT_TIMEOUT, INIT_TIMEOUT_S)))
    return info

  distributed.initialize = wrapped


if __name__ == '__main__':
  # python multiprocess_helpers.py (-m MODULE | SCRIPT) ARGS...: runs it as __main__.
  sys.path.insert(0, str(REPO))
  _wrap_initialize()
  if sys.argv[1] == '-m':
    sys.argv = [sys.argv[2], *sys.argv[3:]]
    runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)
  else:
    sys.argv = sys.argv[1:]
    sys.path.insert(0, str(Path(sys.argv[0]).resolve().parent))
    runpy.run_path(sys.argv[0], run_name='__main__')
