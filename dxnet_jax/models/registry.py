"""Named models of the paper and `create`, the one way configs build a model."""

import dataclasses
import functools
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp

from dxnet_jax import kernels as kernels_lib
from dxnet_jax.models.densenet import DenseNetClassifier
from dxnet_jax.models.restoration import (
    DenseDenoiser,
    DenseSuperResolution,
    FeedForwardXNet,
    LevelDenoiser,
)

# Options of `create` that choose the parts (`kernels.make_parts`), not module fields.
PART_OPTIONS = ('kernels', 'dtype', 'bn_axis_name', 'xunit_design', 'xunit_kernel')
# Fields of older configs that the `kernels` setting replaced.
RETIRED_OPTIONS = ('depthwise_impl',)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A named network: its module class, arguments, the input it expects and the paper's size."""

  module: Callable[..., nn.Module]
  kwargs: Mapping[str, Any]
  task: str
  input_shape: Tuple[int, int, int]
  description: str
  paper_params: Optional[str] = None


def _cifar(blocks, activation, description, paper=None) -> ModelSpec:
  kwargs = dict(num_classes=10, blocks=blocks, growth_rate=12, activation=activation)
  return ModelSpec(DenseNetClassifier, kwargs, 'classification', (32, 32, 3), description, paper)


def _imagenet(blocks, activation, description, paper=None) -> ModelSpec:
  kwargs = dict(num_classes=1000, blocks=blocks, growth_rate=32, stem='imagenet')
  kwargs['activation'] = activation
  return ModelSpec(DenseNetClassifier, kwargs, 'classification', (224, 224, 3), description, paper)


def _denoiser(blocks, activation, description, paper=None, channels=1, **options) -> ModelSpec:
  kwargs = dict(blocks=blocks, activation=activation, **options)
  return ModelSpec(DenseDenoiser, kwargs, 'denoising', (40, 40, channels), description, paper)


def _level_denoiser(description, channels) -> ModelSpec:
  """A noise-level-conditioned DxNet 4-4-4; its input is the image plus the noise-level map."""
  kwargs = dict(blocks=(4, 4, 4), activation='xunit')
  return ModelSpec(LevelDenoiser, kwargs, 'denoising', (50, 50, channels + 1), description)


def _sr(blocks, growth_rate, activation, description, paper=None) -> ModelSpec:
  kwargs = dict(blocks=blocks, growth_rate=growth_rate, activation=activation)
  return ModelSpec(
      DenseSuperResolution, kwargs, 'super_resolution', (24, 24, 3), description, paper
  )


def _feed_forward(depth, activation, description, paper=None, **kwargs) -> ModelSpec:
  kwargs = dict(depth=depth, features=64, activation=activation, **kwargs)
  return ModelSpec(FeedForwardXNet, kwargs, 'denoising', (40, 40, 1), description, paper)


# The networks of the paper (SVHN configs add dropout_rate=0.2 to the CIFAR ones).
MODELS: Dict[str, ModelSpec] = {
    'densenet_bc_k12_16': _cifar(
        (16,) * 3, 'relu', 'DenseNet-BC (L=100, k=12), CIFAR form', '0.8M'
    ),
    'densenet_bc_k12_26': _cifar(
        (26,) * 3, 'relu', 'DenseNet-BC (L=160, k=12), CIFAR form', '1.7M'
    ),
    'dxnet_k12_12': _cifar((12,) * 3, 'xunit', 'DxNet 12-12-12, k=12, CIFAR form', '0.5M'),
    'dxnet_k12_19': _cifar((19,) * 3, 'xunit', 'DxNet 19-19-19, k=12, CIFAR form', '1.0M'),
    'densenet121': _imagenet((6, 12, 24, 16), 'relu', 'DenseNet-121 (torchvision layout)', '8.0M'),
    'dxnet105': _imagenet(
        (6, 12, 20, 12), 'xunit', 'DxNet-105: blocks 6-12-20-12, k=32, xUnit after the stem'
    ),
    'dxnet_denoise_444': _denoiser(
        (4, 4, 4), 'xunit', 'DxNet 4-4-4, k=16, gray denoiser', '~139K (a quarter of DnCNN)'
    ),
    'dxnet_denoise_444_authors': _denoiser(
        (4, 4, 4),
        'xunit',
        "DxNet 4-4-4, k=16, gray denoiser in the authors' code's layout (7x7 xUnit, x-modules)",
        layout='authors',
        xunit_kernel=7,
    ),
    'dxnet_denoise_666': _denoiser((6, 6, 6), 'xunit', 'DxNet 6-6-6, k=16, gray denoiser'),
    'densenet_denoise_444': _denoiser((4, 4, 4), 'relu', 'DenseNet 4-4-4, k=16, gray denoiser'),
    'densenet_denoise_555': _denoiser(
        (5, 5, 5), 'relu', "DenseNet 5-5-5, k=16, gray denoiser (about DxNet 4-4-4's size)"
    ),
    'densenet_denoise_666': _denoiser((6, 6, 6), 'relu', 'DenseNet 6-6-6, k=16, gray denoiser'),
    'dxnet_denoise_444_rgb': _denoiser(
        (4, 4, 4), 'xunit', 'DxNet 4-4-4, k=16, color denoiser', channels=3
    ),
    'dxnet_denoise_blind': _level_denoiser(
        'DxNet 4-4-4, k=16, gray denoiser for sigma 0-75, given the noise-level map', 1
    ),
    'dxnet_denoise_blind_rgb': _level_denoiser(
        'DxNet 4-4-4, k=16, colour denoiser for sigma 0-75, given the noise-level map', 3
    ),
    'dxnet16_sr': _sr(
        (4, 4, 4, 6, 8, 8), 16, 'xunit', 'DxNet16 x4 SR: k=16, blocks 4-4-4-6-8-8', '0.86M'
    ),
    'dxnet32_sr': _sr((4, 6, 8), 32, 'xunit', 'DxNet32 x4 SR: k=32, blocks 4-6-8'),
    'densenet16_sr': _sr((4, 4, 4, 6, 8, 8), 16, 'relu', 'DenseNet counterpart of DxNet16 (ReLU)'),
    'densenet32_sr': _sr((4, 6, 8), 32, 'relu', 'DenseNet counterpart of DxNet32 (ReLU)'),
    # Feed-forward nets of the xUnit-design comparison (Fig. 4) and DnCNN.
    'dncnn': _feed_forward(17, 'relu', 'DnCNN-S: 17 Conv+BN+ReLU layers, 64 channels', '556K'),
    'xdncnn': _feed_forward(
        9, 'xunit', 'Conv+BN+xUnit (DxNet design), 9 layers', xunit_design='dxnet'
    ),
    'xdncnn_gaussian': _feed_forward(
        9,
        'xunit',
        'Conv+BN+xUnit (original 2018 Gaussian design), 9 layers',
        xunit_design='gaussian',
    ),
    'xdncnn_authors': _feed_forward(
        9,
        'xunit',
        "The authors' released xDnCNN: 8 cells BN+Conv+Gaussian xUnit (BN-less first cell)",
        xunit_design='gaussian',
        cell_order='bn_conv',
    ),
}


def _field_names(module_cls) -> set:
  return {f.name for f in dataclasses.fields(module_cls)} - {'parent', 'name', 'parts'}


def _resolve(name_or_config: Union[str, Mapping[str, Any]], overrides: Mapping[str, Any]):
  if isinstance(name_or_config, str):
    name, extra = name_or_config, {}
  else:
    extra = dict(name_or_config)
    if 'name' not in extra:
      raise ValueError(
          f'A model config needs a `name` key naming one of: {", ".join(sorted(MODELS))}.'
      )
    name = extra.pop('name')
  if name not in MODELS:
    raise ValueError(
        f'Unknown model {name!r}. Known models: {", ".join(sorted(MODELS))} '
        '(`python -m dxnet_jax.models` lists them with sizes).'
    )
  return name, {**extra, **overrides}


def create(name_or_config: Union[str, Mapping[str, Any]], **overrides) -> nn.Module:
  """Builds a named model, with any of its module fields overridden.

  `name_or_config` is a registry name or a mapping (e.g. `config.model`) with a `name` key and
  overrides. Besides module fields, the options that choose its parts (`kernels.make_parts`):
  `kernels` ('auto', 'xla', 'gpu', 'cpu'), `dtype` ('bfloat16' computes in bf16; parameters stay
  float32), `bn_axis_name` (BatchNorm statistics averaged over a pmap axis), `xunit_design`
  ('dxnet' or 'gaussian') and `xunit_kernel`. Unknown keys are an error, so typos in configs do
  not pass silently.
  """
  name, kwargs = _resolve(name_or_config, overrides)
  spec = MODELS[name]
  kwargs = {**spec.kwargs, **kwargs}
  for key in RETIRED_OPTIONS:
    if kwargs.pop(key, None) is not None:
      warnings.warn(f'Model option {key!r} is ignored: the `kernels` setting chooses the parts.')
  options = {k: kwargs.pop(k) for k in PART_OPTIONS if k in kwargs}
  if 'blocks' in kwargs and not isinstance(kwargs['blocks'], tuple):
    kwargs['blocks'] = tuple(kwargs['blocks'])
  unknown = set(kwargs) - _field_names(spec.module)
  if unknown:
    valid = sorted(_field_names(spec.module) | set(PART_OPTIONS))
    raise ValueError(
        f'Model {name!r} ({spec.module.__name__}) has no option(s) {sorted(unknown)}; valid '
        f'options: {valid}.'
    )
  axis_name = options.pop('bn_axis_name', None)
  parts = kernels_lib.make_parts(axis_name=axis_name, **options)
  return spec.module(parts=parts, **kwargs)


def model_task(name_or_config) -> str:
  """The task a named model is built for ('classification', 'denoising', 'super_resolution')."""
  name, _ = _resolve(name_or_config, {})
  return MODELS[name].task


def input_shape(name_or_config) -> Tuple[int, int, int]:
  name, _ = _resolve(name_or_config, {})
  return MODELS[name].input_shape


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init(model: nn.Module, shape: Tuple[int, ...], rng) -> Dict[str, Any]:
  return model.init({'params': rng, 'dropout': rng}, jnp.zeros(shape, jnp.float32), train=False)


def init_variables(model: nn.Module, shape, rng=None, abstract: bool = False):
  """Initialises (or, with `abstract`, only shapes) a model's variables for an NHWC input.

  One jitted program per (model, shape), so shaping first (as config checks do) and then
  initialising the same model object, here or inside a larger jitted function (the train state),
  traces the net once.
  """
  rng = jax.random.key(0) if rng is None else rng
  shape = tuple(int(d) for d in shape)
  return jax.eval_shape(_init, model, shape, rng) if abstract else _init(model, shape, rng)


def count_params(tree) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(tree))


def parameter_count(name_or_config, **overrides) -> int:
  """Number of trainable parameters of a named model (cheap: shapes only)."""
  model = create(name_or_config, **overrides)
  shape = (1,) + input_shape(name_or_config)
  return count_params(init_variables(model, shape, abstract=True)['params'])
