"""x4 super-resolution: DxNet16/32 and their DenseNet counterparts, without BatchNorm.

Recipe (the paper's where it says; ours where marked):
  data       T91 + BSD200 (ours), 96x96 HR patches (ours), LR by PIL bicubic down-scaling, flips
             and rotations; 300 epochs of 16,000 patches (ours)
  optimiser  Adam, lr 1e-4, L1 loss, batch 16
  schedule   lr / 10 at 50% of training
  evaluation Set5, Set14, BSD100: Y channel (BT.601), 8 bits, 4-px border removed; Set5
             validates

Argument: MODEL[,budget]
  MODEL    dxnet16 (k=16, 4-4-4-6-8-8, 0.84M parameters), dxnet32 (k=32, 4-6-8, 1.23M),
           densenet16 (0.78M), densenet32 (1.15M): the DenseNets are the DxNets with ReLU layers
  budget   a 2-core CPU's budget: 64 px HR patches, 200 steps, lr 5e-4 (1e-4 is too slow for
           so few steps) / 5 at 80%

  python -m dxnet_jax.main --config configs/sr.py:dxnet16 --workdir runs/sr_dxnet16
"""

from configs import common

MODELS = {
    'dxnet16': 'dxnet16_sr',
    'dxnet32': 'dxnet32_sr',
    'densenet16': 'densenet16_sr',
    'densenet32': 'densenet32_sr',
}


def get_config(arg='dxnet16'):
  arg = common.parse_arg(arg, model='dxnet16', budget=False)
  model = common.choose(arg.model, MODELS, 'super-resolution model')
  config = common.trainer('super_resolution', model, (24, 24, 3), name='super_resolution')
  config.data.update(
      train_dirs=('T91', 'BSD200'),
      channels=3,
      patch_size=96,
      patches_per_epoch=16000,
      augment='dihedral',
      scale=4,
      validation_set='Set5',
      eval_sets=('Set5', 'Set14', 'BSD100'),
  )
  config.optim = common.optim(
      'adam', learning_rate=1e-4, schedule='piecewise', decay_at=(0.5,), decay_factor=0.1
  )
  config.batch_size = 16
  config.num_epochs = 300
  config.checkpoint_every_steps = 5000
  if arg.budget:
    config.data.patch_size = 64
    config.input_shape = (16, 16, 3)
    config.num_steps = 200
    config.optim.learning_rate = 5e-4
    config.optim.decay_at = (0.8,)
    config.optim.decay_factor = 0.2
    config.log_every_steps = 10
    config.checkpoint_every_steps = 100
  return config
