"""Checkpoints in `workdir/checkpoints/latest`: one orbax manager keeps the last K and the best.

Each checkpoint holds the `TrainState` (parameters, BatchNorm statistics, optimizer state, LR
scale, RNG, step) and a JSON `meta` item (epoch, plateau state, the model's identity); a
checkpoint saved after validation also carries the validation values as orbax metrics, and the
manager's preservation policy keeps the last `keep` steps plus the one with the best metric.
The data position is the step itself: `Data.train.iterate(step)` is a pure function of it.
Orbax writes a checkpoint to a temporary folder and renames it when complete, so a run killed at
any moment leaves the previous checkpoints intact.

The folder keeps the name `latest` that workdirs written before the best checkpoint joined it
use, so launchers and sweeps that list it read both. Such a workdir also holds a second manager's
folder, `checkpoints/best`: `adopt_legacy_best` moves its checkpoint into the one manager.
"""

import hashlib
import json
import os
from typing import Any, Dict, Optional, Tuple

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers

from dxnet_jax import models
from dxnet_jax.train import optim as optim_lib
from dxnet_jax.train import tasks as tasks_lib
from dxnet_jax.train.state import create_train_state

FOLDER, LEGACY_BEST = 'latest', 'best'
_ITEMS = ('state', 'meta')


class ForeignCheckpointError(ValueError):
  """The workdir holds checkpoints of a different model: never overwrite them."""


def model_fingerprint(model_name: str, abstract_params) -> Dict[str, str]:
  """Identity of a model for checkpoint compatibility: its name and its parameter shapes."""
  shapes = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
  text = ';'.join(f'{jax.tree_util.keystr(p)}:{tuple(x.shape)}' for p, x in shapes)
  return {'model': model_name, 'params_sha1': hashlib.sha1(text.encode()).hexdigest()}


def _read_only(directory) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
  return ocp.CheckpointManager(directory, options=options, item_names=_ITEMS)


def _composite_restore(abstract_state=None):
  if abstract_state is None:
    return ocp.args.Composite(meta=ocp.args.JsonRestore())
  return ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
  )


class Checkpoints:
  """The one checkpoint manager of a workdir: the last `keep` steps and the best validated one.

  `task` names the validation metric that ranks checkpoints (`tasks.Task.best_metric`).
  """

  def __init__(self, workdir: str, task: tasks_lib.Task, keep: int = 3, async_save: bool = True):
    root = epath.Path(workdir if '://' in workdir else os.path.abspath(workdir)) / 'checkpoints'
    self.directory = root / FOLDER
    self.legacy_best = root / LEGACY_BEST
    rank = lambda metrics: metrics[task.best_metric]
    policy = checkpoint_managers.AnyPreservationPolicy(
        [
            checkpoint_managers.LatestN(n=keep),
            checkpoint_managers.BestN(
                get_metric_fn=rank,
                reverse=not task.higher_is_better,
                n=1,
                keep_checkpoints_without_metrics=False,
            ),
        ]
    )
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            best_fn=rank,
            best_mode='max' if task.higher_is_better else 'min',
            preservation_policy=policy,
            create=True,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
        ),
        item_names=_ITEMS,
    )

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def best(self) -> Optional[Dict[str, Any]]:
    """{'step', 'metrics'} of the best validated checkpoint, or None before any validation."""
    step = self.manager.best_step()
    metrics = self.manager.metrics(step) if step is not None else None
    return None if metrics is None else {'step': step, 'metrics': dict(metrics)}

  def check_compatible(self, fingerprint: Dict[str, str], workdir: str):
    """Refuses a workdir whose checkpoints belong to another model, before anything is written."""
    metas = []
    if self.manager.latest_step() is not None:
      metas.append(self.manager.restore(None, args=_composite_restore())['meta'])
    if self.legacy_best.exists():
      best = _read_only(self.legacy_best)
      if best.latest_step() is not None:
        metas.append(best.restore(None, args=_composite_restore())['meta'])
      best.close()
    for meta in metas:
      found = meta.get('fingerprint', {})
      if found != fingerprint:
        raise ForeignCheckpointError(
            f'{workdir} holds a checkpoint (step {meta.get("step")}) of model '
            f'{found.get("model")!r} with other parameter shapes than this run\'s model '
            f'{fingerprint["model"]!r}. Refusing to resume or overwrite it: use a new --workdir '
            '(or restore the config that wrote it).'
        )

  def adopt_legacy_best(self, abstract_state):
    """Moves the best checkpoint of a workdir written by two managers into this one.

    Its validation value (kept in its meta) becomes its orbax metric; a step the latest
    folder also holds is saved again with that metric. The old folder goes once the copy is
    committed.
    """
    if not self.legacy_best.exists():
      return
    old = _read_only(self.legacy_best)
    step = old.latest_step()
    if step is not None:
      restored = old.restore(step, args=_composite_restore(abstract_state))
      meta = dict(restored['meta'])
      best = meta.pop('best', None) or {}
      metrics = {best['metric']: best['value']} if 'metric' in best else None
      if step in self.manager.all_steps():
        self.manager.delete(step)
      self.save(step, restored['state'], meta, metrics)
      self.manager.wait_until_finished()
    old.close()
    if jax.process_index() == 0:
      self.legacy_best.rmtree()

  def save(self, step: int, state, meta: Dict[str, Any], metrics: Optional[Dict] = None):
    """Saves `state` and `meta` at `step`; `metrics` (validation values) rank it for 'best'."""
    self.manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        metrics=metrics,
        force=True,
    )

  def restore(self, abstract_state, step: Optional[int] = None) -> Tuple[Any, Dict]:
    """(state, meta) of `step` (default: the latest)."""
    step = self.manager.latest_step() if step is None else step
    restored = self.manager.restore(step, args=_composite_restore(abstract_state))
    return restored['state'], dict(restored['meta'])

  def reached_preemption(self, step: int) -> bool:
    """True at the step where every process agreed to stop after a preemption notice
    (SIGTERM); needs JAX's distributed runtime (`dxnet_jax.distributed.initialize`)."""
    return self.manager.reached_preemption(step)

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.close()


def abstract_like(state, sharding_tree=None):
  """Shape/dtype (and sharding) target for restoring into `state`'s structure."""
  if sharding_tree is None:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, sharding_tree
  )


def load_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise FileNotFoundError(
        f'{path} not found: {workdir} is not a dxnet_jax workdir (it is '
        'written by `python -m dxnet_jax.main --workdir ...`).'
    )
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def load_for_inference(workdir: str, which: str = 'auto'):
  """(model, variables, config) of a workdir's best checkpoint (else its latest).

  `which` is 'best', 'latest' or 'auto'. Variables hold `params` (and `batch_stats`), ready for
  `model.apply(variables, x, train=False)`. Reads without writing: a workdir of the two-manager
  layout is read from its `best` folder.
  """
  if which not in ('auto', 'best', 'latest'):
    raise ValueError(f"which must be 'auto', 'best' or 'latest', got {which!r}.")
  config = load_config(workdir)
  model = models.create(config.model)
  shape = (1,) + tuple(config.input_shape)
  tx = optim_lib.make_optimizer(config.optim, total_steps=1)
  abstract = jax.eval_shape(lambda: create_train_state(model, tx, shape, 0))
  # Restore onto this process's first device, whatever topology wrote the checkpoint.
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = abstract_like(abstract, jax.tree.map(lambda _: device, abstract))
  root = epath.Path(workdir) / 'checkpoints'
  legacy = which != 'latest' and (root / LEGACY_BEST).exists()
  folder = root / (LEGACY_BEST if legacy else FOLDER)
  task = tasks_lib.get(config.task)
  rank = lambda metrics: metrics[task.best_metric]
  options = ocp.CheckpointManagerOptions(
      read_only=True,
      create=False,
      save_interval_steps=0,
      best_fn=rank,
      best_mode='max' if task.higher_is_better else 'min',
  )
  if folder.exists():
    manager = ocp.CheckpointManager(folder, options=options, item_names=_ITEMS)
    step = manager.best_step() if which != 'latest' and not legacy else None
    if step is None and (which != 'best' or legacy):
      step = manager.latest_step()
    state = None
    if step is not None:
      state = manager.restore(step, args=_composite_restore(target))['state']
    manager.close()
    if state is not None:
      return model, state.variables(), config
  raise FileNotFoundError(f'No {which} checkpoint in {root}.')
