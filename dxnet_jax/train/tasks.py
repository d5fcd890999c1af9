"""What a task contributes to the trainer: its loss and its metrics. Nothing else is task-specific.

Training metrics are batch means. Evaluation metrics are *sums* over the real (mask = 1) rows, so
padded batches and any number of hosts and devices add up exactly; `finalize` turns the sums
into means.
"""

import dataclasses
from typing import Callable, Dict

import jax.numpy as jnp
import optax

from dxnet_jax import metrics as metrics_lib


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  per_example_loss: Callable  # (outputs, targets) -> [B]
  per_example_metrics: Callable  # (outputs, targets) -> {name: [B]}
  # Validation metric that chooses the best checkpoint, and whether higher is better.
  best_metric: str
  higher_is_better: bool

  def loss(self, outputs, targets):
    return jnp.mean(self.per_example_loss(outputs, targets))

  def train_metrics(self, outputs, targets) -> Dict[str, jnp.ndarray]:
    return {k: jnp.mean(v) for k, v in self.per_example_metrics(outputs, targets).items()}

  def eval_sums(self, outputs, targets, mask) -> Dict[str, jnp.ndarray]:
    sums = {'loss': jnp.sum(self.per_example_loss(outputs, targets) * mask)}
    for k, v in self.per_example_metrics(outputs, targets).items():
      sums[k] = jnp.sum(v * mask)
    sums['count'] = jnp.sum(mask)
    return sums


def finalize(sums: Dict[str, float]) -> Dict[str, float]:
  """Means from the sums of `Task.eval_sums`."""
  count = max(float(sums['count']), 1.0)
  return {k: float(v) / count for k, v in sums.items() if k != 'count'}


def _cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def _accuracy(logits, labels):
  return {'accuracy': (jnp.argmax(logits, -1) == labels).astype(jnp.float32)}


def _mse(outputs, targets):
  # Denoisers return the clean estimate (input minus predicted noise), so this is exactly the MSE
  # of the predicted noise: the residual-learning loss of DnCNN.
  return jnp.mean(jnp.square(outputs - targets), axis=(1, 2, 3))


def _l1(outputs, targets):
  return jnp.mean(jnp.abs(outputs - targets), axis=(1, 2, 3))


def _psnr(outputs, targets):
  # Floor the MSE so a perfect patch gives a large finite number, not inf, in the running means.
  mse = jnp.maximum(metrics_lib.mse_per_example(jnp.clip(outputs, 0.0, 1.0), targets), 1e-10)
  return {'psnr': -10.0 * jnp.log10(mse)}


TASKS = {
    'classification': Task('classification', _cross_entropy, _accuracy, 'accuracy', True),
    'denoising': Task('denoising', _mse, _psnr, 'psnr', True),
    'super_resolution': Task('super_resolution', _l1, _psnr, 'psnr', True),
}


def get(name: str) -> Task:
  if name not in TASKS:
    raise ValueError(f'Unknown task {name!r}; choose one of {sorted(TASKS)}.')
  return TASKS[name]
