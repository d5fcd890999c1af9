"""Budget run (2-core shared CPU).

x4 super-resolution, DxNet16 (k=16, blocks 4-4-4-6-8-8, 843,131 parameters), T91 + BSD200.

Same budget for the DxNet and the DenseNet: batch 16 of 64 px HR patches (16 px LR), 200 Adam
steps, L1 loss, LR 5e-4 (the paper's 1e-4 is too slow for so few steps) x0.2 at 80%. The nets add
their output to a bicubic up-scaling (zero-initialised last conv), so they start at bicubic.
The paper's recipe (experiments.super_resolution: batch 16 of 96 px, 300 epochs of 1,000 steps)
is far longer.
Run:
  python -m dxnet_jax.main --config configs/budget/sr_dxnet16.py \
    --workdir runs/budget/sr_dxnet16_200
"""

from dxnet_jax import experiments

NUM_STEPS = 200


def get_config():
  config = experiments.super_resolution('dxnet16_sr')
  config.data.patch_size = 64
  config.input_shape = (16, 16, 3)
  config.num_steps = NUM_STEPS
  config.optim.learning_rate = 5e-4
  config.optim.decay_at = (0.8,)
  config.optim.decay_factor = 0.2
  config.log_every_steps = 10
  config.checkpoint_every_steps = 100
  return config
