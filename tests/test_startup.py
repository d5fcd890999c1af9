"""benchmarks/startup.py at its tiny size: every case runs cold and warm and lands in the table."""

import re

import pytest

from benchmarks import startup


@pytest.mark.slow
def test_tiny_startup_table(capsys):
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
