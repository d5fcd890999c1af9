"""The task-agnostic trainer: `train_and_evaluate(config, workdir)`."""

from dxnet_jax.train.checkpoint import ForeignCheckpointError, load_for_inference
from dxnet_jax.train.loop import Preempted, train_and_evaluate
from dxnet_jax.train.checks import ConfigError, validate_config

__all__ = [
    'ConfigError',
    'ForeignCheckpointError',
    'Preempted',
    'load_for_inference',
    'train_and_evaluate',
    'validate_config',
]
