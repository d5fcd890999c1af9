"""xUnit designs (paper Fig. 4): Conv+ReLU against Conv+xUnit, both xUnit designs, three depths.

Feed-forward gray denoisers (configs/xunit_designs.py) of 3, 5 and 7 layers of 32 channels,
each convolution but the last with a BatchNorm and ReLU (Conv, BN, ReLU), the DxNet xUnit, or the
original (2018) Gaussian xUnit (both in the authors' cell: BN, biased Conv, xUnit); three seeds
each, equal steps, sigma 50, scored on BSD68 and Set12.

Budget (the default): 400 Adam steps of batch 16 (lr 1e-3, / 5 at 80%); 36 s (3 layers,
ReLU) to 2.5 min (7 layers, DxNet xUnit) per run, two at a time on a 2-core CPU shared with one
other sweep (docs/results.md). 'paper': 64 channels and the full denoising recipe (50 epochs of
6,400 steps of batch 32).

  python -m dxnet_jax.sweep configs/studies/xunit_designs.py --root runs/studies/xunit_designs
"""

from configs import common

DESIGNS = ('relu', 'dxnet', 'gaussian')
DEPTHS = (3, 5, 7)


def get_config(arg=''):
  arg = common.parse_arg(arg, paper=False)
  variant = 'features=64' if arg.paper else 'features=32,budget'
  runs = [
      dict(label=f'{design}_{depth}', config=f'configs/xunit_designs.py:{design},{depth},{variant}')
      for depth in DEPTHS
      for design in DESIGNS
  ]
  return common.study(
      runs,
      budget_steps=400,
      paper=arg.paper,
      metrics=('psnr', 'ssim', 'parameters', 'steps'),
      compare=[(f'relu_{d}', f'{x}_{d}') for d in DEPTHS for x in ('dxnet', 'gaussian')],
  )
