"""Executes the project's notebooks headless (used by the tests and to refresh docs/images).

    python -m dxnet_jax.analysis.notebook notebooks/dxnet_tour.ipynb --figures docs/images

runs every cell with nbclient in a fresh kernel whose working directory is the notebook's folder.
`--figures DIR` sets the environment variable DXNET_TOUR_OUT, under which the tour notebook saves
its figures as PNGs; `--save` writes the executed notebook (with outputs) next to nothing else.
Needs the `test` extra (nbclient, nbformat, ipykernel).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Mapping, Sequence

from dxnet_jax import _optional


def execute(
    path: str,
    *,
    env: Mapping[str, str] | None = None,
    timeout: int = 600,
    kernel_name: str = 'python3',
):
  """Runs a notebook and returns the executed `nbformat` notebook; raises on a failing cell.

  `env` entries are set in this process's environment for the run (the kernel inherits them)
  and restored afterwards.
  """
  nbformat = _optional.require('nbformat', 'test', 'running a notebook')
  nbclient = _optional.require('nbclient', 'test', 'running a notebook')
  nb = nbformat.read(path, as_version=4)
  saved = {k: os.environ.get(k) for k in (env or {})}
  os.environ.update(env or {})
  try:
    client = nbclient.NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=kernel_name,
        resources={'metadata': {'path': os.path.dirname(os.path.abspath(path))}},
    )
    client.execute()
  finally:
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
  return nb


def main(argv: Sequence[str] | None = None):
  parser = argparse.ArgumentParser(
      prog='python -m dxnet_jax.analysis.notebook', description=__doc__.split('\n\n')[0]
  )
  parser.add_argument('notebook')
  parser.add_argument(
      '--figures', default=None, help="folder for the notebook's PNG figures (DXNET_TOUR_OUT)"
  )
  parser.add_argument('--save', default=None, help='write the executed notebook here')
  parser.add_argument('--timeout', type=int, default=600, help='seconds per cell')
  args = parser.parse_args(argv)
  env = {}
  if args.figures:
    os.makedirs(args.figures, exist_ok=True)
    env['DXNET_TOUR_OUT'] = os.path.abspath(args.figures)
  start = time.time()
  nb = execute(args.notebook, env=env, timeout=args.timeout)
  print(f'executed {args.notebook} in {time.time() - start:.0f} s')
  if args.save:
    _optional.require('nbformat', 'test', '--save').write(nb, args.save)
  return nb


if __name__ == '__main__':
  main()
