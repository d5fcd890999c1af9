"""Starts JAX's distributed runtime: one code path from one CPU to a TPU pod slice.

Call :func:`initialize` first thing in the program (before any JAX computation, before
``jax.devices()``). What it does depends on where it runs:

* One host, nothing configured: a one-process runtime on a local port, so that JAX's preemption
  service catches SIGTERM and the trainer can save and stop (orbax's ``reached_preemption``).
* A Cloud TPU VM (detected from the machine, see :func:`on_cloud_tpu_vm`):
  ``jax.distributed.initialize()`` with no addresses; JAX reads the slice's topology from the
  TPU metadata.
* GPU or CPU clusters: coordinator address, process count and process id come from the
  arguments, or else from the environment (``DXNET_COORDINATOR``, ``DXNET_NUM_PROCESSES``,
  ``DXNET_PROCESS_ID``, or JAX's own ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
  ``JAX_PROCESS_ID``). All three or none: a partial set is an error, not a silent single run.
* ``DXNET_DISTRIBUTED=detect``: ``jax.distributed.initialize()`` with whatever is set and JAX's
  own cluster detection for the rest (Slurm, Open MPI, Kubernetes, TPU).
  ``DXNET_DISTRIBUTED=off`` never initialises (no preemption service either).

Environment variables (arguments to :func:`initialize` win over them):

=========================== ==============================================================
``DXNET_DISTRIBUTED``        ``auto`` (default) | ``off`` | ``detect``
``DXNET_COORDINATOR``        ``host:port`` of process 0's coordination service
``DXNET_NUM_PROCESSES``      number of processes (one per host is usual)
``DXNET_PROCESS_ID``         this process's id, ``0 .. num_processes-1``
``DXNET_LOCAL_DEVICE_IDS``   e.g. ``0,1``: the local accelerators this process uses (GPU)
``DXNET_HEARTBEAT_TIMEOUT``  seconds without heartbeats before a process counts as dead (100;
                             one process alone: a week)
``DXNET_INIT_TIMEOUT``       seconds to wait for all processes to connect (300)
``DXNET_SHUTDOWN_TIMEOUT``   seconds a process waits for the others at a clean exit (300)
=========================== ==============================================================

A process that dies stops the others: JAX's coordination service (run by process 0) marks a
process dead after ``heartbeat_timeout`` seconds without heartbeats and terminates the others.
A single process runs the service too (for JAX's preemption notice on SIGTERM), where no peer
can die: there the timeout defaults to a week, so a run paused longer than 100 s (a laptop
asleep, a suspended VM, SIGSTOP) is not aborted by its own service when it resumes.
On CPU, cross-process collectives use gloo, selected here before the backend starts. The
data-parallel placement helpers live in :mod:`dxnet_jax.sharding`.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import jax
from absl import logging

ENV_MODE = 'DXNET_DISTRIBUTED'
ENV_COORDINATOR = 'DXNET_COORDINATOR'
ENV_NUM_PROCESSES = 'DXNET_NUM_PROCESSES'
ENV_PROCESS_ID = 'DXNET_PROCESS_ID'
ENV_LOCAL_DEVICE_IDS = 'DXNET_LOCAL_DEVICE_IDS'
ENV_HEARTBEAT_TIMEOUT = 'DXNET_HEARTBEAT_TIMEOUT'
ENV_INIT_TIMEOUT = 'DXNET_INIT_TIMEOUT'
ENV_SHUTDOWN_TIMEOUT = 'DXNET_SHUTDOWN_TIMEOUT'

# Aliases read when the DXNET_* variable is unset (JAX itself reads JAX_COORDINATOR_ADDRESS).
_ALIASES = {
    ENV_COORDINATOR: ('JAX_COORDINATOR_ADDRESS',),
    ENV_NUM_PROCESSES: ('JAX_NUM_PROCESSES',),
    ENV_PROCESS_ID: ('JAX_PROCESS_ID',),
    ENV_LOCAL_DEVICE_IDS: ('JAX_LOCAL_DEVICE_IDS',),
}

# JAX's own defaults (jax.distributed.initialize), kept unless overridden.
DEFAULT_HEARTBEAT_TIMEOUT_S = 100
SINGLE_PROCESS_HEARTBEAT_TIMEOUT_S = 7 * 24 * 3600
DEFAULT_INIT_TIMEOUT_S = 300
DEFAULT_SHUTDOWN_TIMEOUT_S = 300

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

  kind: str  # as Plan.kind, or 'started' when JAX's runtime was already running
  process_id: int
  num_processes: int

  @property
  def is_multiprocess(self) -> bool:
    return self.num_processes > 1


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


def _local_address() -> str:
  """A free loopback port for a one-process coordination service."""
  with socket.socket() as probe:
    probe.bind(('127.0.0.1', 0))
    return f'127.0.0.1:{probe.getsockname()[1]}'


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: int | Sequence[int] | None = None,
    *,
    heartbeat_timeout_s: int | None = None,
    initialization_timeout_s: int | None = None,
    shutdown_timeout_s: int | None = None,
) -> DistributedInfo:
  """Starts JAX's distributed runtime as the arguments and environment say (module docstring).

  A second call, or a call after someone else started the runtime, starts nothing. Raises
  ``ValueError`` for a partial or malformed configuration and ``RuntimeError`` when several
  processes are asked for after an earlier JAX call started the backend.
  """
  plan = plan_initialization(coordinator_address, num_processes, process_id, local_device_ids)
  if jax.distributed.is_initialized():
    return DistributedInfo('started', jax.process_index(), jax.process_count())
  if plan.local_device_ids is not None and plan.kind == 'single':
    jax.config.update('jax_cuda_visible_devices', ','.join(map(str, plan.local_device_ids)))
  kwargs = dict(
      initialization_timeout=_timeout(
          initialization_timeout_s,
          'initialization_timeout_s',
          ENV_INIT_TIMEOUT,
          DEFAULT_INIT_TIMEOUT_S,
      ),
      heartbeat_timeout_seconds=_timeout(
          heartbeat_timeout_s,
          'heartbeat_timeout_s',
          ENV_HEARTBEAT_TIMEOUT,
          SINGLE_PROCESS_HEARTBEAT_TIMEOUT_S
          if plan.kind == 'single'
          else DEFAULT_HEARTBEAT_TIMEOUT_S,
      ),
      shutdown_timeout_seconds=_timeout(
          shutdown_timeout_s, 'shutdown_timeout_s', ENV_SHUTDOWN_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT_S
      ),
  )
  if plan.local_device_ids is not None and plan.kind != 'single':
    kwargs['local_device_ids'] = list(plan.local_device_ids)
  logging.info('dxnet_jax.distributed: %s (%s)', plan.kind, plan.reason)
  if plan.kind == 'single':
    if plan.reason != f'{ENV_MODE}=off':
      try:
        jax.distributed.initialize(_local_address(), 1, 0, **kwargs)
      except RuntimeError as e:  # the backend already runs: no preemption service then
        logging.warning('dxnet_jax.distributed: no preemption service: %s', e)
    return DistributedInfo('single', 0, 1)
  if jax.config.jax_cpu_collectives_implementation in (None, 'none', ''):
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if plan.kind == 'tpu':
    jax.distributed.initialize(**kwargs)
  else:
    jax.distributed.initialize(
        plan.coordinator_address, plan.num_processes, plan.process_id, **kwargs
    )
  info = DistributedInfo(plan.kind, jax.process_index(), jax.process_count())
  logging.info('dxnet_jax.distributed: process %d of %d', info.process_id, info.num_processes)
  return info
