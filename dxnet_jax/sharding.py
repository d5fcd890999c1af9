"""Data-parallel placement: the device mesh, global batches from per-process rows, and fetching
results back to numpy on every process."""

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec


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
