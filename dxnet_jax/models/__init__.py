"""The networks of the DxNet paper. `create(name, **overrides)` builds one by name."""

from dxnet_jax.models.densenet import (
    DenseBlock,
    DenseLayer,
    DenseNetBackbone,
    DenseNetClassifier,
    DenseTrunk,
    Transition,
)
from dxnet_jax.models.registry import (
    MODELS,
    ModelSpec,
    count_params,
    create,
    init_variables,
    input_shape,
    model_task,
    parameter_count,
)
from dxnet_jax.models.restoration import (
    DenseDenoiser,
    DenseSuperResolution,
    FeedForwardXNet,
    LevelDenoiser,
    at_level,
    pixel_shuffle,
    pixel_unshuffle,
)

__all__ = [
    'DenseBlock',
    'DenseLayer',
    'DenseNetBackbone',
    'DenseNetClassifier',
    'DenseTrunk',
    'Transition',
    'MODELS',
    'ModelSpec',
    'count_params',
    'create',
    'init_variables',
    'input_shape',
    'model_task',
    'parameter_count',
    'DenseDenoiser',
    'DenseSuperResolution',
    'FeedForwardXNet',
    'LevelDenoiser',
    'at_level',
    'pixel_unshuffle',
    'pixel_shuffle',
]
