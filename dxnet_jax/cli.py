"""Command-line errors as one line and exit status 2, the traceback only on request.

A bad flag, config, override or data path is the user's to fix, and a Python traceback buries
the message: the commands print `<command>: error: <message>` on stderr and exit with status 2
(argparse's status for a usage error). `--verbose`, or `DXNET_VERBOSE=1`, prints the traceback
above that line.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from typing import Iterator, NoReturn, Sequence

ENV_VAR = 'DXNET_VERBOSE'
USAGE_ERROR = 2
VERBOSE_HELP = f'show the traceback of a command-line error (also {ENV_VAR}=1)'


def verbose(argv: Sequence[str] | None = None) -> bool:
  """Whether tracebacks are wanted: `--verbose` in `argv` (default sys.argv) or $DXNET_VERBOSE."""
  argv = sys.argv[1:] if argv is None else argv
  return '--verbose' in argv or os.environ.get(ENV_VAR, '') not in ('', '0')


def summary(error: BaseException) -> str:
  """The error's message on one line: its first line and, for a longer message (one holding a
  traceback, say), its last line, which names the cause."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  if not lines:
    return type(error).__name__
  if len(lines) == 1:
    return lines[0]
  return f'{lines[0].rstrip(":")}: {lines[-1]}'


def report(prog: str, error: BaseException, argv: Sequence[str] | None = None) -> int:
  """Prints `error` as one line (after its traceback when `verbose(argv)`); returns status 2."""
  if verbose(argv):
    traceback.print_exception(error)
  print(f'{prog}: error: {summary(error)}', file=sys.stderr)
  return USAGE_ERROR


@contextlib.contextmanager
def user_errors(
    prog: str, errors: tuple[type[BaseException], ...], argv: Sequence[str] | None = None
) -> Iterator[None]:
  """Exits through `report` on `errors` raised inside."""
  try:
    yield
  except errors as error:
    sys.exit(report(prog, error, argv))


def number_or_auto(value: str):
  """An argparse type: 'auto', or a number (a noise level to estimate or give)."""
  if value == 'auto':
    return value
  try:
    return float(value)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {value!r}") from None


class ArgumentParser(argparse.ArgumentParser):
  """argparse with a `--verbose` option and one-line usage errors (status 2, as argparse)."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.add_argument('--verbose', action='store_true', help=VERBOSE_HELP)

  def error(self, message: str) -> NoReturn:
    print(f'{self.prog}: error: {message} (--help lists the options)', file=sys.stderr)
    sys.exit(USAGE_ERROR)
