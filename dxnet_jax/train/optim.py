"""The paper's optimisers and learning-rate rules, built from `config.optim`.

* Classification: SGD, Nesterov momentum 0.9, weight decay 5e-4 (L2 added to the gradient, as
  PyTorch's `weight_decay`), LR 0.1 halved whenever the validation loss stops improving.
* Super-resolution: Adam with default betas, LR 1e-4 dropped to 1e-5 at 50% of training.
* Denoising: Adam, LR 1e-3 divided by 5 at 10%, 25%, 75% and 90% of training.

The learning rate is `base_lr * schedule(step) * lr_scale`: the step schedule lives inside the
optimizer, while `lr_scale` is part of the train state and is changed between epochs by the
host-side `Plateau` rule. Scaling the final update equals changing PyTorch's `lr`, since both SGD
and Adam apply the LR last.
"""

import dataclasses
from typing import Any, Dict, Optional

import optax

OPTIMIZERS = ('sgd', 'adam')
SCHEDULES = ('constant', 'plateau', 'piecewise', 'cosine')


def schedule_fn(optim, total_steps: int):
  """Multiplier of the base LR as a function of the step (plateau changes come on top)."""
  if optim.schedule in ('constant', 'plateau'):
    return lambda step: 1.0
  if optim.schedule == 'piecewise':
    boundaries = {int(round(f * total_steps)): float(optim.decay_factor) for f in optim.decay_at}
    return optax.piecewise_constant_schedule(1.0, boundaries)
  if optim.schedule == 'cosine':
    return optax.cosine_decay_schedule(1.0, max(total_steps, 1))
  raise ValueError(f'Unknown optim.schedule {optim.schedule!r}; choose one of {SCHEDULES}.')


def make_optimizer(optim, total_steps: int) -> optax.GradientTransformation:
  """The optax transformation of `config.optim` (LR = base * schedule; plateau scale applied
  by the train step)."""
  lr = lambda step: optim.learning_rate * schedule_fn(optim, total_steps)(step)
  if optim.name == 'sgd':
    parts = []
    if optim.weight_decay:
      parts.append(optax.add_decayed_weights(optim.weight_decay))
    parts.append(optax.sgd(lr, momentum=optim.momentum or None, nesterov=optim.nesterov))
    return optax.chain(*parts)
  if optim.name == 'adam':
    parts = [optax.adam(lr, b1=optim.b1, b2=optim.b2, eps=optim.eps)]
    if optim.weight_decay:
      parts.insert(0, optax.add_decayed_weights(optim.weight_decay))
    return optax.chain(*parts)
  raise ValueError(f'Unknown optim.name {optim.name!r}; choose one of {OPTIMIZERS}.')


@dataclasses.dataclass
class Plateau:
  """Reduce-on-plateau on the validation loss, stepped once per epoch on the host.

  Mirrors PyTorch's ReduceLROnPlateau (mode 'min', relative threshold): after `patience` epochs
  without an improvement of more than `threshold` (relative), the scale is multiplied by
  `factor` and `cooldown` epochs are skipped. Its state is saved in every checkpoint.
  """

  factor: float = 0.5
  patience: int = 10
  threshold: float = 1e-4
  cooldown: int = 0
  min_scale: float = 0.0
  scale: float = 1.0
  best: Optional[float] = None
  bad_epochs: int = 0
  cooldown_left: int = 0

  def update(self, value: float) -> bool:
    """Records one epoch's validation loss; returns True when the LR was reduced."""
    if self.best is None or value < self.best * (1.0 - self.threshold):
      self.best, self.bad_epochs = float(value), 0
    else:
      self.bad_epochs += 1
    if self.cooldown_left > 0:
      self.cooldown_left -= 1
      self.bad_epochs = 0
    if self.bad_epochs > self.patience:
      self.scale = max(self.scale * self.factor, self.min_scale)
      self.cooldown_left, self.bad_epochs = self.cooldown, 0
      return True
    return False

  def state_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_config(cls, optim, state: Optional[Dict[str, Any]] = None) -> 'Plateau':
    plateau = cls(
        factor=optim.plateau_factor,
        patience=optim.plateau_patience,
        threshold=optim.plateau_threshold,
        cooldown=optim.plateau_cooldown,
        min_scale=optim.plateau_min_scale,
    )
    for key, value in (state or {}).items():
      setattr(plateau, key, value)
    return plateau
