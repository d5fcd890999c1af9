"""Minima sharpness (paper Figs. 9-10) of the denoisers of denoise_params.py, per seed.

The runs of configs/studies/denoise_params.py (the same labels, configs and seeds), each followed
by `python -m dxnet_jax.analysis.sharpness` on its trained workdir: Hutchinson's estimate of
the trace of the loss Hessian over the convolution kernels, and the loss under random
perturbation of those kernels at every sigma of one grid, so that the curves of all models
compare at equal sigma. Run it with denoise_params.py's --root: the sweep reuses the trained
workdirs and only measures them; its table holds denoise_params.py's columns and the sharpness
ones (`python -m dxnet_jax.analysis.stats ROOT/results.json` for the paired differences).

Loss: the training loss (mean squared error on the clean image, [0, 1] pixels) over the 12
Set12 validation crops of 128 px, in batches of 4 (the Hessian-vector products of a batch of 12
took 12 GB of host memory, of 4 under 5 GB). Sigmas: for the budget-trained DxNet 4-4-4 (seed 0;
loss 0.0039, Hutchinson Tr(H) 860 +- 62) the trace fitted to the loss increase on
sigma <= 0.002 is 947 +- 224, and at sigma 0.004 the loss is 2.9 times the unperturbed one
(docs/results/studies/denoise_params/). The trace is fitted on sigma <= FIT_MAX_SIGMA, so
that models a few times sharper stay in their quadratic range; the larger sigmas extend the
curves (for the 'paper' budget, check them on one trained model first). 4 probes and 2
antithetic realizations per sigma.

  python -m dxnet_jax.sweep configs/studies/sharpness.py --root runs/studies/denoise_params
"""

from configs.studies import denoise_params

SIGMAS = (0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004)
FIT_MAX_SIGMA = 0.002
PROBES = 4
REALIZATIONS = 2
VALUES = (
    'trace_hutchinson',
    'trace_hutchinson_stderr',
    'trace_fit',
    'trace_fit_stderr',
    'mean_eigenvalue_hutchinson',
    'base_loss',
)


def get_config(arg=''):
  study = denoise_params.get_config(arg)
  study.analyses = [
      dict(
          name='sharpness',
          module='dxnet_jax.analysis.sharpness',
          args=dict(
              sigmas=SIGMAS,
              probes=PROBES,
              realizations=REALIZATIONS,
              fit_max_sigma=FIT_MAX_SIGMA,
              batch_size=4,
              max_batches=0,
          ),
          results='sharpness.json',
      )
  ]
  study.metrics = (*study.metrics, *(f'sharpness/{value}' for value in VALUES))
  return study
