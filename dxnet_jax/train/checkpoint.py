"""Checkpoints in `workdir/checkpoints`: the last K, the best by validation, and refusal to mix
runs.

Each checkpoint holds the `TrainState` (parameters, BatchNorm statistics, optimizer state, LR
scale, RNG, step) and a JSON `meta` item (epoch, plateau state, best metric, the model's identity).
The data position is the step itself: `Data.train.iterate(step)` is a pure function of it. Orbax
writes a checkpoint to a temporary folder and renames it when complete, so a run killed at any
moment leaves the previous checkpoints intact.
"""

import hashlib
import json
import os
from typing import Any, Dict, Optional, Tuple

import jax
import ml_collections
import orbax.checkpoint as ocp

LATEST, BEST = 'latest', 'best'


class ForeignCheckpointError(ValueError):
  """The workdir holds checkpoints of a different model: never overwrite them."""


def model_fingerprint(model_name: str, abstract_params) -> Dict[str, str]:
  """Identity of a model for checkpoint compatibility: its name and its parameter shapes."""
  shapes = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
  text = ';'.join(f'{jax.tree_util.keystr(p)}:{tuple(x.shape)}' for p, x in shapes)
  return {'model': model_name, 'params_sha1': hashlib.sha1(text.encode()).hexdigest()}


class Checkpoints:
  """The latest-K and best checkpoint managers of one workdir."""

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True):
    root = os.path.join(
        os.path.abspath(workdir) if '://' not in workdir else workdir, 'checkpoints'
    )
    self.directories = {LATEST: os.path.join(root, LATEST), BEST: os.path.join(root, BEST)}
    # Each manager gets its own barrier names: at an epoch end both save at once, and on several
    # processes shared names collide in the coordination service ("barrier already ongoing").
    make = lambda which, keep: ocp.CheckpointManager(
        self.directories[which],
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix=which
            ),
        ),
        item_names=('state', 'meta'),
    )
    self.managers = {LATEST: make(LATEST, keep), BEST: make(BEST, 1)}

  def latest_step(self, which: str = LATEST) -> Optional[int]:
    return self.managers[which].latest_step()

  def read_meta(self, which: str = LATEST, step: Optional[int] = None) -> Optional[Dict]:
    manager = self.managers[which]
    step = manager.latest_step() if step is None else step
    if step is None:
      return None
    restored = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored['meta'])

  def check_compatible(self, fingerprint: Dict[str, str], workdir: str):
    """Refuses a workdir whose checkpoints belong to another model, before anything is written."""
    for which in (LATEST, BEST):
      meta = self.read_meta(which)
      if meta is None:
        continue
      found = meta.get('fingerprint', {})
      if found != fingerprint:
        raise ForeignCheckpointError(
            f'{workdir} holds a checkpoint ({which}, step {meta.get("step")}) of model '
            f'{found.get("model")!r} with other parameter shapes than this run\'s model '
            f'{fingerprint["model"]!r}. Refusing to resume or overwrite it: use a new --workdir '
            '(or restore the config that wrote it).'
        )

  def save(self, which: str, step: int, state, meta: Dict[str, Any]):
    self.managers[which].save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
        force=True,
    )

  def restore(self, which: str, abstract_state, step: Optional[int] = None) -> Tuple[Any, Dict]:
    manager = self.managers[which]
    step = manager.latest_step() if step is None else step
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()
        ),
    )
    return restored['state'], dict(restored['meta'])

  def wait(self):
    for manager in self.managers.values():
      manager.wait_until_finished()

  def close(self):
    for manager in self.managers.values():
      manager.close()


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
  `model.apply(variables, x, train=False)`.
  """
  from dxnet_jax import models  # pylint: disable=g-import-not-at-top
  from dxnet_jax.train import optim as optim_lib  # pylint: disable=g-import-not-at-top
  from dxnet_jax.train.state import create_train_state  # pylint: disable=g-import-not-at-top

  config = load_config(workdir)
  model = models.create(config.model)
  shape = (1,) + tuple(config.input_shape)
  tx = optim_lib.make_optimizer(config.optim, total_steps=1)
  abstract = jax.eval_shape(lambda: create_train_state(model, tx, shape, 0))
  checkpoints = Checkpoints(workdir, async_save=False)
  order = {'auto': (BEST, LATEST), BEST: (BEST,), LATEST: (LATEST,)}[which]
  # Restore onto this process's first device, whatever topology wrote the checkpoint.
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = abstract_like(abstract, jax.tree.map(lambda _: device, abstract))
  for kind in order:
    if checkpoints.latest_step(kind) is not None:
      state, _ = checkpoints.restore(kind, target)
      checkpoints.close()
      return model, state.variables(), config
  checkpoints.close()
  raise FileNotFoundError(f'No {"/".join(order)} checkpoint in {workdir}/checkpoints.')
