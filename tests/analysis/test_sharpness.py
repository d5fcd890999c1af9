"""Sharpness estimators on a quadratic loss whose Hessian trace is known in closed form.

L(theta) = 0.5 theta^T A theta + b^T theta, theta the concatenation of all leaves. The Hessian is A,
so the trace of the block of the perturbed leaves is the sum of A's diagonal over their indices.
The data set is two batches with different A_b, b_b and numbers of valid rows; the data-set
Hessian is the row-weighted mean of the A_b, which also checks the batch weighting.
"""

import json
import os

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from dxnet_jax.analysis import sharpness
from dxnet_jax.train import tasks

SHAPES = {
    'conv1': {'kernel': (3, 3, 1, 2), 'bias': (2,)},
    'conv2': {'kernel': (1, 1, 2, 4)},
    'head': {'kernel': (4, 3), 'bias': (3,)},
}


def _params(rng):
  return jax.tree.map(
      lambda s: jnp.asarray(rng.normal(size=s), jnp.float32),
      SHAPES,
      is_leaf=lambda x: isinstance(x, tuple),
  )


def _spd(rng, n):
  q, _ = np.linalg.qr(rng.normal(size=(n, n)))
  return (q * rng.uniform(0.5, 3.0, size=n)) @ q.T


def _quadratic_problem(seed=0):
  rng = np.random.default_rng(seed)
  params = _params(rng)
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  n = flat.size
  batches = []
  for rows in (3, 5):
    batches.append(
        {
            'A': np.asarray(_spd(rng, n), np.float32),
            'b': np.asarray(rng.normal(size=n), np.float32),
            'mask': (np.arange(6) < rows).astype(np.float32),  # padding rows, equal shapes
        }
    )

  def loss_fn(p, batch):
    theta = jax.flatten_util.ravel_pytree(p)[0]
    return 0.5 * theta @ (batch['A'] @ theta) + batch['b'] @ theta

  weights = np.array([3.0, 5.0])
  a_mean = (weights[0] * batches[0]['A'] + weights[1] * batches[1]['A']) / weights.sum()
  # Indices of the selected leaves (the two 4-D kernels) in the raveled vector.
  index_tree = unravel(jnp.arange(n, dtype=jnp.float32))
  sel = jax.tree_util.tree_map_with_path(lambda p, x: sharpness.conv_kernels(p, x), params)
  idx = np.concatenate(
      [
          np.asarray(x, np.int64).ravel()
          for x, m in zip(jax.tree.leaves(index_tree), jax.tree.leaves(sel))
          if m
      ]
  )
  return params, batches, loss_fn, a_mean, idx


def test_predicate_selects_conv_kernels_only():
  params = _params(np.random.default_rng(0))
  assert sharpness.selected_paths(params) == ['conv1/kernel', 'conv2/kernel']
  mask = sharpness.selection_mask(params)
  assert sharpness.count_selected(params, mask) == 3 * 3 * 1 * 2 + 2 * 4


def test_only_selected_leaves_are_perturbed():
  params = _params(np.random.default_rng(1))
  mask = sharpness.selection_mask(params)
  out = sharpness.perturb(params, jax.random.PRNGKey(3), 0.1, mask)
  for (path, before), after, m in zip(
      jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(out), jax.tree.leaves(mask)
  ):
    if m:
      diff = np.asarray(after - before)
      assert np.all(diff != 0), sharpness.path_str(path)
      assert 0.02 < diff.std() < 0.3
    else:
      np.testing.assert_array_equal(np.asarray(after), np.asarray(before))

  # Through the whole sweep: a loss of the unselected leaves only never changes.
  def head_loss(p, batch):
    bias = jnp.sum(p['conv1']['bias'] ** 2) * jnp.mean(batch['s'])
    return jnp.sum(p['head']['kernel'] ** 2) + bias

  base, losses = sharpness.loss_sweep(
      head_loss, params, [{'s': np.ones(2)}], [0.1, 1.0], realizations=4, chunk_size=3
  )
  np.testing.assert_allclose(losses, base, rtol=1e-6)


@pytest.mark.slow  # two loss sweeps of 400 draws, compiled each
def test_slope_estimate_matches_closed_form_trace():
  params, batches, loss_fn, a_mean, idx = _quadratic_problem()
  true_trace = float(np.trace(a_mean[np.ix_(idx, idx)]))
  sigmas = [0.05, 0.1, 0.2, 0.3]
  fits = {}
  for antithetic in (True, False):
    base, losses = sharpness.loss_sweep(
        loss_fn,
        params,
        batches,
        sigmas,
        realizations=400,
        chunk_size=200,
        antithetic=antithetic,
        seed=7,
    )
    assert base == pytest.approx(sharpness.dataset_loss(loss_fn, params, batches), rel=1e-5)
    fits[antithetic] = fit = sharpness.fit_trace(sigmas, losses - base)
    assert abs(fit.trace - true_trace) < 4 * fit.stderr, (antithetic, fit, true_trace)
  # Antithetic pairs leave the mean of 400 draws of z^T A z (a standard error of ~3%); demand
  # 5% (a wrong factor of 2 or a wrong batch weighting fails).
  assert fits[True].trace == pytest.approx(true_trace, rel=0.05)
  assert fits[True].stderr < 0.03 * true_trace
  # Plain draws carry the zero-mean gradient term sigma * g^T z, far noisier at these sigmas.
  assert fits[False].trace == pytest.approx(true_trace, rel=0.15)
  assert fits[False].stderr > 2 * fits[True].stderr


def test_hutchinson_matches_closed_form_trace():
  params, batches, loss_fn, a_mean, idx = _quadratic_problem(seed=1)
  true_trace = float(np.trace(a_mean[np.ix_(idx, idx)]))
  tr, se, samples = sharpness.hutchinson_trace(
      loss_fn, params, batches, probes=300, chunk_size=100, seed=2
  )
  assert samples.shape == (300,)
  assert abs(tr - true_trace) < 4 * se, (tr, se, true_trace)
  assert tr == pytest.approx(true_trace, rel=0.10)
  # Full Hessian when every leaf is selected.
  tr_all, se_all, _ = sharpness.hutchinson_trace(
      loss_fn, params, batches, probes=300, chunk_size=100, predicate=sharpness.all_float_leaves
  )
  assert abs(tr_all - np.trace(a_mean)) < 4 * se_all


def test_quartic_fit_recovers_trace_beyond_quadratic_regime():
  # L = 0.5 theta^T A theta + c * sum(theta^4): E[delta] = sigma^2/2 Tr(A) + O(sigma^4) with
  # sizeable sigma^4 terms at these sigmas; the pure quadratic fit is biased, the quartic not.
  params, batches, quad_loss, a_mean, idx = _quadratic_problem(seed=2)

  def loss_fn(p, batch):
    theta = jax.flatten_util.ravel_pytree(p)[0]
    return quad_loss(p, batch) + 2.0 * jnp.sum(theta**4)

  theta = np.asarray(jax.flatten_util.ravel_pytree(params)[0], np.float64)
  # Hessian of c*sum(theta^4) is diag(12 c theta^2).
  true_trace = float(np.trace(a_mean[np.ix_(idx, idx)]) + np.sum(24.0 * theta[idx] ** 2))
  sigmas = np.linspace(0.05, 0.5, 8)
  base, losses = sharpness.loss_sweep(
      loss_fn, params, batches, sigmas, realizations=200, chunk_size=200, seed=3
  )
  quad = sharpness.fit_trace(sigmas, losses - base)
  quart = sharpness.fit_trace(sigmas, losses - base, quartic=True)
  assert abs(quart.trace - true_trace) < 4 * quart.stderr + 0.02 * true_trace
  assert abs(quad.trace - true_trace) > abs(quart.trace - true_trace)


@pytest.mark.slow  # two measurements and a plot
def test_measure_sharpness_auto_sweep_and_plot(tmp_path):
  params, batches, loss_fn, a_mean, idx = _quadratic_problem(seed=3)
  true_trace = float(np.trace(a_mean[np.ix_(idx, idx)]))
  settings = sharpness.Settings(realizations=64, probes=64, chunk_size=64)
  res = sharpness.measure_sharpness(loss_fn, params, batches, settings, name='quadratic')
  # The automatic sweep reaches a predicted loss increase of 0.05 (the default target).
  assert 0.5 * res.sigmas.max() ** 2 * res.hutchinson[0] == pytest.approx(0.05, rel=1e-6)
  assert res.num_perturbed == idx.size
  assert res.mean_eigenvalue_fit == pytest.approx(true_trace / idx.size, rel=0.15)
  assert res.mean_eigenvalue_hutchinson == pytest.approx(true_trace / idx.size, rel=0.15)
  json.dumps(res.to_dict())
  other = sharpness.measure_sharpness(
      lambda p, b: 0.5 * loss_fn(p, b),
      params,
      batches,
      sharpness.Settings(realizations=16, probes=16, chunk_size=16),
      name='flatter',
      sigmas=res.sigmas,
  )
  assert other.fit.trace == pytest.approx(0.5 * res.fit.trace, rel=0.2)
  path = sharpness.plot_sharpness([res, other], str(tmp_path / 's.png'))
  assert os.path.getsize(path) > 10_000


def test_bad_inputs_fail_clearly():
  params, batches, loss_fn, _, _ = _quadratic_problem()
  with pytest.raises(ValueError, match='selects no parameters'):
    sharpness.loss_sweep(loss_fn, params, batches, [0.1], predicate=lambda p, x: False)
  with pytest.raises(ValueError, match='no batches'):
    sharpness.hutchinson_trace(loss_fn, params, [])
  with pytest.raises(ValueError, match='give sigmas'):
    sharpness.measure_sharpness(loss_fn, params, batches, sharpness.Settings(probes=0))


@pytest.mark.slow  # four programs compiled: vmap and loop
def test_vmap_and_loop_evaluate_the_same_networks():
  params, batches, loss_fn, _, _ = _quadratic_problem(seed=4)
  out = {}
  for vec in ('vmap', 'loop'):
    base, losses = sharpness.loss_sweep(
        loss_fn, params, batches, [0.1, 0.2], realizations=5, chunk_size=4, vectorize=vec
    )
    tr, _, samples = sharpness.hutchinson_trace(
        loss_fn, params, batches, probes=6, chunk_size=4, vectorize=vec
    )
    out[vec] = (losses, samples)
  np.testing.assert_allclose(out['vmap'][0], out['loop'][0], rtol=1e-5)
  np.testing.assert_allclose(out['vmap'][1], out['loop'][1], rtol=1e-4)
  with pytest.raises(ValueError, match='vectorize'):
    sharpness.loss_sweep(loss_fn, params, batches, [0.1], vectorize='pmap')


def test_the_command_measures_with_the_training_loss_of_the_task():
  """The command's loss is the task's training loss (train/tasks.py), masked over the batch."""

  class Net(nn.Module):

    @nn.compact
    def __call__(self, x, train: bool = False):
      return nn.Dense(3)(x)

  model = Net()
  x = np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32)
  variables = model.init(jax.random.key(0), x)
  labels = np.array([0, 2, 1, 1], np.int32)
  mask = np.array([1, 1, 1, 0], np.float32)
  batch = {'inputs': x, 'targets': labels, 'mask': mask}
  task = tasks.get('classification')
  loss = sharpness.task_loss_fn(model, variables, task)(variables['params'], batch)
  per = task.per_example_loss(model.apply(variables, x), labels)
  np.testing.assert_allclose(loss, np.sum(per * mask) / 3, rtol=1e-6)
