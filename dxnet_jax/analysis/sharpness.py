"""Minima sharpness (paper section 4.4, Figs. 9-10).

The paper argues that DxNets converge to flatter minima than DenseNets: perturbing every convolution
kernel with i.i.d. noise N(0, sigma^2) raises a DxNet's loss more slowly. A second-order Taylor
expansion around the trained weights theta makes this quantitative:

    E[L(theta + eps)] - L(theta) = sigma^2 / 2 * Tr(H_S) + O(sigma^4),

where H_S is the Hessian of the loss restricted to the perturbed leaves S (the gradient term
vanishes in expectation). So the slope of the mean loss increase against sigma^2 estimates
Tr(H_S), and Tr(H_S) / n, with n the number of perturbed weights, is the mean Hessian eigenvalue:
the curvature of the 1-D quadratic 0.5 * lambda_mean * t^2 the paper draws for each model.

Two estimators live here:

- `loss_sweep` + `fit_trace`: the paper's procedure (perturb, average over realizations, fit the
  slope). Realizations are vectorised with `jax.vmap` in chunks; each realization reuses one noise
  direction z for every sigma (eps = sigma * z, common random numbers), so the slope is fitted per
  realization and its standard error is an honest one. By default each realization is antithetic
  (the mean of L(theta + eps) and L(theta - eps)): same expectation, but the gradient term, which
  dominates the variance at any point that is not an exact minimum, cancels.
- `hutchinson_trace`: Tr(H_S) = E[v^T H v] for Rademacher probes v supported on S, with exact
  Hessian-vector products (`jax.jvp` of `jax.grad`), with a standard error.

`loss_fn(params, batch) -> scalar` must be pure (an eval-mode model loss: BatchNorm statistics and
everything else that is not perturbed are closed over). A data set is a sequence of batches; the
data-set loss is the mean of the batch losses weighted by the number of valid rows (the sum of
`batch['mask']` when present, otherwise the leading dimension), so a `loss_fn` that returns a
masked per-example mean gives the exact per-example mean over the data set.

CLI (trained checkpoints of the project's trainer):

    python -m dxnet_jax.analysis.sharpness --workdir A [--workdir B ...] --out DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dxnet_jax import _optional
from dxnet_jax.analysis import figures

Params = Any
Batch = Mapping[str, Any]
LossFn = Callable[[Params, Batch], jax.Array]
Predicate = Callable[[tuple, Any], bool]


# --------------------------------------------------------------------------------------------
# Selecting the perturbed leaves.


def _key_name(key) -> str:
  for attr in ('key', 'name', 'idx'):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def path_str(path: tuple) -> str:
  """'block1/layer0/conv/kernel' for a pytree key path."""
  return '/'.join(_key_name(k) for k in path)


def conv_kernels(path: tuple, leaf) -> bool:
  """Default predicate: convolution kernels, i.e. leaves named 'kernel' with 4 dimensions.

  This is the paper's "every convolution kernel": dense-head kernels (2-D), biases and
  BatchNorm scales are left alone. Depthwise xUnit kernels ([kh, kw, 1, C]) are convolutions too
  and are included.
  """
  return bool(path) and _key_name(path[-1]) == 'kernel' and np.ndim(leaf) == 4


def all_float_leaves(path: tuple, leaf) -> bool:
  """Predicate selecting every floating-point leaf (the full Hessian)."""
  del path
  return jnp.issubdtype(jnp.result_type(leaf), jnp.floating)


def selection_mask(params: Params, predicate: Predicate = conv_kernels) -> Params:
  """A pytree of Python bools, True where `predicate(path, leaf)` selects the leaf."""
  return jax.tree_util.tree_map_with_path(lambda p, x: bool(predicate(p, x)), params)


def selected_paths(params: Params, predicate: Predicate = conv_kernels) -> list[str]:
  leaves, _ = jax.tree_util.tree_flatten_with_path(params)
  return [path_str(p) for p, x in leaves if predicate(p, x)]


def count_selected(params: Params, mask: Params) -> int:
  """Number of scalar weights in the selected leaves (n in Tr(H) / n)."""
  sizes = jax.tree.map(lambda x, m: int(np.size(x)) if m else 0, params, mask)
  return int(sum(jax.tree.leaves(sizes)))


def _random_tree(key: jax.Array, params: Params, mask: Params, kind: str) -> Params:
  """Standard normal or Rademacher noise on the selected leaves, zeros elsewhere."""
  leaves, treedef = jax.tree.flatten(params)
  flags = treedef.flatten_up_to(mask)
  keys = jax.random.split(key, len(leaves))
  out = []
  for k, x, m in zip(keys, leaves, flags):
    if not m:
      out.append(jnp.zeros_like(x))
    elif kind == 'normal':
      out.append(jax.random.normal(k, jnp.shape(x), jnp.result_type(x)))
    elif kind == 'rademacher':
      out.append(jax.random.rademacher(k, jnp.shape(x), jnp.result_type(x)))
    else:
      raise ValueError(f'unknown noise kind {kind!r}')
  return treedef.unflatten(out)


def perturb(params: Params, key: jax.Array, sigma, mask: Params) -> Params:
  """theta + sigma * z with z ~ N(0, I) on the selected leaves; other leaves are returned as is.

  Unselected leaves are passed through untouched (not "+ 0"), so they stay bit-identical.
  """
  leaves, treedef = jax.tree.flatten(params)
  flags = treedef.flatten_up_to(mask)
  keys = jax.random.split(key, len(leaves))
  out = []
  for k, x, m in zip(keys, leaves, flags):
    if m:
      z = jax.random.normal(k, jnp.shape(x), jnp.result_type(x))
      x = x + jnp.asarray(sigma, jnp.result_type(x)) * z
    out.append(x)
  return treedef.unflatten(out)


# --------------------------------------------------------------------------------------------
# Evaluating many networks at once.

VECTORIZE = ('auto', 'vmap', 'loop')


def default_vectorize(backend: str | None = None) -> str:
  """'loop' on CPU, 'vmap' elsewhere.

  Under `jax.vmap` over weights, every convolution becomes a grouped convolution
  (`feature_group_count` = number of networks), which XLA runs very slowly on CPU: 16 perturbed
  copies of a tiny DxNet on 64 images of 32x32 took 4.9 s with vmap and 0.6 s one after the
  other on a shared 2-core CPU. (`lax.map` was no way out: a scan over Hessian-vector products
  through the FFT depthwise convolution ran 10x slower than separate calls.) On GPU/TPU the
  grouped convolution is native and vmap keeps a chunk in one kernel launch.
  """
  return 'loop' if (backend or jax.default_backend()) == 'cpu' else 'vmap'


def _over_networks(fn: Callable, vectorize: str) -> Callable:
  """Compiled fn(params, batch, *per_network) -> [chunk], over the leading axis of per_network.

  'vmap': one compiled call for the whole chunk. 'loop': one compiled single-network function
  called per network from Python (dense convolutions, no grouped ones).
  """
  if vectorize == 'auto':
    vectorize = default_vectorize()
  if vectorize == 'vmap':
    return jax.jit(lambda p, batch, *xs: jax.vmap(lambda *a: fn(p, batch, *a))(*xs))
  if vectorize == 'loop':
    single = jax.jit(fn)

    def looped(p, batch, *xs):
      return jnp.stack([single(p, batch, *(x[i] for x in xs)) for i in range(len(xs[0]))])

    return looped
  raise ValueError(f'vectorize must be one of {VECTORIZE}, got {vectorize!r}')


# --------------------------------------------------------------------------------------------
# Data-set losses.


def batch_weight(batch: Batch) -> float:
  """Number of valid rows of a batch: sum of `mask` if present, else the leading dimension."""
  if 'mask' in batch:
    return float(np.sum(np.asarray(batch['mask'])))
  first = jax.tree.leaves(batch)[0]
  return float(np.shape(first)[0]) if np.ndim(first) else 1.0


def _as_batches(data: Iterable[Batch]) -> list[Batch]:
  batches = list(data)
  if not batches:
    raise ValueError('the data iterable yielded no batches')
  return batches


def dataset_loss(loss_fn: LossFn, params: Params, data: Iterable[Batch]) -> float:
  """Row-weighted mean of `loss_fn` over the batches."""
  f = jax.jit(loss_fn)
  total, weight = 0.0, 0.0
  for batch in _as_batches(data):
    w = batch_weight(batch)
    if w > 0:
      total += w * float(f(params, batch))
      weight += w
  return total / weight


def loss_sweep(
    loss_fn: LossFn,
    params: Params,
    data: Iterable[Batch],
    sigmas: Sequence[float],
    *,
    realizations: int = 32,
    predicate: Predicate = conv_kernels,
    seed: int = 0,
    chunk_size: int = 8,
    antithetic: bool = True,
    vectorize: str = 'auto',
) -> tuple[float, np.ndarray]:
  """Data-set losses of perturbed parameters.

  Returns `(base_loss, losses)` with `losses[i, r]` the data-set loss at theta + sigmas[i] * z_r
  (or, if `antithetic`, the mean of the losses at theta +- sigmas[i] * z_r). The same direction
  z_r serves every sigma and every batch: realization r is one perturbed network.

  The (sigma, realization) grid is flattened and evaluated `chunk_size` networks per compiled
  call, under `jax.vmap` or one by one (`vectorize`, see `default_vectorize`); with vmap, lower
  `chunk_size` when the activations of that many networks do not fit in memory.
  """
  sigmas = np.asarray(sigmas, np.float32)
  if sigmas.ndim != 1 or sigmas.size == 0:
    raise ValueError('sigmas must be a non-empty 1-D sequence')
  if realizations < 1 or chunk_size < 1:
    raise ValueError('realizations and chunk_size must be positive')
  batches = _as_batches(data)
  mask = selection_mask(params, predicate)
  if count_selected(params, mask) == 0:
    raise ValueError('the predicate selects no parameters')

  base_key = jax.random.PRNGKey(seed)
  real_keys = jax.vmap(lambda r: jax.random.fold_in(base_key, r))(jnp.arange(realizations))
  grid_sig = np.repeat(sigmas, realizations)  # [S*R]
  grid_key = jnp.tile(real_keys, (len(sigmas), 1))  # [S*R, 2]
  total = grid_sig.size
  n_chunks = math.ceil(total / chunk_size)
  pad = n_chunks * chunk_size - total
  grid_sig = np.concatenate([grid_sig, np.zeros(pad, np.float32)])
  grid_key = jnp.concatenate([grid_key, jnp.tile(real_keys[:1], (pad, 1))])

  def one(p, batch, sigma, key):
    value = loss_fn(perturb(p, key, sigma, mask), batch)
    if antithetic:
      value = 0.5 * (value + loss_fn(perturb(p, key, -sigma, mask), batch))
    return value

  chunk_fn = _over_networks(one, vectorize)
  base_fn = jax.jit(loss_fn)

  sums = np.zeros(total + pad, np.float64)
  base, weight = 0.0, 0.0
  for batch in batches:
    w = batch_weight(batch)
    if w <= 0:
      continue
    weight += w
    base += w * float(base_fn(params, batch))
    for c in range(n_chunks):
      sl = slice(c * chunk_size, (c + 1) * chunk_size)
      vals = chunk_fn(params, batch, jnp.asarray(grid_sig[sl]), grid_key[sl])
      sums[sl] += w * np.asarray(vals, np.float64)
  losses = (sums[:total] / weight).reshape(len(sigmas), realizations)
  return base / weight, losses


@dataclasses.dataclass
class TraceFit:
  """Least-squares fit of the loss increase against sigma^2 (through the origin).

  `coef[0]` multiplies sigma^2 (so Tr(H) = 2 * coef[0]); `coef[1]`, when present, sigma^4.
  """

  trace: float
  stderr: float
  coef: np.ndarray
  max_sigma: float


def fit_trace(
    sigmas: Sequence[float],
    deltas: np.ndarray,
    *,
    max_sigma: float | None = None,
    quartic: bool = False,
) -> TraceFit:
  """Estimate Tr(H) from loss increases `deltas[i, r]` = L(theta + sigmas[i] z_r) - L(theta).

  The model is delta = a sigma^2 (+ c sigma^4 if `quartic`), fitted per realization on the
  sigmas <= `max_sigma`; Tr(H) = 2 a. The estimate is the mean over realizations and its standard
  error the spread over realizations / sqrt(R): per-realization fits keep it valid under the
  common random numbers used across sigmas. The quartic term absorbs the first correction of the
  Taylor expansion when the sweep reaches beyond the quadratic regime.
  """
  sigmas = np.asarray(sigmas, np.float64)
  deltas = np.asarray(deltas, np.float64)
  if deltas.ndim == 1:
    deltas = deltas[:, None]
  keep = sigmas > 0
  if max_sigma is not None:
    keep &= sigmas <= max_sigma
  need = 2 if quartic else 1
  if keep.sum() < need:
    raise ValueError(f'need at least {need} positive sigmas in the fit range')
  s2 = sigmas[keep] ** 2
  design = np.stack([s2, s2**2], axis=1) if quartic else s2[:, None]
  coef, *_ = np.linalg.lstsq(design, deltas[keep], rcond=None)  # [P, R]
  slopes = coef[0]
  r = slopes.size
  se = float(np.std(slopes, ddof=1) / math.sqrt(r)) if r > 1 else float('nan')
  return TraceFit(
      trace=float(2 * slopes.mean()),
      stderr=2 * se,
      coef=coef.mean(axis=1),
      max_sigma=float(sigmas[keep].max()),
  )


# --------------------------------------------------------------------------------------------
# Hutchinson's estimator.


def hutchinson_trace(
    loss_fn: LossFn,
    params: Params,
    data: Iterable[Batch],
    *,
    probes: int = 64,
    predicate: Predicate = conv_kernels,
    seed: int = 0,
    chunk_size: int = 8,
    vectorize: str = 'auto',
) -> tuple[float, float, np.ndarray]:
  """Tr(H_S) of the data-set loss by Hutchinson's estimator, exact Hessian-vector products.

  For Rademacher v supported on the selected leaves, E[v^T H v] = Tr(H_SS). Hv is
  `jax.jvp(jax.grad(loss), (params,), (v,))` (forward-over-reverse), computed batch by batch and
  weighted like `dataset_loss`; the same probes serve every batch, `chunk_size` probes per
  compiled call (`vectorize` as in `loss_sweep`). Returns `(trace, stderr, samples)` with
  `samples[j] = v_j^T H v_j`.
  """
  if probes < 1:
    raise ValueError('probes must be positive')
  batches = _as_batches(data)
  mask = selection_mask(params, predicate)
  if count_selected(params, mask) == 0:
    raise ValueError('the predicate selects no parameters')
  base_key = jax.random.PRNGKey(seed)
  n_chunks = math.ceil(probes / chunk_size)
  keys = jax.vmap(lambda j: jax.random.fold_in(base_key, j))(jnp.arange(n_chunks * chunk_size))

  def quad_form(p, batch, key):
    v = _random_tree(key, p, mask, 'rademacher')
    grad = jax.grad(lambda q: loss_fn(q, batch))
    _, hv = jax.jvp(grad, (p,), (v,))
    parts = jax.tree.map(lambda a, b: jnp.vdot(a, b), v, hv)
    return sum(jax.tree.leaves(parts))

  chunk_fn = _over_networks(quad_form, vectorize)
  sums = np.zeros(n_chunks * chunk_size, np.float64)
  weight = 0.0
  for batch in batches:
    w = batch_weight(batch)
    if w <= 0:
      continue
    weight += w
    for c in range(n_chunks):
      sl = slice(c * chunk_size, (c + 1) * chunk_size)
      sums[sl] += w * np.asarray(chunk_fn(params, batch, keys[sl]), np.float64)
  samples = sums[:probes] / weight
  se = float(np.std(samples, ddof=1) / math.sqrt(probes)) if probes > 1 else float('nan')
  return float(samples.mean()), se, samples


# --------------------------------------------------------------------------------------------
# The whole measurement.


@dataclasses.dataclass
class SharpnessResult:
  """One model's sharpness measurement (JSON-serialisable through `to_dict`)."""

  name: str
  num_perturbed: int
  sigmas: np.ndarray
  base_loss: float
  mean_loss: np.ndarray  # mean over realizations of the perturbed loss, per sigma
  loss_stderr: np.ndarray  # its standard error
  realizations: int
  antithetic: bool
  fit: TraceFit
  hutchinson: tuple[float, float, int] | None = None  # (trace, stderr, probes)

  @property
  def mean_eigenvalue_fit(self) -> float:
    return self.fit.trace / self.num_perturbed

  @property
  def mean_eigenvalue_hutchinson(self) -> float | None:
    return None if self.hutchinson is None else self.hutchinson[0] / self.num_perturbed

  def to_dict(self) -> dict:
    d = {
        'name': self.name,
        'num_perturbed': self.num_perturbed,
        'sigmas': [float(s) for s in self.sigmas],
        'base_loss': self.base_loss,
        'mean_loss': [float(v) for v in self.mean_loss],
        'loss_stderr': [float(v) for v in self.loss_stderr],
        'realizations': self.realizations,
        'antithetic': self.antithetic,
        'trace_fit': self.fit.trace,
        'trace_fit_stderr': self.fit.stderr,
        'fit_coef': [float(c) for c in self.fit.coef],
        'fit_max_sigma': self.fit.max_sigma,
        'mean_eigenvalue_fit': self.mean_eigenvalue_fit,
    }
    if self.hutchinson is not None:
      d.update(
          trace_hutchinson=self.hutchinson[0],
          trace_hutchinson_stderr=self.hutchinson[1],
          probes=self.hutchinson[2],
          mean_eigenvalue_hutchinson=self.mean_eigenvalue_hutchinson,
      )
    return d


def auto_sigmas(
    trace: float, num_perturbed: int, *, target_increase: float = 0.05, num: int = 8
) -> np.ndarray:
  """A sweep whose largest sigma raises the loss by about `target_increase` to second order.

  From sigma^2 / 2 * Tr(H) = target: sigma_max = sqrt(2 * target / Tr(H)). Used when no sweep is
  given, because a sensible range depends on the network's curvature by orders of magnitude.
  The default target is small because the quadratic regime is narrow: on a tiny DenseNet
  classifier a sweep sized for +0.5 raised the loss by 6.4 and its slope gave 12x the
  Hutchinson trace, while sweeps sized for +0.02 to +0.1 agreed with it within the errors
  (with the quartic term of `fit_trace`).
  """
  if not trace > 0:
    # Non-positive curvature estimate: fall back to a scale set by the parameter count.
    trace = float(num_perturbed)
  s_max = math.sqrt(2.0 * target_increase / trace)
  return np.linspace(s_max / num, s_max, num)


def measure_sharpness(
    loss_fn: LossFn,
    params: Params,
    data: Iterable[Batch],
    *,
    name: str = 'model',
    sigmas: Sequence[float] | None = None,
    realizations: int = 32,
    probes: int = 32,
    predicate: Predicate = conv_kernels,
    seed: int = 0,
    chunk_size: int = 8,
    antithetic: bool = True,
    fit_max_sigma: float | None = None,
    quartic: bool = False,
    target_increase: float = 0.05,
    hutchinson: tuple[float, float, int] | None = None,
    vectorize: str = 'auto',
) -> SharpnessResult:
  """Perturbation sweep + trace fit, and Hutchinson's estimate when `probes` > 0.

  With `sigmas=None` the sweep is chosen from the Hutchinson trace (`auto_sigmas`), which then
  needs `probes` > 0. A Hutchinson result computed earlier (`(trace, stderr, probes)`) can be
  passed as `hutchinson` to skip recomputing it.
  """
  batches = _as_batches(data)
  mask = selection_mask(params, predicate)
  n = count_selected(params, mask)
  hutch = hutchinson
  if hutch is None and probes > 0:
    tr, se, _ = hutchinson_trace(
        loss_fn,
        params,
        batches,
        probes=probes,
        predicate=predicate,
        seed=seed + 1,
        chunk_size=chunk_size,
        vectorize=vectorize,
    )
    hutch = (tr, se, probes)
  if sigmas is None:
    if hutch is None:
      raise ValueError('give sigmas, or probes > 0 to choose them automatically')
    sigmas = auto_sigmas(hutch[0], n, target_increase=target_increase)
  sigmas = np.asarray(sigmas, np.float64)
  base, losses = loss_sweep(
      loss_fn,
      params,
      batches,
      sigmas,
      realizations=realizations,
      predicate=predicate,
      seed=seed,
      chunk_size=chunk_size,
      antithetic=antithetic,
      vectorize=vectorize,
  )
  fit = fit_trace(sigmas, losses - base, max_sigma=fit_max_sigma, quartic=quartic)
  stderr = (
      losses.std(axis=1, ddof=1) / math.sqrt(realizations)
      if realizations > 1
      else np.full(len(sigmas), np.nan)
  )
  return SharpnessResult(
      name=name,
      num_perturbed=n,
      sigmas=sigmas,
      base_loss=base,
      mean_loss=losses.mean(axis=1),
      loss_stderr=stderr,
      realizations=realizations,
      antithetic=antithetic,
      fit=fit,
      hutchinson=hutch,
  )


# --------------------------------------------------------------------------------------------
# Plots.


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


# --------------------------------------------------------------------------------------------
# Losses of trained checkpoints and the CLI.


def task_name(config) -> str:
  """'classification' | 'denoising' | 'super_resolution' from an experiment config."""
  task = config.get('task') if hasattr(config, 'get') else getattr(config, 'task', None)
  if task is None:
    raise ValueError("config has no 'task'")
  if isinstance(task, str):
    return task
  name = task.get('name') if hasattr(task, 'get') else getattr(task, 'name', None)
  if not isinstance(name, str):
    raise ValueError(f'cannot read a task name from config.task = {task!r}')
  return name


def eval_loss_fn(model, variables: Mapping[str, Any], task: str) -> LossFn:
  """A pure eval-mode loss of `params` for a model of the project.

  Classification: cross-entropy; denoising: MSE on the clean image; super-resolution: L1 (the
  paper's training losses). Masked per-example mean over the batch; non-`params` collections
  (BatchNorm statistics) are closed over and stay fixed.
  """
  import optax

  rest = {k: v for k, v in variables.items() if k != 'params'}

  def loss_fn(params, batch):
    out = model.apply({'params': params, **rest}, jnp.asarray(batch['inputs']), train=False)
    targets = jnp.asarray(batch['targets'])
    if task == 'classification':
      per = optax.softmax_cross_entropy_with_integer_labels(out.astype(jnp.float32), targets)
    elif task == 'denoising':
      per = jnp.mean(jnp.square(out - targets).reshape(out.shape[0], -1), axis=1)
    elif task == 'super_resolution':
      per = jnp.mean(jnp.abs(out - targets).reshape(out.shape[0], -1), axis=1)
    else:
      raise ValueError(f'unknown task {task!r}')
    mask = jnp.asarray(batch['mask'], per.dtype) if 'mask' in batch else jnp.ones_like(per)
    return jnp.sum(per * mask) / jnp.maximum(jnp.sum(mask), 1.0)

  return loss_fn


def _parse_floats(text: str | None) -> list[float] | None:
  return None if not text else [float(x) for x in text.split(',') if x.strip()]


def main(argv: Sequence[str] | None = None) -> list[SharpnessResult]:
  parser = argparse.ArgumentParser(
      prog='python -m dxnet_jax.analysis.sharpness',
      description='Minima sharpness of trained checkpoints (paper section 4.4, Figs. 9-10).',
  )
  parser.add_argument(
      '--workdir',
      action='append',
      required=True,
      help='a training workdir; repeat to compare models',
  )
  parser.add_argument(
      '--name',
      action='append',
      default=None,
      help="legend name per --workdir (default: the workdir's base name)",
  )
  parser.add_argument('--out', required=True, help='folder for sharpness.json / sharpness.png')
  parser.add_argument(
      '--sigmas',
      default=None,
      help='comma-separated sweep; default chosen from the Hutchinson trace',
  )
  parser.add_argument('--realizations', type=int, default=32)
  parser.add_argument('--probes', type=int, default=32, help='Hutchinson probes (0: skip)')
  parser.add_argument('--batch-size', type=int, default=100)
  parser.add_argument(
      '--max-batches',
      type=int,
      default=4,
      help='validation batches used (the loss is over these); 0 = all',
  )
  parser.add_argument('--chunk-size', type=int, default=4, help='networks per vmap call')
  parser.add_argument(
      '--target-increase',
      type=float,
      default=0.05,
      help='automatic sweep: predicted loss increase at the largest sigma',
  )
  parser.add_argument(
      '--vectorize',
      choices=VECTORIZE,
      default='auto',
      help='networks of a chunk under vmap or one by one (auto: loop on CPU)',
  )
  parser.add_argument('--fit-max-sigma', type=float, default=None)
  parser.add_argument('--quartic', action='store_true', help='add a sigma^4 term to the fit')
  parser.add_argument('--no-antithetic', action='store_true')
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  if args.name and len(args.name) != len(args.workdir):
    parser.error('give one --name per --workdir')
  _optional.require('matplotlib', 'plots', 'python -m dxnet_jax.analysis.sharpness').use('Agg')

  # Lazy imports: the trainer and data pipelines are heavy and not needed by the library part.
  from dxnet_jax import data as data_lib
  from dxnet_jax.train import checkpoint

  runs = []
  for i, workdir in enumerate(args.workdir):
    model, variables, config = checkpoint.load_for_inference(workdir)
    data = data_lib.build(config, global_batch_size=args.batch_size, seed=args.seed)
    val = data.validation()
    if val is None:
      raise SystemExit(f'{workdir}: its data has no validation split')
    batches = []
    for batch in val:
      batches.append(batch)
      if args.max_batches and len(batches) >= args.max_batches:
        break
    name = args.name[i] if args.name else os.path.basename(os.path.normpath(workdir))
    task = dict(getattr(data, 'info', None) or {}).get('task') or task_name(config)
    loss_fn = eval_loss_fn(model, variables, task)
    hutch = None
    if args.probes > 0:
      tr, se, _ = hutchinson_trace(
          loss_fn,
          variables['params'],
          batches,
          probes=args.probes,
          seed=args.seed + 1,
          chunk_size=args.chunk_size,
          vectorize=args.vectorize,
      )
      hutch = (tr, se, args.probes)
    runs.append((name, loss_fn, variables['params'], batches, hutch))

  sigmas = _parse_floats(args.sigmas)
  if sigmas is None:
    # One sweep for every model, so the curves compare at equal sigma: sized for the sharpest.
    traces = [r[4][0] for r in runs if r[4] is not None]
    if not traces:
      parser.error('give --sigmas, or --probes > 0 to choose them automatically')
    n_min = min(count_selected(r[2], selection_mask(r[2])) for r in runs)
    sigmas = auto_sigmas(max(traces), n_min, target_increase=args.target_increase)

  results = []
  for name, loss_fn, params, batches, hutch in runs:
    res = measure_sharpness(
        loss_fn,
        params,
        batches,
        name=name,
        sigmas=sigmas,
        realizations=args.realizations,
        probes=0,
        hutchinson=hutch,
        seed=args.seed,
        chunk_size=args.chunk_size,
        antithetic=not args.no_antithetic,
        fit_max_sigma=args.fit_max_sigma,
        quartic=args.quartic,
        vectorize=args.vectorize,
    )
    print(
        json.dumps({k: v for k, v in res.to_dict().items() if not isinstance(v, list)}), flush=True
    )
    results.append(res)

  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'sharpness.json'), 'w') as f:
    json.dump([r.to_dict() for r in results], f, indent=1)
  png = plot_sharpness(results, os.path.join(args.out, 'sharpness.png'))
  print(f'wrote {png}')
  return results


if __name__ == '__main__':
  main()
