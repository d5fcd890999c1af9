"""Prints every named model of the paper with its parameter count.

python -m dxnet_jax.models          # a table
python -m dxnet_jax.models --json   # one JSON object per model, for machines
"""

import argparse
import json

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
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
