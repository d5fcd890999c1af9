"""benchmarks/startup.py at its tiny size: every case runs cold and warm and lands in the table."""

import json
import re

import pytest

from benchmarks import startup
from dxnet_jax import models, pretrained

TINY = dict(blocks=(1, 1), growth_rate=4, stem_features=8)


def tiny_copy(name, root, random_variables):
  """A shipped model's folder copied under `root` with its net shrunk to the quick start's tiny
  one (its config with the net's size overridden; random weights); the copy's name. Commands run
  on it as on the shipped model, compiling 2 dense layers rather than 12."""
  info = pretrained.manifest(name)
  info['config']['model'].update(TINY)
  model = models.create(info['config']['model'])
  shape = (1, *info['config']['input_shape'])
  variables = random_variables(models.init_variables(model, shape, abstract=True))
  folder = root / f'{name}_tiny'
  folder.mkdir()
  (folder / pretrained.MANIFEST).write_text(json.dumps(info))
  (folder / pretrained.WEIGHTS).write_bytes(pretrained.to_bytes(variables, 'float32'))
  return folder.name


@pytest.fixture
def tiny_model(tmp_path, monkeypatch, random_variables):
  """The benchmark's model (startup.MODEL) as a tiny copy, for this process and the commands it
  starts (they inherit the environment)."""
  monkeypatch.setattr(startup, 'MODEL', tiny_copy(startup.MODEL, tmp_path, random_variables))
  monkeypatch.setenv(pretrained.ENV_VAR, str(tmp_path))


@pytest.mark.slow
def test_tiny_startup_table(capsys, tiny_model):
  assert startup.main(['--size', 'tiny']) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[:2] == ['| case | cold s | warm s | warm / cold |', '|---|---:|---:|---:|']
  rows = [
      re.fullmatch(r'\| (\w+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|', line) for line in lines[2:]
  ]
  assert all(rows), lines
  assert [row[1] for row in rows] == list(startup.CASES)
  for row in rows:
    cold, warm, ratio = map(float, row.groups()[1:])
    assert cold > 0 and warm > 0
    # The ratio is of the unrounded times; the table rounds each time to 0.05 s either way.
    assert (warm - 0.05) / (cold + 0.05) - 0.005 <= ratio <= (warm + 0.05) / (cold - 0.05) + 0.005


def test_unknown_case_is_a_usage_error():
  with pytest.raises(SystemExit):
    startup.main(['--cases', 'quickstart,nope'])
