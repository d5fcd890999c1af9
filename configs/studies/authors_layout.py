"""The authors' DxNet denoiser layout against our reading of the paper, gray, sigma 50.

DxNet 4-4-4 (k=16) as we read the paper (`dxnet_denoise_444`: 9x9 xUnits, final BN-ReLU, Conv3x3
output) and as the authors' restoration code builds it (`dxnet_denoise_444_authors`: 7x7 xUnits,
each in an x-module of a biased Conv3x3, the xUnit and a BatchNorm; no final BN-ReLU, Conv5x5
output); three seeds each, equal steps, scored on BSD68 and Set12.

Budget (the default): 400 Adam steps of batch 16 (lr 1e-3, / 5 at 80%), as
configs/studies/denoise_params.py. 'paper': the full denoising recipe (50 epochs of 6,400 steps
of batch 32).

  python -m dxnet_jax.sweep configs/studies/authors_layout.py --root runs/studies/authors_layout
"""

from configs import common


def get_config(arg=''):
  arg = common.parse_arg(arg, paper=False)
  config = 'configs/denoise.py:dxnet_444' + ('' if arg.paper else ',budget')
  authors = {'model.name': 'dxnet_denoise_444_authors'}
  return common.study(
      [
          dict(label='dxnet_444', config=config),
          dict(label='dxnet_444_authors', config=config, overrides=authors),
      ],
      budget_steps=400,
      paper=arg.paper,
      metrics=('psnr', 'ssim', 'best_validation', 'parameters', 'steps'),
      compare=[('dxnet_444', 'dxnet_444_authors')],
  )
