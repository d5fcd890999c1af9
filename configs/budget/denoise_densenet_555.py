"""Budget run (2-core shared CPU).

gray denoising sigma 50, DenseNet 5-5-5 k=16 (147,309 parameters), Train400 40 px patches.

Same budget for the DxNet and the DenseNet: batch 16, 120 Adam steps (LR 1e-3, x0.2 at 80%).
The paper's recipe (experiments.denoising: batch 32, 50 epochs of 6,400 steps) is 2,667x longer.
Run:
  python -m dxnet_jax.main --config configs/budget/denoise_densenet_555.py \
    --workdir runs/budget/denoise_densenet_555
"""

from dxnet_jax import experiments


def get_config():
  config = experiments.denoising('densenet_denoise_555', sigma=50.0)
  config.batch_size = 16
  config.num_steps = 120
  config.optim.decay_at = (0.8,)
  config.log_every_steps = 10
  config.checkpoint_every_steps = 40
  return config
