"""Cell order of the feed-forward xUnit nets (paper Fig. 4): ours against the authors'.

configs/xunit_designs.py's nets, 7 layers of 32 channels (the deepest of
configs/studies/xunit_designs.py), with both xUnit designs, in our cell order (Conv without
bias, BatchNorm, xUnit) and in the authors' released xDnCNN's (BatchNorm, biased Conv, xUnit);
three seeds each, equal steps, sigma 50, scored on BSD68 and Set12.

Budget (the default): 400 Adam steps of batch 16 (lr 1e-3, / 5 at 80%). 'paper': 64 channels
and the full denoising recipe (50 epochs of 6,400 steps of batch 32).

  python -m dxnet_jax.sweep configs/studies/xunit_cell_order.py --root runs/studies/cell_order
"""

from configs import common

DESIGNS = ('dxnet', 'gaussian')
ORDERS = {'conv_bn': '', 'bn_conv': '_bn_conv'}


def get_config(arg=''):
  arg = common.parse_arg(arg, paper=False)
  variant = 'features=64' if arg.paper else 'features=32,budget'
  runs = [
      dict(
          label=f'{design}_7{suffix}',
          config=f'configs/xunit_designs.py:{design},7,cell_order={order},{variant}',
      )
      for design in DESIGNS
      for order, suffix in ORDERS.items()
  ]
  return common.study(
      runs,
      budget_steps=400,
      paper=arg.paper,
      metrics=('psnr', 'ssim', 'parameters', 'steps'),
      compare=[(f'{d}_7', f'{d}_7_bn_conv') for d in DESIGNS],
  )
