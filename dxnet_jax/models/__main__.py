"""Prints every named model of the paper with its task and parameter count.

  dxnet-models                        # a table
  dxnet-models --json                 # one JSON object per model, for machines
  python -m dxnet_jax.models --json   # the same without the console command

A name is what a config's `model.name` takes. The shipped trained weights are listed by
`python -m dxnet_jax.pretrained list`.
"""

import argparse
import json
import os
import sys

from dxnet_jax.models.registry import MODELS, parameter_count


def model_table():
  rows = []
  for name, spec in MODELS.items():
    rows.append(
        dict(
            name=name,
            task=spec.task,
            params=parameter_count(name),
            paper=spec.paper_params,
            description=spec.description,
        )
    )
  return rows


def main(argv=None):
  prog = os.path.basename(sys.argv[0])
  parser = argparse.ArgumentParser(
      prog='python -m dxnet_jax.models' if prog == '__main__.py' else prog,
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument('--json', action='store_true', help='print JSON lines instead of a table')
  args = parser.parse_args(argv)
  rows = model_table()
  if args.json:
    for row in rows:
      print(json.dumps(row))
    return
  print(f'{"model":<22} {"task":<17} {"parameters":>11} {"paper":>26}  description')
  for r in rows:
    print(
        f'{r["name"]:<22} {r["task"]:<17} {r["params"]:>11,} {r["paper"] or "-":>26}  '
        f'{r["description"]}'
    )


if __name__ == '__main__':
  main()
