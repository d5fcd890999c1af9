"""Gray denoising (sigma 50) on one GPU: the paper's recipe with an accelerator's settings.

As `experiments.denoising` (Adam 1e-3, MSE, 40 px Train400 patches, divided by 5 at the decay
points), with what keeps a small net's GPU busy: batch 64 (the paper's 32 leaves most of the chip
idle), the loss checked for NaN every 100 steps instead of every step (each check waits for the
device), and logs every 500 steps.

Argument: 'MODEL[,DEPTHWISE_IMPL]', e.g. `configs/gpu/denoise.py:dxnet_denoise_444,fft` (see
`benchmarks/depthwise.py` for which xUnit convolution is fastest on the card). Full-length run:
  python -m dxnet_jax.main --config configs/gpu/denoise.py:dxnet_denoise_444 --workdir runs/dn
Same-budget pair in a fixed wall-clock box (docs/results.md):
  python launch/timeboxed.py --minutes 4 --root runs/gpu \\
    --run dxnet=configs/gpu/denoise.py:dxnet_denoise_444 \\
    --run densenet=configs/gpu/denoise.py:densenet_denoise_555
"""

from dxnet_jax import experiments
from dxnet_jax import models


def get_config(arg: str = 'dxnet_denoise_444'):
  model, _, impl = arg.partition(',')
  if model not in models.MODELS or models.model_task(model) != 'denoising':
    raise ValueError(f'configs/gpu/denoise.py takes a denoising model name, got {model!r}')
  config = experiments.denoising(model, sigma=50.0)
  if impl:
    config.model.depthwise_impl = impl
  config.batch_size = 64
  config.nan_check_every_steps = 100
  config.log_every_steps = 500
  return config
