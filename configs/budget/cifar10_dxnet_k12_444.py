"""Budget run (2-core shared CPU).

CIFAR-10, DxNet k=12, blocks 4-4-4 (119,650 parameters).

The paper's nets (DxNet 12-12-12, DenseNet-BC 16-16-16) take several seconds per batch-64 step
here, so both are cut to about 0.12M parameters. Same budget for both: batch 64, 150 SGD Nesterov
steps (LR 0.1, cosine to 0, wd 5e-4), pad-crop + flip, no cutout (it slows short runs down).
Train: the shared JPEG train set less the last 500 images of each class; those 5,000 validate.
The paper's recipe (experiments.classification: batch 128, 200 epochs, cutout) is far longer.
Run:
  python -m dxnet_jax.main --config configs/budget/cifar10_dxnet_k12_444.py \
    --workdir runs/budget/cifar10_dxnet_k12_444
Seed 1: add --config.seed=1 (and another workdir).
"""

from dxnet_jax import experiments

NUM_STEPS = 150


def get_config():
  config = experiments.classification('cifar10', 'dxnet_k12_12')
  config.model.blocks = (4, 4, 4)
  config.batch_size = 64
  config.data.cutout = 0
  config.num_steps = NUM_STEPS
  config.optim.schedule = 'cosine'
  config.log_every_steps = 25
  config.checkpoint_every_steps = 50
  return config
