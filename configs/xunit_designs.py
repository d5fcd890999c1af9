"""The xUnit-design comparison (paper Fig. 4): feed-forward Conv+BN+activation denoisers.

Recipe: configs/denoise.py's (Train400 40x40 patches, sigma 50, Adam 1e-3, MSE, 50 epochs) with
`depth` 3x3 convolutions of `features` channels, each but the last with a BatchNorm and an
activation: ReLU, the DxNet xUnit, or the original (2018) Gaussian xUnit. The xUnit nets use the
cell of the authors' released xDnCNN (BatchNorm, biased Conv, xUnit), the ReLU nets DnCNN's (Conv,
BatchNorm, ReLU): the authors' order is 0.05 dB lower with the DxNet xUnit, beyond seed noise
(docs/results.md, "Cell order of the Fig. 4 nets"), so the configs follow what the authors ran.

Argument: DESIGN,DEPTH[,features=F][,cell_order=O][,budget]
  --config configs/xunit_designs.py:dxnet,9      Conv+xUnit (DxNet design), 9 layers
  --config configs/xunit_designs.py:gaussian,9   original 2018 xUnit (Gaussian gate)
  --config configs/xunit_designs.py:relu,17      ReLU baseline (DnCNN)
  cell_order  bn_conv (the default of the xUnit designs: BatchNorm, biased Conv, activation, as
              in the authors' released xDnCNN) or conv_bn (the default of relu: Conv, BatchNorm,
              activation)
  budget   configs/denoise.py's budget (batch 16, 120 steps, lr / 5 at 80%)

configs/studies/xunit_designs.py runs the comparison over depths and seeds.
"""

from configs import common
from configs import denoise

DESIGNS = ('relu', 'dxnet', 'gaussian')


def get_config(arg='dxnet,9'):
  arg = common.parse_arg(arg, design='dxnet', depth=9, features=64, cell_order='', budget=False)
  if arg.design not in DESIGNS:
    raise ValueError(f'design must be one of {DESIGNS}, got {arg.design!r}.')
  config = denoise.get_config('xdncnn,budget' if arg.budget else 'xdncnn')
  config.model.depth = arg.depth
  config.model.features = arg.features
  config.model.activation = 'relu' if arg.design == 'relu' else 'xunit'
  if arg.design != 'relu':
    config.model.xunit_design = arg.design
  cell_order = arg.cell_order or ('conv_bn' if arg.design == 'relu' else 'bn_conv')
  if cell_order != 'conv_bn':
    config.model.cell_order = cell_order
  return config
