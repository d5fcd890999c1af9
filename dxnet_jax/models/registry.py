"""Named models of the paper and `create`, the one way configs build a model."""

import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp

from dxnet_jax import kernels as kernels_lib
from dxnet_jax.models.densenet import DenseNetClassifier
from dxnet_jax.models.restoration import DenseDenoiser, DenseSuperResolution, FeedForwardXNet

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


def _cifar(blocks, activation, **kw):
  return dict(num_classes=10, blocks=blocks, growth_rate=12, activation=activation, **kw)


def _imagenet(blocks, activation):
  return dict(
      num_classes=1000, blocks=blocks, growth_rate=32, stem='imagenet', activation=activation
  )


MODELS: Dict[str, ModelSpec] = {
    # CIFAR-10 / SVHN (SVHN configs add dropout_rate=0.2).
    'densenet_bc_k12_16': ModelSpec(
        DenseNetClassifier,
        _cifar((16, 16, 16), 'relu'),
        'classification',
        (32, 32, 3),
        'DenseNet-BC (L=100, k=12), CIFAR form',
        '0.8M',
    ),
    'densenet_bc_k12_26': ModelSpec(
        DenseNetClassifier,
        _cifar((26, 26, 26), 'relu'),
        'classification',
        (32, 32, 3),
        'DenseNet-BC (L=160, k=12), CIFAR form',
        '1.7M',
    ),
    'dxnet_k12_12': ModelSpec(
        DenseNetClassifier,
        _cifar((12, 12, 12), 'xunit'),
        'classification',
        (32, 32, 3),
        'DxNet 12-12-12, k=12, CIFAR form',
        '0.5M',
    ),
    'dxnet_k12_19': ModelSpec(
        DenseNetClassifier,
        _cifar((19, 19, 19), 'xunit'),
        'classification',
        (32, 32, 3),
        'DxNet 19-19-19, k=12, CIFAR form',
        '1.0M',
    ),
    # ImageNet.
    'densenet121': ModelSpec(
        DenseNetClassifier,
        _imagenet((6, 12, 24, 16), 'relu'),
        'classification',
        (224, 224, 3),
        'DenseNet-121 (torchvision layout)',
        '8.0M',
    ),
    'dxnet105': ModelSpec(
        DenseNetClassifier,
        _imagenet((6, 12, 20, 12), 'xunit'),
        'classification',
        (224, 224, 3),
        'DxNet-105: blocks 6-12-20-12, k=32, xUnit after the stem',
        None,
    ),
    # Gaussian denoising (gray unless named _rgb).
    'dxnet_denoise_444': ModelSpec(
        DenseDenoiser,
        dict(blocks=(4, 4, 4), activation='xunit'),
        'denoising',
        (40, 40, 1),
        'DxNet 4-4-4, k=16, gray denoiser',
        '~139K (a quarter of DnCNN)',
    ),
    'dxnet_denoise_666': ModelSpec(
        DenseDenoiser,
        dict(blocks=(6, 6, 6), activation='xunit'),
        'denoising',
        (40, 40, 1),
        'DxNet 6-6-6, k=16, gray denoiser',
        None,
    ),
    'densenet_denoise_444': ModelSpec(
        DenseDenoiser,
        dict(blocks=(4, 4, 4), activation='relu'),
        'denoising',
        (40, 40, 1),
        'DenseNet 4-4-4, k=16, gray denoiser',
        None,
    ),
    'densenet_denoise_555': ModelSpec(
        DenseDenoiser,
        dict(blocks=(5, 5, 5), activation='relu'),
        'denoising',
        (40, 40, 1),
        'DenseNet 5-5-5, k=16, gray denoiser (about DxNet 4-4-4 size)',
        None,
    ),
    'densenet_denoise_666': ModelSpec(
        DenseDenoiser,
        dict(blocks=(6, 6, 6), activation='relu'),
        'denoising',
        (40, 40, 1),
        'DenseNet 6-6-6, k=16, gray denoiser',
        None,
    ),
    'dxnet_denoise_444_rgb': ModelSpec(
        DenseDenoiser,
        dict(blocks=(4, 4, 4), activation='xunit'),
        'denoising',
        (40, 40, 3),
        'DxNet 4-4-4, k=16, color denoiser',
        None,
    ),
    # x4 super-resolution.
    'dxnet16_sr': ModelSpec(
        DenseSuperResolution,
        dict(blocks=(4, 4, 4, 6, 8, 8), growth_rate=16, activation='xunit'),
        'super_resolution',
        (24, 24, 3),
        'DxNet16 x4 SR: k=16, blocks 4-4-4-6-8-8',
        '0.86M',
    ),
    'dxnet32_sr': ModelSpec(
        DenseSuperResolution,
        dict(blocks=(4, 6, 8), growth_rate=32, activation='xunit'),
        'super_resolution',
        (24, 24, 3),
        'DxNet32 x4 SR: k=32, blocks 4-6-8',
        None,
    ),
    'densenet16_sr': ModelSpec(
        DenseSuperResolution,
        dict(blocks=(4, 4, 4, 6, 8, 8), growth_rate=16, activation='relu'),
        'super_resolution',
        (24, 24, 3),
        'DenseNet counterpart of DxNet16 (ReLU)',
        None,
    ),
    'densenet32_sr': ModelSpec(
        DenseSuperResolution,
        dict(blocks=(4, 6, 8), growth_rate=32, activation='relu'),
        'super_resolution',
        (24, 24, 3),
        'DenseNet counterpart of DxNet32 (ReLU)',
        None,
    ),
    # Feed-forward nets of the xUnit-design comparison (Fig. 4) and DnCNN.
    'dncnn': ModelSpec(
        FeedForwardXNet,
        dict(depth=17, features=64, activation='relu'),
        'denoising',
        (40, 40, 1),
        'DnCNN-S: 17 Conv+BN+ReLU layers, 64 channels',
        '556K',
    ),
    'xdncnn': ModelSpec(
        FeedForwardXNet,
        dict(depth=9, features=64, activation='xunit', xunit_design='dxnet'),
        'denoising',
        (40, 40, 1),
        'Conv+BN+xUnit (DxNet design), 9 layers',
        None,
    ),
    'xdncnn_gaussian': ModelSpec(
        FeedForwardXNet,
        dict(depth=9, features=64, activation='xunit', xunit_design='gaussian'),
        'denoising',
        (40, 40, 1),
        'Conv+BN+xUnit (original 2018 Gaussian design), 9 layers',
        None,
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


def init_variables(model: nn.Module, shape, rng=None, abstract: bool = False):
  """Initialises (or, with `abstract`, only shapes) a model's variables for an NHWC input."""
  rng = jax.random.key(0) if rng is None else rng
  fn = lambda: model.init(
      {'params': rng, 'dropout': rng}, jnp.zeros(shape, jnp.float32), train=False
  )
  return jax.eval_shape(fn) if abstract else jax.jit(fn)()


def count_params(tree) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(tree))


def parameter_count(name_or_config, **overrides) -> int:
  """Number of trainable parameters of a named model (cheap: shapes only)."""
  model = create(name_or_config, **overrides)
  shape = (1,) + input_shape(name_or_config)
  return count_params(init_variables(model, shape, abstract=True)['params'])
