"""Multi-host start-up and helpers: one code path from one CPU to a TPU pod slice.

Call :func:`initialize` first thing in the program (before any JAX computation, before
``jax.devices()``). What it does depends on where it runs:

* Nothing configured, one host: nothing (a plain single-process run).
* A Cloud TPU VM (detected from the machine, see :func:`on_cloud_tpu_vm`):
  ``jax.distributed.initialize()`` with no addresses; JAX reads the slice's topology from the
  TPU metadata. On a one-host slice this is a one-process "cluster" and costs nothing.
* GPU or CPU clusters: coordinator address, process count and process id come from the
  arguments, or else from the environment (``DXNET_COORDINATOR``, ``DXNET_NUM_PROCESSES``,
  ``DXNET_PROCESS_ID``, or JAX's own ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
  ``JAX_PROCESS_ID``). All three or none: a partial set is an error, not a silent single run.
* ``DXNET_DISTRIBUTED=detect``: ``jax.distributed.initialize()`` with whatever is set and JAX's
  own cluster detection for the rest (Slurm, Open MPI, Kubernetes, TPU).
  ``DXNET_DISTRIBUTED=off`` never initialises (e.g. one process on one host of a pod, debugging).

Environment variables (arguments to :func:`initialize` win over them):

=========================== ==============================================================
``DXNET_DISTRIBUTED``        ``auto`` (default) | ``off`` | ``detect``
``DXNET_COORDINATOR``        ``host:port`` of process 0's coordination service
``DXNET_NUM_PROCESSES``      number of processes (one per host is usual)
``DXNET_PROCESS_ID``         this process's id, ``0 .. num_processes-1``
``DXNET_LOCAL_DEVICE_IDS``   e.g. ``0,1``: the local accelerators this process uses (GPU)
``DXNET_HEARTBEAT_TIMEOUT``  seconds without heartbeats before a process counts as dead (100)
``DXNET_INIT_TIMEOUT``       seconds to wait for all processes to connect, and again for all of
                             them to reach the connection of the CPU collectives (300)
``DXNET_SHUTDOWN_TIMEOUT``   seconds a process waits for the others at a clean exit (300)
``DXNET_FAIL_FAST``          ``1`` (default) | ``0``: see "a process dies" below
=========================== ==============================================================

A process dies: JAX's coordination service (run by process 0) expects heartbeats from every
process. When one stops -- killed, out of memory, machine gone -- the service marks it dead after
``heartbeat_timeout`` seconds and tells every other process, which then terminates at once with
"Terminating process because the JAX distributed service detected fatal errors. This most likely
indicates that another task died" (exit status 134, SIGABRT), even when it is blocked inside a
collective. When process 0 dies, the others lose the service's connection and terminate within
about a second. A process that raises an uncaught Python exception would instead wait at JAX's
shutdown barrier for ``shutdown_timeout`` seconds while its peers wait in a collective; with
fail-fast on (the default for multi-process runs) :func:`initialize` installs an exception hook
that prints the traceback and leaves with ``os._exit(1)`` at once, so the others learn of it
through the heartbeat like any other death. Detection therefore takes at most about
``heartbeat_timeout`` seconds plus one heartbeat interval.

On CPU (the multi-process tests, CPU clusters) cross-process collectives use gloo, selected before
the backend starts. XLA connects gloo for a group of devices the first time a program runs a
collective over that group, and that rendezvous gives up after a fixed 30 s (jax 0.10, not
configurable): a process that gets there 30 s before another (a slower compilation, a busy
machine) fails with "Gloo context initialization failed: ... GetKeyValue() timed out", and the
late one, connecting to the peer that has left, with "Connection refused". So after
``jax.distributed.initialize`` a multi-process CPU run waits at a barrier (``DXNET_INIT_TIMEOUT``)
and then connects the two device groups that data-parallel programs (jit over
:func:`data_mesh`, pmap, ``jax.experimental.multihost_utils``, orbax) use: all devices, and each
local device with its counterparts in the other processes. XLA keeps these connections for the
life of the process, and a collective on a connected group waits for late processes up to XLA's
collective timeout (``--xla_cpu_collective_timeout_seconds``, 30 min) instead.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import logging
import os
import sys
import threading
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

logger = logging.getLogger(__name__)

ENV_MODE = 'DXNET_DISTRIBUTED'
ENV_COORDINATOR = 'DXNET_COORDINATOR'
ENV_NUM_PROCESSES = 'DXNET_NUM_PROCESSES'
ENV_PROCESS_ID = 'DXNET_PROCESS_ID'
ENV_LOCAL_DEVICE_IDS = 'DXNET_LOCAL_DEVICE_IDS'
ENV_HEARTBEAT_TIMEOUT = 'DXNET_HEARTBEAT_TIMEOUT'
ENV_INIT_TIMEOUT = 'DXNET_INIT_TIMEOUT'
ENV_SHUTDOWN_TIMEOUT = 'DXNET_SHUTDOWN_TIMEOUT'
ENV_FAIL_FAST = 'DXNET_FAIL_FAST'

# Aliases read when the DXNET_* variable is unset (JAX itself reads JAX_COORDINATOR_ADDRESS).
_ALIASES = {
    ENV_COORDINATOR: ('JAX_COORDINATOR_ADDRESS',),
    ENV_NUM_PROCESSES: ('JAX_NUM_PROCESSES',),
    ENV_PROCESS_ID: ('JAX_PROCESS_ID',),
    ENV_LOCAL_DEVICE_IDS: ('JAX_LOCAL_DEVICE_IDS',),
}

# JAX's own defaults (jax.distributed.initialize), kept unless overridden.
DEFAULT_HEARTBEAT_TIMEOUT_S = 100
DEFAULT_INIT_TIMEOUT_S = 300
DEFAULT_SHUTDOWN_TIMEOUT_S = 300
DEFAULT_BARRIER_TIMEOUT_S = 600

_GOOGLE_PCI_VENDOR_ID = '0x1ae0'  # TPU chips show up as PCI devices of this vendor.

MODES = ('auto', 'off', 'detect')


@dataclasses.dataclass(frozen=True)
class Plan:
  """What :func:`initialize` will do, resolved from arguments and environment (no side effects).

  ``kind`` is ``'single'`` (do nothing), ``'explicit'`` (coordinator, count and id known),
  ``'tpu'`` (auto-detect on a Cloud TPU VM) or ``'detect'`` (JAX's cluster auto-detection).
  """

  kind: str
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  local_device_ids: tuple[int, ...] | None = None
  reason: str = ''


@dataclasses.dataclass(frozen=True)
class DistributedInfo:
  """The outcome of :func:`initialize`."""

  kind: str  # as Plan.kind
  process_id: int
  num_processes: int
  coordinator_address: str | None
  heartbeat_timeout_s: int | None

  @property
  def is_multiprocess(self) -> bool:
    return self.num_processes > 1


_lock = threading.Lock()
_info: DistributedInfo | None = None
_plan: Plan | None = None
_hook_installed = False


# --------------------------------------------------------------------------- resolution


def _lookup(env: Mapping[str, str], name: str) -> tuple[str | None, str | None]:
  """Value of ``name`` or its first set alias, with the variable it came from."""
  for var in (name,) + _ALIASES.get(name, ()):
    value = env.get(var)
    if value is not None and value.strip() != '':
      return value.strip(), var
  return None, None


def _parse_int(value: Any, source: str, *, minimum: int) -> int:
  try:
    number = int(str(value).strip())
  except ValueError:
    raise ValueError(f'{source} must be an integer, got {value!r}') from None
  if number < minimum:
    raise ValueError(f'{source} must be >= {minimum}, got {number}')
  return number


def _parse_device_ids(value: Any, source: str) -> tuple[int, ...]:
  if isinstance(value, int):
    return (value,)
  if isinstance(value, str):
    parts = [p for p in value.replace(' ', '').split(',') if p]
  else:
    parts = list(value)
  if not parts:
    raise ValueError(f'{source} is empty')
  return tuple(_parse_int(p, source, minimum=0) for p in parts)


def on_cloud_tpu_vm(env: Mapping[str, str] | None = None) -> bool:
  """True on a Cloud TPU VM (or GKE TPU node) whose TPUs JAX will use.

  ``jax.default_backend()`` cannot be asked before ``jax.distributed.initialize``, so this looks
  at the machine: GKE and multislice set ``TPU_WORKER_HOSTNAMES`` / ``MEGASCALE_*``; a TPU VM
  has PCI devices of Google's vendor id and the ``libtpu`` package (what JAX checks itself).
  ``JAX_PLATFORMS`` without ``tpu`` (e.g. ``cpu``) means the TPUs are not to be used.
  """
  env = os.environ if env is None else env
  platforms = env.get('JAX_PLATFORMS', '').strip().lower()
  if platforms and 'tpu' not in platforms.split(','):
    return False
  if env.get('TPU_WORKER_HOSTNAMES') or env.get('MEGASCALE_COORDINATOR_ADDRESS'):
    return True
  has_chips = False
  for vendor_file in glob.glob('/sys/bus/pci/devices/*/vendor'):
    try:
      with open(vendor_file) as f:
        if f.read().strip() == _GOOGLE_PCI_VENDOR_ID:
          has_chips = True
          break
    except OSError:
      continue
  return has_chips and importlib.util.find_spec('libtpu') is not None


def plan_initialization(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: int | Sequence[int] | str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    tpu_detected: bool | None = None,
) -> Plan:
  """Resolve arguments and environment into a :class:`Plan`. Pure except for TPU detection."""
  env = os.environ if env is None else env
  mode = env.get(ENV_MODE, 'auto').strip().lower() or 'auto'
  if mode not in MODES:
    raise ValueError(f"{ENV_MODE} must be one of {'|'.join(MODES)}, got {mode!r}")

  sources: dict[str, str | None] = {}
  values: dict[str, Any] = {}
  for key, arg, var in (
      ('coordinator_address', coordinator_address, ENV_COORDINATOR),
      ('num_processes', num_processes, ENV_NUM_PROCESSES),
      ('process_id', process_id, ENV_PROCESS_ID),
      ('local_device_ids', local_device_ids, ENV_LOCAL_DEVICE_IDS),
  ):
    if arg is not None:
      values[key], sources[key] = arg, f'argument {key}'
    else:
      values[key], sources[key] = _lookup(env, var)

  coord = values['coordinator_address']
  if coord is not None:
    coord = str(coord).strip()
    host, sep, port = coord.rpartition(':')
    if not sep or not host or not port.isdigit():
      raise ValueError(f"{sources['coordinator_address']} must be 'host:port', got {coord!r}")
  count = (
      None
      if values['num_processes'] is None
      else _parse_int(values['num_processes'], sources['num_processes'], minimum=1)
  )
  pid = (
      None
      if values['process_id'] is None
      else _parse_int(values['process_id'], sources['process_id'], minimum=0)
  )
  devices = (
      None
      if values['local_device_ids'] is None
      else _parse_device_ids(values['local_device_ids'], sources['local_device_ids'])
  )

  if mode == 'off':
    return Plan('single', reason=f'{ENV_MODE}=off')
  if mode == 'detect':
    return Plan(
        'detect',
        coord,
        count,
        pid,
        devices,
        reason=f'{ENV_MODE}=detect: jax.distributed cluster auto-detection',
    )

  given = {
      k: v
      for k, v in (('coordinator_address', coord), ('num_processes', count), ('process_id', pid))
      if v is not None
  }
  if given and len(given) < 3:
    names = {
        'coordinator_address': ENV_COORDINATOR,
        'num_processes': ENV_NUM_PROCESSES,
        'process_id': ENV_PROCESS_ID,
    }
    have = ', '.join(f'{k} (from {sources[k]})' for k in given)
    missing = ', '.join(f'{k} (argument or {names[k]})' for k in names if k not in given)
    raise ValueError(
        'multi-process start needs coordinator address, process count and process id '
        f'together; got {have} but not {missing}. Set all three, none (single host or '
        f'Cloud TPU), or {ENV_MODE}=detect to let jax.distributed detect the cluster '
        '(Slurm, Open MPI, Kubernetes).'
    )
  if len(given) == 3:
    if pid >= count:
      raise ValueError(
          f"process_id ({pid}, from {sources['process_id']}) must be < num_processes "
          f"({count}, from {sources['num_processes']})"
      )
    if count == 1:
      return Plan('single', coord, 1, 0, devices, reason='num_processes=1')
    return Plan(
        'explicit', coord, count, pid, devices, reason=f'coordinator {coord}, {count} processes'
    )
  detected = on_cloud_tpu_vm(env) if tpu_detected is None else tpu_detected
  if detected:
    return Plan('tpu', local_device_ids=devices, reason='Cloud TPU VM detected')
  return Plan('single', local_device_ids=devices, reason='nothing configured')


def _timeout(value: int | None, arg: str, var: str, default: int) -> int:
  if value is not None:
    return _parse_int(value, f'argument {arg}', minimum=1)
  raw = os.environ.get(var)
  if raw is None or raw.strip() == '':
    return default
  return _parse_int(raw, var, minimum=1)


# --------------------------------------------------------------------------- initialise


def _enable_cpu_collectives() -> None:
  """Select gloo for cross-process collectives on the CPU backend, unless one is chosen."""
  current = jax.config.jax_cpu_collectives_implementation
  if current in (None, 'none', ''):
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')


# Substrings of the errors a collective raises when a peer process vanished (gloo on CPU, the
# coordination service elsewhere).
_PEER_LOST_MARKERS = (
    'Connection reset by peer',
    'Connection closed by peer',
    'Connection refused',
    'Gloo',
    'Socket closed',
    'UNAVAILABLE',
    'heartbeat',
)
# Substrings of the error of XLA's gloo rendezvous when the other processes did not arrive in time.
_RENDEZVOUS_TIMEOUT_MARKERS = ('GetKeyValue() timed out', 'Deadline exceeded in wait()')


def _failure_cause(text: str) -> str:
  """What an uncaught exception's message says about the other processes, as a sentence."""
  if 'Gloo context initialization failed' in text and any(
      m in text for m in _RENDEZVOUS_TIMEOUT_MARKERS
  ):
    return (
        ' The other processes did not reach a collective on a group of devices that was not '
        "connected at start-up within the 30 s of XLA's gloo rendezvous: one of them is slow "
        'or died; see their logs.'
    )
  if any(m in text for m in _PEER_LOST_MARKERS):
    return (
        ' A cross-process collective lost its connection: another process probably died; '
        'see its log.'
    )
  return ''


def _fail_fast_excepthook(exc_type, exc, tb):
  """Report an uncaught exception and leave at once (see the module docstring)."""
  try:
    sys.stdout.flush()
    traceback.print_exception(exc_type, exc, tb, file=sys.stderr)
    info = _info
    where = f'process {info.process_id} of {info.num_processes}' if info else 'process'
    hb = info.heartbeat_timeout_s if info else None
    print(
        f'dxnet_jax.distributed: {where} failed with an uncaught {exc_type.__name__}.'
        f'{_failure_cause(str(exc))} Exiting now (os._exit(1)) so the other processes stop '
        f'within the heartbeat timeout ({hb} s) instead of waiting in a collective.',
        file=sys.stderr,
        flush=True,
    )
  finally:
    os._exit(1)


def _connect_cpu_collectives(timeout_s: int) -> None:
  """Connects gloo for the device groups of data-parallel programs while all processes wait.

  Only for several processes on the CPU backend (see the module docstring). The program is
  compiled before the barrier, so the processes leave it together and meet within moments at
  each of the two rendezvous: all devices, then each local device with its counterparts (the
  group ``multihost_utils.sync_global_devices`` uses, as orbax does).
  """
  if jax.process_count() == 1 or jax.default_backend() != 'cpu':
    return
  mesh = data_mesh()
  ones = global_batch_from_local(np.ones(jax.local_device_count(), np.float32), mesh)
  replicated = NamedSharding(mesh, PartitionSpec())
  count_devices = jax.jit(lambda x: x.sum(), out_shardings=replicated).lower(ones).compile()
  sync_barrier('dxnet_jax.distributed.connect_cpu_collectives', timeout_s)
  logger.info('dxnet_jax.distributed: connecting the CPU collectives')
  devices = int(fetch(count_devices(ones)))
  if devices != jax.device_count():
    raise RuntimeError(
        f'the CPU collectives counted {devices} devices across the processes, not '
        f'{jax.device_count()}: the processes do not agree on the devices of the run'
    )
  multihost_utils.sync_global_devices('dxnet_jax.distributed.connect_cpu_collectives')


def _install_fail_fast() -> None:
  global _hook_installed
  if not _hook_installed:
    sys.excepthook = _fail_fast_excepthook
    _hook_installed = True


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: int | Sequence[int] | None = None,
    *,
    heartbeat_timeout_s: int | None = None,
    initialization_timeout_s: int | None = None,
    shutdown_timeout_s: int | None = None,
    fail_fast: bool | None = None,
) -> DistributedInfo:
  """Start JAX's multi-process runtime when the run needs one; no-op otherwise.

  Idempotent: a second call returns the first call's result (and raises if it now resolves to
  a different setup). Raises ``ValueError`` for a partial or malformed configuration and
  ``RuntimeError`` when JAX's backend was already started by an earlier JAX call. Several
  processes on the CPU backend also start the backend here and connect the CPU collectives
  (see the module docstring); ``initialization_timeout_s`` bounds the wait for the others at
  both steps.
  """
  global _info, _plan
  with _lock:
    plan = plan_initialization(coordinator_address, num_processes, process_id, local_device_ids)
    if _info is not None:
      if plan != _plan:
        raise RuntimeError(
            f'dxnet_jax.distributed.initialize was already called with {_plan}; '
            f'now it resolves to {plan}'
        )
      return _info
    import jax._src.distributed as jax_distributed  # the state jax.distributed keeps

    if jax.distributed.is_initialized():  # someone called jax.distributed.initialize
      state = jax_distributed.global_state
      _info = DistributedInfo(
          'external', state.process_id, state.num_processes, state.coordinator_address, None
      )
      _plan = plan
      return _info
    if plan.kind == 'single':
      if plan.local_device_ids is not None:
        jax.config.update('jax_cuda_visible_devices', ','.join(map(str, plan.local_device_ids)))
      _info = DistributedInfo('single', 0, 1, None, None)
      _plan = plan
      logger.info('dxnet_jax.distributed: single process (%s)', plan.reason)
      return _info

    heartbeat = _timeout(
        heartbeat_timeout_s,
        'heartbeat_timeout_s',
        ENV_HEARTBEAT_TIMEOUT,
        DEFAULT_HEARTBEAT_TIMEOUT_S,
    )
    init_timeout = _timeout(
        initialization_timeout_s,
        'initialization_timeout_s',
        ENV_INIT_TIMEOUT,
        DEFAULT_INIT_TIMEOUT_S,
    )
    shutdown = _timeout(
        shutdown_timeout_s, 'shutdown_timeout_s', ENV_SHUTDOWN_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT_S
    )
    _enable_cpu_collectives()
    kwargs = dict(
        initialization_timeout=init_timeout,
        heartbeat_timeout_seconds=heartbeat,
        shutdown_timeout_seconds=shutdown,
    )
    if plan.local_device_ids is not None:
      kwargs['local_device_ids'] = list(plan.local_device_ids)
    logger.info('dxnet_jax.distributed: initialising (%s)', plan.reason)
    if plan.kind == 'explicit':
      jax.distributed.initialize(
          plan.coordinator_address, plan.num_processes, plan.process_id, **kwargs
      )
    elif plan.kind == 'tpu':
      jax.distributed.initialize(**kwargs)
    else:  # detect
      jax.distributed.initialize(
          plan.coordinator_address, plan.num_processes, plan.process_id, **kwargs
      )
    state = jax_distributed.global_state
    _info = DistributedInfo(
        plan.kind, state.process_id, state.num_processes, state.coordinator_address, heartbeat
    )
    _plan = plan
    if fail_fast is None:
      fail_fast = os.environ.get(ENV_FAIL_FAST, '1').strip() not in ('0', 'false', 'no')
    if fail_fast and _info.num_processes > 1:
      _install_fail_fast()
    _connect_cpu_collectives(init_timeout)
    logger.info(
        'dxnet_jax.distributed: process %d of %d (coordinator %s)',
        _info.process_id,
        _info.num_processes,
        _info.coordinator_address,
    )
    return _info


def info() -> DistributedInfo | None:
  """The result of :func:`initialize`, or None before it was called."""
  return _info


# --------------------------------------------------------------------------- helpers


def process_index() -> int:
  return jax.process_index()


def process_count() -> int:
  return jax.process_count()


def is_main_process() -> bool:
  """True on the process that writes logs, metrics and summaries (process 0)."""
  return jax.process_index() == 0


def process_batch_size(global_batch_size: int) -> int:
  """Rows each process loads per step; checks the global batch splits over processes and
  devices."""
  n_proc, n_dev = jax.process_count(), jax.device_count()
  if global_batch_size % n_dev:
    raise ValueError(
        f'global batch size {global_batch_size} is not divisible by the '
        f'{n_dev} devices of the run'
    )
  return global_batch_size // n_proc


def data_mesh(devices: Sequence[Any] | None = None, axis_name: str = 'data') -> Mesh:
  """A 1-D mesh over all devices of all processes, for data parallelism.

  The axis is ``AxisType.Auto`` (``jax.make_mesh`` defaults to ``Explicit``): jit propagates
  the batch sharding itself and model code needs no sharding annotations.
  """
  auto = (jax.sharding.AxisType.Auto,)
  if devices is None:
    return jax.make_mesh((jax.device_count(),), (axis_name,), axis_types=auto)
  return Mesh(np.asarray(devices), (axis_name,), axis_types=auto)


def global_batch_from_local(
    local_batch: Any, mesh: Mesh, pspec: PartitionSpec = PartitionSpec('data')
) -> Any:
  """Per-process numpy batch (any pytree) -> global ``jax.Array``s sharded by ``pspec``.

  Each process passes its own rows (``global_batch // process_count`` of them for the default
  ``P('data')``); the result has the global batch as its leading dimension. The rows of a
  process land on its own devices, in the order those devices take in ``mesh.devices``: with
  :func:`data_mesh` on CPU and GPU that puts process ``p`` at rows
  ``[p * local_rows, (p + 1) * local_rows)``, as ``dxnet_jax.data`` assigns them; on a TPU
  slice the mesh may order devices by interconnect topology, which permutes whole per-device
  blocks of rows -- harmless for batch-mean losses, BatchNorm statistics and masked sums.
  Works unchanged in a single process.
  """
  sharding = NamedSharding(mesh, pspec)
  n_local = len({d for d in mesh.devices.flat if d.process_index == jax.process_index()})

  def put(x):
    x = np.asarray(x)
    if x.ndim and pspec and pspec[0] is not None and x.shape[0] % n_local:
      raise ValueError(
          f'local batch dimension {x.shape[0]} (shape {x.shape}) is not divisible by '
          f"this process's {n_local} devices in the mesh"
      )
    return jax.make_array_from_process_local_data(sharding, x)

  return jax.tree.map(put, local_batch)


def fetch(tree: Any) -> Any:
  """Device arrays -> numpy on every process: replicated arrays from the local copy, sharded
  ones gathered across processes (a collective: call it on all processes)."""

  def get(x):
    if not isinstance(x, jax.Array):
      return x
    if x.is_fully_addressable:
      return np.asarray(x)
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  return jax.tree.map(get, tree)


def sync_barrier(name: str, timeout_s: float | None = None) -> None:
  """Block until every process reaches the barrier called ``name``; no-op in one process.

  Uses the coordination service's barrier (host-level, does not wait for device work), which
  raises after ``timeout_s`` (default ``DEFAULT_BARRIER_TIMEOUT_S``) naming the barrier,
  instead of hanging. Falls back to ``multihost_utils.sync_global_devices`` when the
  coordination client is not reachable (another runtime started JAX).
  """
  if jax.process_count() == 1:
    return
  import jax._src.distributed as jax_distributed

  client = jax_distributed.global_state.client
  if client is None:
    multihost_utils.sync_global_devices(name)
    return
  timeout = DEFAULT_BARRIER_TIMEOUT_S if timeout_s is None else timeout_s
  try:
    client.wait_at_barrier(name, int(timeout * 1000))
  except Exception as e:  # JaxRuntimeError / XlaRuntimeError, by jax version
    raise RuntimeError(
        f'sync_barrier({name!r}) failed on process {jax.process_index()} of '
        f'{jax.process_count()} (timeout {timeout} s): a process is missing, slow, or '
        f'called the barriers in a different order. {e}'
    ) from e


def shutdown() -> None:
  """Leave the multi-process runtime cleanly (optional: JAX does it at exit)."""
  global _info, _plan
  with _lock:
    if jax.distributed.is_initialized():
      jax.distributed.shutdown()
    _info = None
    _plan = None
