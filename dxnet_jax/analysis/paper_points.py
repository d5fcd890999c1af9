"""Reported numbers to draw beside ours in the parameter-budget plots (paper Figs. 1, 6, 8).

Only numbers we could source with confidence are here; each carries a comment saying where it comes
from. Where a point's parameter count is known but its accuracy / PSNR is not (we have not been able
to check the paper's tables from here), `value` is None: the plots mark such a point on the
parameter axis only, never at an invented height. Fill a value in only with its table or figure.

Sources:
- "DxNet paper": Kligvasser & Michaeli, "Dense xUnit Networks", arXiv:1811.11051 (2018).
- "DnCNN paper": Zhang et al., "Beyond a Gaussian Denoiser: Residual Learning of Deep CNN for Image
  Denoising", IEEE TIP 2017 (BSD68 average PSNR table), which the DxNet paper compares with.
- The bicubic x4 numbers are the standard published baseline; the project reproduces them exactly
  with PIL BICUBIC down-scaling and Y-channel PSNR with a 4-pixel border (shared/DESIGN.md).

Record schema (the same as `budget_plots`): model, params (int or None for a method without
trained parameters), metric ('accuracy' | 'error' | 'psnr'), value (float or None), dataset,
source, and here also `family` (which line a point belongs to) and `citation`.
"""

from __future__ import annotations

PAPER = 'paper'


def _point(model, params, metric, value, dataset, family, citation):
  return dict(
      model=model,
      params=params,
      metric=metric,
      value=value,
      dataset=dataset,
      source=PAPER,
      family=family,
      citation=citation,
  )


POINTS: list[dict] = [
    # ---- CIFAR-10 classification (DxNet paper, Fig. 1 and its CIFAR table). Parameter counts are
    # the paper's rounded sizes; the accuracies are not available to us: value None.
    # DenseNet-BC, k=12, blocks 16-16-16: "0.8M" in the DxNet paper (ours: 769,162).
    _point(
        'DenseNet-BC k12 16-16-16',
        800_000,
        'accuracy',
        None,
        'cifar10',
        'DenseNet-BC',
        'DxNet paper, CIFAR-10 comparison: 0.8M parameters; accuracy not sourced here',
    ),
    # DenseNet-BC, k=12, blocks 26-26-26: "1.7M" in the DxNet paper (ours: 1,739,002).
    _point(
        'DenseNet-BC k12 26-26-26',
        1_700_000,
        'accuracy',
        None,
        'cifar10',
        'DenseNet-BC',
        'DxNet paper, CIFAR-10 comparison: 1.7M parameters; accuracy not sourced here',
    ),
    # DxNet, k=12, blocks 12-12-12: "0.5M" in the DxNet paper (ours: about 0.53M).
    _point(
        'DxNet k12 12-12-12',
        500_000,
        'accuracy',
        None,
        'cifar10',
        'DxNet',
        'DxNet paper, CIFAR-10 comparison: 0.5M parameters; accuracy not sourced here',
    ),
    # DxNet, k=12, blocks 19-19-19: "1.0M" in the DxNet paper (ours: about 1.07-1.09M).
    _point(
        'DxNet k12 19-19-19',
        1_000_000,
        'accuracy',
        None,
        'cifar10',
        'DxNet',
        'DxNet paper, CIFAR-10 comparison: 1.0M parameters; accuracy not sourced here',
    ),
    # ---- Gray denoising, sigma = 50, BSD68 (DxNet paper Fig. 6 compares with these).
    # BM3D: 25.62 dB average PSNR on BSD68 at sigma 50 (DnCNN paper's BSD68 table). Not a trained
    # net: params None, drawn as a horizontal reference line.
    _point(
        'BM3D', None, 'psnr', 25.62, 'bsd68_sigma50', 'BM3D', 'DnCNN paper, BSD68 table, sigma 50'
    ),
    # DnCNN(-S): 26.23 dB on BSD68 at sigma 50, 556K parameters (DnCNN paper; the DxNet paper
    # quotes the 556K count when sizing its denoiser).
    _point(
        'DnCNN',
        556_000,
        'psnr',
        26.23,
        'bsd68_sigma50',
        'DnCNN',
        'DnCNN paper, BSD68 table, sigma 50; 556K parameters',
    ),
    # DxNet gray denoiser, k=16, blocks 4-4-4: the DxNet paper sizes it at a quarter of DnCNN's
    # 556K parameters (ours: 130-150K). Its PSNR is not sourced here: value None.
    _point(
        'DxNet k16 4-4-4',
        139_000,
        'psnr',
        None,
        'bsd68_sigma50',
        'DxNet',
        "DxNet paper: a quarter of DnCNN's 556K parameters; PSNR not sourced here",
    ),
    # ---- Super-resolution x4, Y-channel PSNR (DxNet paper Fig. 8 compares with these).
    # Bicubic interpolation: Set5 28.42, Set14 25.99, BSD100 25.96 dB (standard baseline).
    _point('Bicubic', None, 'psnr', 28.42, 'set5_x4', 'Bicubic', 'standard bicubic x4 baseline'),
    _point('Bicubic', None, 'psnr', 25.99, 'set14_x4', 'Bicubic', 'standard bicubic x4 baseline'),
    _point('Bicubic', None, 'psnr', 25.96, 'bsd100_x4', 'Bicubic', 'standard bicubic x4 baseline'),
    # DxNet16 (k16, blocks 4-4-4-6-8-8): 0.86M parameters in the DxNet paper; PSNRs not sourced.
    *(
        _point(
            'DxNet16',
            860_000,
            'psnr',
            None,
            dataset,
            'DxNet',
            'DxNet paper: 0.86M parameters; PSNR not sourced here',
        )
        for dataset in ('set5_x4', 'set14_x4', 'bsd100_x4')
    ),
]


def points(dataset: str | None = None) -> list[dict]:
  """Copies of the reported points, optionally of one data set."""
  return [dict(p) for p in POINTS if dataset is None or p['dataset'] == dataset]
