"""Figures of sharpness measurements: loss against sigma with the fitted curves, and the
mean-eigenvalue quadratics (paper Figs. 9-10)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from dxnet_jax.analysis import figures
from dxnet_jax.analysis.sharpness.estimators import SharpnessResult


def plot_loss_vs_sigma(ax, results: Sequence[SharpnessResult]) -> None:
  """Mean perturbed loss against sigma (error bars: standard error) with the fitted curve."""
  for i, res in enumerate(results):
    color = f'C{i}'
    ax.errorbar(
        res.sigmas,
        res.mean_loss,
        yerr=res.loss_stderr,
        fmt='o',
        ms=4,
        color=color,
        capsize=2,
        label=f'{res.name} (measured)',
    )
    s = np.linspace(0.0, float(res.sigmas.max()), 200)
    curve = res.base_loss + res.fit.coef[0] * s**2
    if res.fit.coef.size > 1:
      curve = curve + res.fit.coef[1] * s**4
    ax.plot(s, curve, '-', color=color, label=f'{res.name} fit: Tr(H)={res.fit.trace:.3g}')
  ax.set_xlabel(r'perturbation $\sigma_\theta$')
  ax.set_ylabel('loss')
  ax.set_title('Loss under random weight perturbation')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)


def plot_quadratics(
    ax, results: Sequence[SharpnessResult], *, source: str = 'auto', t_max: float = 1.0
) -> None:
  """The 1-D quadratics 0.5 * lambda_mean * t^2, one per model.

  `source`: 'fit' (perturbation slope), 'hutchinson', or 'auto' (Hutchinson when available).
  """
  t = np.linspace(-t_max, t_max, 201)
  for i, res in enumerate(results):
    use_h = source == 'hutchinson' or (source == 'auto' and res.hutchinson is not None)
    lam = res.mean_eigenvalue_hutchinson if use_h else res.mean_eigenvalue_fit
    if lam is None:
      raise ValueError(f'{res.name}: no Hutchinson estimate')
    tag = 'Hutchinson' if use_h else 'fit'
    ax.plot(
        t, 0.5 * lam * t**2, color=f'C{i}', label=rf'{res.name}: $\bar\lambda$={lam:.3g} ({tag})'
    )
  ax.set_xlabel('t')
  ax.set_ylabel(r'$\frac{1}{2}\bar\lambda t^2$')
  ax.set_title('Mean-eigenvalue quadratics')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)


def sharpness_figure(results: Sequence[SharpnessResult]):
  """A matplotlib figure with both panels side by side (loss vs sigma, the quadratics)."""
  plt = figures.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  plot_loss_vs_sigma(axes[0], results)
  plot_quadratics(axes[1], results)
  fig.tight_layout()
  return fig


def plot_sharpness(results: Sequence[SharpnessResult], path: str, *, dpi: int = 100) -> str:
  """`sharpness_figure` written to a PNG; returns the path."""
  fig = sharpness_figure(results)
  return figures.save(fig, path, dpi)
