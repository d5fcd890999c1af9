"""The ops of a dense layer one by one, dxnet_jax vs PyTorch: forward and forward+backward time.

    python -m benchmarks.layer_ops [--reps 15] [--threads 2] [--ops bn_relu,conv1x1,...]

Why: a whole training step hides which op loses to PyTorch and by how much. Each op here is the
one the models run with `kernels='cpu'` (`xla_cpu.batchnorm.batch_norm_relu`, the 1x1 and 3x3
`xla_cpu.conv.conv2d`, `xla_cpu.conv.depthwise_conv2d`, the whole xUnit in training mode,
`jnp.concatenate`), at the
shapes of the CIFAR DxNet 12-12-12 (batch 64, k=12): the widest layer of the first two dense
blocks. PyTorch runs the same op in channels_last with `--threads` intra-op threads.
forward+backward computes the output and the gradients of every input (parameters included)
for a fixed random cotangent, as a training step does. JAX and PyTorch calls are interleaved
(medians).

Note: an op that wins here need not win inside a step (docs/performance.md has two that did
not): in a step the operands come from the op before and XLA fuses across ops.
"""

import argparse
import dataclasses
from typing import Callable, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import timing
from dxnet_jax import kernels
from dxnet_jax.xla_cpu import batchnorm, conv


@dataclasses.dataclass(frozen=True)
class LayerOp:
  """One op at one shape: `x` is [N, H, W, C]; `out` is the output channel count."""

  op: str
  stage: str
  x: Tuple[int, int, int, int]
  out: int


def _shapes(n, h, c_in, k=12, bottleneck=4):
  """The ops of a dense layer whose input has `c_in` channels at h x h."""
  x, wide = (n, h, h, c_in), (n, h, h, bottleneck * k)
  return [
      ('bn_relu', x, c_in),
      ('conv1x1', x, bottleneck * k),
      ('conv3x3', wide, k),
      ('depthwise9x9', (n, h, h, k), k),
      ('xunit', (n, h, h, k), k),
      ('concat', x, c_in + k),
  ]


OPS = [
    LayerOp(op, stage, x, out)
    for stage, h, c_in in (('block 1, layer 12', 32, 156), ('block 2, layer 12', 16, 216))
    for op, x, out in _shapes(64, h, c_in)
]


def jax_op(spec: LayerOp) -> Tuple[Callable, Tuple[np.ndarray, ...]]:
  """(f, float32 inputs) with `f(*inputs)` the op's output, as the models compute it."""
  rng = np.random.default_rng(0)
  x = rng.standard_normal(spec.x, np.float32)
  c = spec.x[-1]
  if spec.op == 'bn_relu':
    f = lambda x, scale, bias: batchnorm.batch_norm_relu(x, scale, bias, 1e-5)[0]
    return f, (x, np.ones(c, np.float32), np.zeros(c, np.float32))
  if spec.op == 'conv1x1':
    return conv.conv2d, (x, 0.1 * rng.standard_normal((1, 1, c, spec.out), np.float32))
  if spec.op == 'conv3x3':
    return conv.conv2d, (x, 0.1 * rng.standard_normal((3, 3, c, spec.out), np.float32))
  if spec.op == 'depthwise9x9':
    return conv.depthwise_conv2d, (x, 0.1 * rng.standard_normal((9, 9, 1, c), np.float32))
  if spec.op == 'xunit':
    apply, leaves, _ = _xunit(c)
    return apply, (x, *leaves)
  if spec.op == 'concat':
    y = rng.standard_normal((*spec.x[:-1], spec.out - c), np.float32)
    return lambda x, y: jnp.concatenate([x, y], axis=-1), (x, y)
  raise ValueError(f'unknown op {spec.op!r}')


def _xunit(channels: int):
  """(f(x, *parameter leaves) -> training-mode output, the leaves) of the CPU parts' 9x9 xUnit.

  Parameters are flattened so that every one gets a gradient like an input; the scales and
  offsets are random so that the comparison with PyTorch checks them.
  """
  module = kernels.make_parts('cpu', xunit_kernel=9).xunit()
  variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 9, 9, channels)))
  params = jax.tree.map(np.array, variables['params'])  # writable copies, for torch
  rng = np.random.default_rng(2)
  for bn in ('pointwise_bn', 'depthwise_bn'):
    params[bn] = {
        'scale': rng.uniform(0.5, 1.5, channels).astype(np.float32),
        'bias': (0.1 * rng.standard_normal(channels)).astype(np.float32),
    }
  leaves, treedef = jax.tree.flatten(params)

  def apply(x, *leaves):
    y, _ = module.apply(
        {'params': jax.tree.unflatten(treedef, leaves), 'batch_stats': variables['batch_stats']},
        x,
        train=True,
        mutable=['batch_stats'],
    )
    return y

  return apply, leaves, treedef


def cotangent_for(spec: LayerOp) -> np.ndarray:
  """A fixed random output gradient (random, so that XLA cannot fold it away)."""
  return np.random.default_rng(1).standard_normal((*spec.x[:-1], spec.out), np.float32)


def jax_forward_backward(f):
  """jit of (*inputs, cotangent) -> (output, gradients of every input), as in a step."""

  def run(*args):
    *inputs, cotangent = args
    out, vjp = jax.vjp(f, *inputs)
    return out, vjp(cotangent)

  return jax.jit(run)


def torch_op(spec: LayerOp, inputs):
  """The same op in PyTorch (channels_last) with the same weights as `jax_op`'s `inputs`.

  Returns (forward, forward_backward, x): `forward()` is the output, `forward_backward()` the
  output and the input's gradient for `cotangent_for(spec)` (filling `x.grad`, and the weights'
  gradients).
  """
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_nets  # pylint: disable=g-import-not-at-top

  nn = torch.nn
  last = torch.channels_last
  to_nchw = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).contiguous(memory_format=last)
  hwio_to_oihw = lambda w: torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
  x = to_nchw(inputs[0]).requires_grad_(True)
  c = spec.x[-1]
  if spec.op == 'bn_relu':
    module = nn.Sequential(nn.BatchNorm2d(c, eps=1e-5), nn.ReLU(inplace=True))
  elif spec.op in ('conv1x1', 'conv3x3', 'depthwise9x9'):
    k = inputs[1].shape[0]
    groups = c if spec.op == 'depthwise9x9' else 1
    module = nn.Conv2d(c, spec.out, k, padding=k // 2, groups=groups, bias=False)
    with torch.no_grad():
      module.weight.copy_(hwio_to_oihw(inputs[1]))
  elif spec.op == 'xunit':
    module = torch_nets.XUnit(c, 9)
    _, _, treedef = _xunit(c)
    params = jax.tree.unflatten(treedef, inputs[1:])
    conv1, bn1, _, dwconv, bn2, _ = module.gate
    with torch.no_grad():
      conv1.weight.copy_(hwio_to_oihw(params['pointwise']['kernel']))
      conv1.bias.copy_(torch.from_numpy(params['pointwise']['bias']))
      dwconv.weight.copy_(hwio_to_oihw(params['depthwise']['kernel']))
      dwconv.bias.copy_(torch.from_numpy(params['depthwise']['bias']))
      for bn, name in ((bn1, 'pointwise_bn'), (bn2, 'depthwise_bn')):
        bn.weight.copy_(torch.from_numpy(params[name]['scale']))
        bn.bias.copy_(torch.from_numpy(params[name]['bias']))
  else:
    y = to_nchw(inputs[1]).requires_grad_(True)
    module = lambda x: torch.cat([x, y], dim=1)
  if isinstance(module, nn.Module):
    module = module.to(memory_format=last).train()
  cotangent = to_nchw(cotangent_for(spec))

  def forward():
    with torch.no_grad():
      return module(x)

  def forward_backward():
    x.grad = None
    out = module(x)
    out.backward(cotangent)
    return out, x.grad

  return forward, forward_backward, x


def main():
  kernels.prepare_process('cpu')
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--reps', type=int, default=15)
  parser.add_argument('--threads', type=int, default=2, help='PyTorch intra-op threads')
  parser.add_argument(
      '--ops',
      default=None,
      help='comma-separated subset of ' + ','.join(dict.fromkeys(o.op for o in OPS)),
  )
  args = parser.parse_args()
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise SystemExit('benchmarks.layer_ops compares against PyTorch: pip install -e ".[bench]"')
  torch.set_num_threads(args.threads)
  chosen = set(args.ops.split(',')) if args.ops else None
  print(
      f'# dense-layer ops, {timing.machine()}; torch {torch.__version__}, {args.threads} '
      f'threads, channels_last; kernels=cpu; medians of {args.reps}'
  )
  rows = []
  for spec in OPS:
    if chosen and spec.op not in chosen:
      continue
    f, inputs = jax_op(spec)
    arrays = [jnp.asarray(a) for a in inputs]
    cotangent = jnp.asarray(cotangent_for(spec))
    forward = jax.jit(f)
    forward_backward = jax_forward_backward(f)
    torch_forward, torch_forward_backward, _ = torch_op(spec, inputs)
    times = timing.time_interleaved(
        {
            'jax fwd': lambda: forward(*arrays),
            'torch fwd': torch_forward,
            'jax fwd+bwd': lambda: forward_backward(*arrays, cotangent),
            'torch fwd+bwd': torch_forward_backward,
        },
        reps=args.reps,
        warmup=2,
    )
    ms = {name: t * 1e3 for name, t in times.items()}
    rows.append(
        [
            spec.op,
            spec.stage,
            'x'.join(map(str, spec.x)) + f'->{spec.out}',
            ms['jax fwd'],
            ms['torch fwd'],
            ms['jax fwd'] / ms['torch fwd'],
            ms['jax fwd+bwd'],
            ms['torch fwd+bwd'],
            ms['jax fwd+bwd'] / ms['torch fwd+bwd'],
        ]
    )
  timing.print_table(
      [
          'op',
          'where',
          'shape',
          'jax fwd ms',
          'torch fwd ms',
          'fwd jax/torch',
          'jax fwd+bwd ms',
          'torch fwd+bwd ms',
          'fwd+bwd jax/torch',
      ],
      rows,
  )


if __name__ == '__main__':
  main()
