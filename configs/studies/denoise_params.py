"""Parameters against PSNR (paper Fig. 8): DxNet and DenseNet gray denoisers at sigma 50.

DxNet 4-4-4 and 6-6-6 against DenseNet 4-4-4, 5-5-5 and 6-6-6, three seeds each, equal steps,
scored on BSD68 and Set12 with the benchmark protocol. DenseNet 5-5-5 has about DxNet 4-4-4's
parameters (147K vs 140K), so `compare` pairs each DxNet with the DenseNet of its depth and of
its size.

Budget (the default): configs/denoise.py's recipe cut to 400 Adam steps of batch 16 (lr 1e-3,
/ 5 at 80%); the 15 runs took 2 h 11 min on a 2-core CPU shared with another sweep
(docs/results.md).
'paper': the paper's budget for the same grid (50 epochs of 6,400 steps of batch 32).

  python -m dxnet_jax.sweep configs/studies/denoise_params.py --root runs/studies/denoise_params
"""

from configs import common

MODELS = ('dxnet_444', 'dxnet_666', 'densenet_444', 'densenet_555', 'densenet_666')


def get_config(arg=''):
  arg = common.parse_arg(arg, paper=False)
  recipe = '' if arg.paper else ',budget'
  return common.study(
      [dict(label=m, config=f'configs/denoise.py:{m}{recipe}') for m in MODELS],
      budget_steps=400,
      paper=arg.paper,
      metrics=('psnr', 'ssim', 'best_validation', 'parameters', 'steps'),
      compare=[
          ('densenet_444', 'dxnet_444'),  # same depth
          ('densenet_555', 'dxnet_444'),  # about the same parameters
          ('densenet_666', 'dxnet_666'),  # same depth
      ],
  )
