"""One training step of a registry net, in dxnet_jax and in PyTorch, ready to be timed.

Both steps do the same work: forward in training mode (BatchNorm batch statistics and running
averages), loss, backward, optimizer update (SGD with Nesterov momentum and weight decay for the
classifiers, Adam for the restoration nets, as in the paper). The JAX step is one jitted function
that donates its state; the PyTorch step runs in its fastest CPU setting (channels_last memory
format, a chosen intra-op thread count).

This is a self-contained step for timing, not `dxnet_jax.train`'s: it isolates the model's cost
from the input pipeline, metrics and logging.
"""

import dataclasses
import functools
from typing import Any, Callable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dxnet_jax import models


@dataclasses.dataclass(frozen=True)
class Workload:
  """A registry net at a benchmark batch: input `[batch, *image]`, its task and target shape."""

  name: str
  batch: int
  image: Tuple[int, int, int]

  @property
  def task(self) -> str:
    return models.model_task(self.name)

  def inputs(self, seed: int = 0):
    """Random inputs and targets (numpy, NHWC) of the right shapes for the task."""
    rng = np.random.default_rng(seed)
    x = rng.random((self.batch, *self.image), np.float32)
    if self.task == 'classification':
      classes = models.create(self.name).num_classes
      return x, rng.integers(0, classes, self.batch).astype(np.int32)
    if self.task == 'super_resolution':
      h, w, c = self.image
      return x, rng.random((self.batch, 4 * h, 4 * w, c), np.float32)
    return x, rng.random(x.shape, np.float32)


def _jax_loss(task: str, outputs, targets):
  if task == 'classification':
    return optax.softmax_cross_entropy_with_integer_labels(outputs, targets).mean()
  if task == 'super_resolution':
    return jnp.abs(outputs - targets).mean()
  return jnp.square(outputs - targets).mean()


def _jax_optimizer(task: str):
  if task == 'classification':
    return optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9, nesterov=True))
  return optax.adam(1e-3)


def jax_step(
    work: Workload,
    *,
    compiler_options=None,
    devices: Optional[Sequence[Any]] = None,
    **model_overrides,
) -> Tuple[Callable[[], Any], Any, Any]:
  """Returns (run, compiled, state): `run()` does one training step on a fixed batch.

  The step (forward, backward, optimizer update, BatchNorm statistics; state donated) is
  compiled ahead of time here, with XLA `compiler_options` if given. `compiled` has
  `memory_analysis()`; `state` is the initial `(params, batch_stats, opt_state)`.
  `model_overrides` go to `models.create` (e.g. `kernels`, `remat`).

  With several `devices` the batch is split across them and the state replicated, as the
  trainer's data parallelism does: the same step (BatchNorm statistics over the whole batch),
  run by one XLA program per device, e.g. on virtual CPU devices that share the host's cores.
  """
  model = models.create(work.name, **model_overrides)
  x, y = (jnp.asarray(a) for a in work.inputs())
  replicate = lambda tree: tree
  if devices is not None and len(devices) > 1:
    if work.batch % len(devices):
      raise ValueError(f'batch {work.batch} does not split across {len(devices)} devices')
    mesh = jax.sharding.Mesh(np.asarray(devices), ('data',))
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('data'))
    x, y = jax.device_put((x, y), split)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    replicate = lambda tree: jax.device_put(tree, replicated)
  tx = _jax_optimizer(work.task)

  def loss_fn(params, batch_stats, x, y):
    v = {'params': params}
    if batch_stats:
      v['batch_stats'] = batch_stats
      outputs, updates = model.apply(v, x, train=True, mutable=['batch_stats'])
      batch_stats = updates['batch_stats']
    else:
      outputs = model.apply(v, x, train=True)
    return _jax_loss(work.task, outputs, y), batch_stats

  @functools.partial(jax.jit, donate_argnums=0)
  def step(state, x, y):
    params, batch_stats, opt_state = state
    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch_stats, x, y
    )
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

  variables = models.init_variables(model, x.shape)
  params, batch_stats = variables['params'], variables.get('batch_stats', {})
  state = replicate((params, batch_stats, tx.init(params)))
  compiled = step.lower(state, x, y).compile(compiler_options=compiler_options or None)
  holder = {'state': replicate(jax.tree.map(jnp.array, state))}

  def run():
    holder['state'], loss = compiled(holder['state'], x, y)
    return loss

  return run, compiled, state


def jax_param_count(work: Workload, **model_overrides) -> int:
  return models.parameter_count(work.name, **model_overrides)


def torch_step(
    work: Workload, threads: int = 2, channels_last: bool = True, device: str = 'cpu'
) -> Tuple[Callable[[], Any], int]:
  """Returns (run, parameter count) for the PyTorch version of `work`'s net.

  On the CPU, `run` sets torch's intra-op thread count to `threads` on every call, so steps with
  different thread counts can be timed interleaved in one process. On 'cuda', cuDNN picks its
  fastest algorithms (`cudnn.benchmark`) and `run` waits for the GPU before it returns.
  """
  import torch
  from benchmarks import torch_nets

  cuda = device.startswith('cuda')
  torch.backends.cudnn.benchmark = cuda
  model = torch_nets.NETS[work.name]()
  fmt = torch.channels_last if channels_last else torch.contiguous_format
  model = model.to(device=device, memory_format=fmt).train()
  x, y = work.inputs()
  x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=fmt).to(device)
  if work.task == 'classification':
    y = torch.from_numpy(y).long().to(device)
    loss_fn = torch.nn.functional.cross_entropy
    opt = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4
    )
  else:
    y = torch.from_numpy(y).permute(0, 3, 1, 2).contiguous(memory_format=fmt).to(device)
    loss_fn = (
        torch.nn.functional.l1_loss
        if work.task == 'super_resolution'
        else torch.nn.functional.mse_loss
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

  def run():
    if not cuda:
      torch.set_num_threads(threads)
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    opt.step()
    if cuda:
      torch.cuda.synchronize()
    return None

  return run, torch_nets.count_params(model)
