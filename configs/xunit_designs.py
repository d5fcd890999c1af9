"""The xUnit-design comparison (paper Fig. 4): feed-forward Conv+BN+activation denoisers.

  --config configs/xunit_designs.py:dxnet,9      Conv+xUnit (DxNet design), 9 layers
  --config configs/xunit_designs.py:gaussian,9   original 2018 xUnit (Gaussian gate)
  --config configs/xunit_designs.py:relu,17      ReLU baseline (DnCNN-like)

Sweep: for design in relu dxnet gaussian; for depth in 3 5 7 9 ...; one run each, then plot
PSNR against parameters with `python -m dxnet_jax.analysis.budget_plots`.
"""

from dxnet_jax import experiments

DESIGNS = ('relu', 'dxnet', 'gaussian')


def get_config(arg='dxnet,9'):
  design, depth = (arg or 'dxnet,9').split(',')
  if design not in DESIGNS:
    raise ValueError(f'design must be one of {DESIGNS}, got {design!r}')
  config = experiments.denoising('xdncnn')
  config.model.depth = int(depth)
  config.model.activation = 'relu' if design == 'relu' else 'xunit'
  config.model.xunit_design = 'dxnet' if design == 'relu' else design
  return config
