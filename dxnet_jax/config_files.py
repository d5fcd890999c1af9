"""Config files import their shared pieces from their own folder (`from configs import common`).

`put_root_on_path` makes that work from any working directory: the folder that holds a config
file's `configs/` goes on sys.path. The trainer and the sweep call it before loading a config.
"""

import pathlib
import sys
from typing import Sequence


def put_root_on_path(config_string: str) -> None:
  """For `path/to/configs/x.py[:arg]`, puts `path/to` on sys.path (once)."""
  folder = pathlib.Path(config_string.split(':', 1)[0]).expanduser().resolve().parent
  while folder.name and folder.name != 'configs':
    folder = folder.parent
  if folder.name == 'configs' and str(folder.parent) not in sys.path:
    sys.path.insert(0, str(folder.parent))


def put_roots_on_path(argv: Sequence[str]) -> None:
  """`put_root_on_path` for the `--config` flag of a command line."""
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      put_root_on_path(arg.split('=', 1)[1])
    elif arg == '--config' and i + 1 < len(argv):
      put_root_on_path(argv[i + 1])
