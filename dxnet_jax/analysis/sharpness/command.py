"""`python -m dxnet_jax.analysis.sharpness`: the sharpness of trained checkpoints.

    python -m dxnet_jax.analysis.sharpness --workdir A [--workdir B ...] --out DIR

Each workdir's best checkpoint is measured on its validation batches with its task's training
loss (`dxnet_jax.train.tasks`), in eval mode; one sweep of sigmas serves every model, so the
curves compare at equal sigma.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

import jax.numpy as jnp

from dxnet_jax import _optional
from dxnet_jax import data as data_lib
from dxnet_jax.analysis.sharpness import estimators
from dxnet_jax.analysis.sharpness import plots
from dxnet_jax.train import checkpoint
from dxnet_jax.train import tasks


def task_loss_fn(model, variables: Mapping[str, Any], task: tasks.Task) -> estimators.LossFn:
  """The task's training loss of `params` in eval mode, a masked per-example mean.

  Non-`params` collections (BatchNorm statistics) are closed over and stay fixed.
  """
  rest = {k: v for k, v in variables.items() if k != 'params'}

  def loss_fn(params, batch):
    out = model.apply({'params': params, **rest}, jnp.asarray(batch['inputs']), train=False)
    per = task.per_example_loss(out, jnp.asarray(batch['targets']))
    mask = jnp.asarray(batch['mask'], per.dtype) if 'mask' in batch else jnp.ones_like(per)
    return jnp.sum(per * mask) / jnp.maximum(jnp.sum(mask), 1.0)

  return loss_fn


def _parse_floats(text: str | None) -> list[float] | None:
  return None if not text else [float(x) for x in text.split(',') if x.strip()]


def main(argv: Sequence[str] | None = None) -> list[estimators.SharpnessResult]:
  """Measures the workdirs named by `argv`, writes sharpness.json and .png; returns the results."""
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
      choices=estimators.VECTORIZE,
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
  settings = estimators.Settings(
      realizations=args.realizations,
      probes=args.probes,
      seed=args.seed,
      chunk_size=args.chunk_size,
      antithetic=not args.no_antithetic,
      fit_max_sigma=args.fit_max_sigma,
      quartic=args.quartic,
      target_increase=args.target_increase,
      vectorize=args.vectorize,
  )

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
    loss_fn = task_loss_fn(model, variables, tasks.get(config.task))
    hutch = None
    if args.probes > 0:
      hutch = estimators.hutchinson_estimate(loss_fn, variables['params'], batches, settings)
    runs.append((name, loss_fn, variables['params'], batches, hutch))

  sigmas = _parse_floats(args.sigmas)
  if sigmas is None:
    # One sweep for every model, so the curves compare at equal sigma: sized for the sharpest.
    traces = [r[4][0] for r in runs if r[4] is not None]
    if not traces:
      parser.error('give --sigmas, or --probes > 0 to choose them automatically')
    n_min = min(estimators.count_selected(r[2], estimators.selection_mask(r[2])) for r in runs)
    sigmas = estimators.auto_sigmas(max(traces), n_min, target_increase=args.target_increase)

  results = []
  for name, loss_fn, params, batches, hutch in runs:
    res = estimators.measure_sharpness(
        loss_fn,
        params,
        batches,
        dataclasses.replace(settings, probes=0),
        name=name,
        sigmas=sigmas,
        hutchinson=hutch,
    )
    print(
        json.dumps({k: v for k, v in res.to_dict().items() if not isinstance(v, list)}), flush=True
    )
    results.append(res)

  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, 'sharpness.json'), 'w') as f:
    json.dump([r.to_dict() for r in results], f, indent=1)
  png = plots.plot_sharpness(results, os.path.join(args.out, 'sharpness.png'))
  print(f'wrote {png}')
  return results
