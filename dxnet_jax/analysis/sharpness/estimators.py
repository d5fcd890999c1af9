"""Minima sharpness estimators (paper section 4.4, Figs. 9-10).

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
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

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
  (`feature_group_count` = number of networks), which XLA runs slowly on CPU (measured in
  docs/analysis.md); on GPU/TPU the grouped convolution is native and vmap keeps a chunk in one
  kernel launch.
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


def _nonempty_mask(params: Params, predicate: Predicate) -> Params:
  mask = selection_mask(params, predicate)
  if count_selected(params, mask) == 0:
    raise ValueError('the predicate selects no parameters')
  return mask


def _keys(seed: int, count: int) -> jax.Array:
  """Keys 0 .. count-1 folded into `seed`'s key: network r's noise whatever the chunking."""
  base_key = jax.random.PRNGKey(seed)
  return jax.vmap(lambda r: jax.random.fold_in(base_key, r))(jnp.arange(count))


def _chunks(count: int, size: int) -> list[slice]:
  return [slice(c * size, (c + 1) * size) for c in range(count)]


def _as_batches(data: Iterable[Batch]) -> list[Batch]:
  batches = list(data)
  if not batches:
    raise ValueError('the data iterable yielded no batches')
  return batches


def _weighted_mean(evaluate: Callable[[Batch], Any], batches: Sequence[Batch]) -> np.ndarray:
  """Row-weighted mean over the batches of `evaluate(batch)` (a scalar or array per batch)."""
  total, weight = 0.0, 0.0
  for batch in batches:
    w = batch_weight(batch)
    if w > 0:
      total = total + w * np.asarray(evaluate(batch), np.float64)
      weight += w
  return total / weight


def dataset_loss(loss_fn: LossFn, params: Params, data: Iterable[Batch]) -> float:
  """Row-weighted mean of `loss_fn` over the batches."""
  f = jax.jit(loss_fn)
  return float(_weighted_mean(lambda batch: f(params, batch), _as_batches(data)))


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
  batches, mask = _as_batches(data), _nonempty_mask(params, predicate)
  real_keys = _keys(seed, realizations)
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

  def evaluate(batch):
    chunks = [
        chunk_fn(params, batch, jnp.asarray(grid_sig[sl]), grid_key[sl])
        for sl in _chunks(n_chunks, chunk_size)
    ]
    return np.concatenate([[base_fn(params, batch)], *map(np.asarray, chunks)])

  means = _weighted_mean(evaluate, batches)
  return float(means[0]), means[1 : total + 1].reshape(len(sigmas), realizations)


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
  batches, mask = _as_batches(data), _nonempty_mask(params, predicate)
  n_chunks = math.ceil(probes / chunk_size)
  keys = _keys(seed, n_chunks * chunk_size)

  def quad_form(p, batch, key):
    v = _random_tree(key, p, mask, 'rademacher')
    grad = jax.grad(lambda q: loss_fn(q, batch))
    _, hv = jax.jvp(grad, (p,), (v,))
    parts = jax.tree.map(lambda a, b: jnp.vdot(a, b), v, hv)
    return sum(jax.tree.leaves(parts))

  chunk_fn = _over_networks(quad_form, vectorize)
  evaluate = lambda batch: np.concatenate(
      [np.asarray(chunk_fn(params, batch, keys[sl])) for sl in _chunks(n_chunks, chunk_size)]
  )
  samples = _weighted_mean(evaluate, batches)[:probes]
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
  The default target is small because the quadratic regime is narrow (docs/analysis.md).
  """
  if not trace > 0:
    # Non-positive curvature estimate: fall back to a scale set by the parameter count.
    trace = float(num_perturbed)
  s_max = math.sqrt(2.0 * target_increase / trace)
  return np.linspace(s_max / num, s_max, num)


@dataclasses.dataclass(frozen=True)
class Settings:
  """How `measure_sharpness` measures: which leaves, the sweep, the fit and the probes.

  `probes` > 0 adds Hutchinson's estimate; `fit_max_sigma` and `quartic` go to `fit_trace`;
  `target_increase` sizes an automatic sweep (`auto_sigmas`); `vectorize` and `chunk_size` as in
  `loss_sweep`.
  """

  realizations: int = 32
  probes: int = 32
  predicate: Predicate = conv_kernels
  seed: int = 0
  chunk_size: int = 8
  antithetic: bool = True
  fit_max_sigma: float | None = None
  quartic: bool = False
  target_increase: float = 0.05
  vectorize: str = 'auto'


def hutchinson_estimate(
    loss_fn: LossFn, params: Params, data: Iterable[Batch], settings: Settings
) -> tuple[float, float, int]:
  """`(trace, stderr, probes)` of `hutchinson_trace` under `settings` (seeded apart from the
  sweep's realizations)."""
  trace, stderr, _ = hutchinson_trace(
      loss_fn,
      params,
      data,
      probes=settings.probes,
      predicate=settings.predicate,
      seed=settings.seed + 1,
      chunk_size=settings.chunk_size,
      vectorize=settings.vectorize,
  )
  return trace, stderr, settings.probes


def measure_sharpness(
    loss_fn: LossFn,
    params: Params,
    data: Iterable[Batch],
    settings: Settings = Settings(),
    *,
    name: str = 'model',
    sigmas: Sequence[float] | None = None,
    hutchinson: tuple[float, float, int] | None = None,
) -> SharpnessResult:
  """Perturbation sweep + trace fit, and Hutchinson's estimate when `settings.probes` > 0.

  With `sigmas=None` the sweep is chosen from the Hutchinson trace (`auto_sigmas`), which then
  needs probes. A Hutchinson result computed earlier (`hutchinson_estimate`) can be passed as
  `hutchinson` to skip recomputing it.
  """
  batches = _as_batches(data)
  n = count_selected(params, selection_mask(params, settings.predicate))
  if hutchinson is None and settings.probes > 0:
    hutchinson = hutchinson_estimate(loss_fn, params, batches, settings)
  if sigmas is None:
    if hutchinson is None:
      raise ValueError('give sigmas, or probes > 0 to choose them automatically')
    sigmas = auto_sigmas(hutchinson[0], n, target_increase=settings.target_increase)
  sigmas = np.asarray(sigmas, np.float64)
  realizations = settings.realizations
  base, losses = loss_sweep(
      loss_fn,
      params,
      batches,
      sigmas,
      realizations=realizations,
      predicate=settings.predicate,
      seed=settings.seed,
      chunk_size=settings.chunk_size,
      antithetic=settings.antithetic,
      vectorize=settings.vectorize,
  )
  fit = fit_trace(sigmas, losses - base, max_sigma=settings.fit_max_sigma, quartic=settings.quartic)
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
      antithetic=settings.antithetic,
      fit=fit,
      hutchinson=hutchinson,
  )
