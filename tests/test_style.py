"""The repository has one code style: pyink's, configured in pyproject.toml."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow  # pyink (pure Python) formats every file: ~13 s of CPU for 27,000 lines
def test_the_code_is_pyink_formatted():
  result = subprocess.run(
      [sys.executable, '-m', 'pyink', '--check', '--diff', '.'],
      cwd=ROOT,
      capture_output=True,
      text=True,
      check=False,
  )
  assert result.returncode == 0, (
      'Some files are not formatted; run `pyink .` at the repository root:\n'
      + result.stdout[-4000:]
  )
