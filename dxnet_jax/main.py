"""Trains one experiment from a config file; rerunning the same command resumes it.

  dxnet-train --config configs/quickstart.py --workdir runs/quickstart
  dxnet-train --config configs/denoise.py:dxnet_444 --workdir runs/dn --config.batch_size=32
  dxnet-train --config configs/denoise.py:dxnet_444,gpu --workdir runs/gpu_dn
  python -m dxnet_jax.main --config configs/sr.py:dxnet16 --workdir runs/sr --cpu_devices=2

A config file is Python with `get_config()` (the repository's configs/ folder holds the paper's
experiments; `file.py:ARG` passes ARG to it). Any config field can be overridden on the command
line (`--config.FIELD=VALUE`). The workdir receives checkpoints, metrics.jsonl, results.json and,
with the `tensorboard` extra, TensorBoard events; rerunning resumes from its latest checkpoint.
A bad flag, config, override or data folder is one line and exit status 2 (`--verbose` shows the
traceback).
"""

import logging as std_logging
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from dxnet_jax import cli
from dxnet_jax import config_files
from dxnet_jax import distributed
from dxnet_jax import kernels

# 128 + SIGTERM, as a shell reports a process ended by SIGTERM: schedulers restart such jobs.
PREEMPTED_EXIT_CODE = 143

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and results.')
config_flags.DEFINE_config_file(
    'config',
    None,
    'Experiment config file, e.g. configs/quickstart.py (FILE.py:ARG passes ARG to get_config).',
    lock_config=True,
)
flags.DEFINE_integer(
    'cpu_devices',
    None,
    'Split the host CPU into this many JAX devices and train data-parallel '
    'over them (CPU backend only): XLA:CPU leaves cores idle while it runs a sequential net op '
    'by op, and two devices keep two cores busier (measured in docs/performance.md).',
    lower_bound=1,
)
flags.DEFINE_bool('verbose', False, cli.VERBOSE_HELP)
flags.mark_flags_as_required(['config', 'workdir'])
PROG = 'dxnet-train'
# What parsing a bad command line raises: a flag, the config file, its argument or an override.
USER_ERRORS = (flags.Error, OSError, app.UsageError)


def _quiet_libraries(record) -> bool:
  """Keeps orbax's per-save INFO chatter out of the run's log (its warnings still show)."""
  return record.levelno >= std_logging.WARNING or '/orbax/' not in record.pathname


def parse_flags(argv):
  """absl's flag parsing with the config file loaded here, its errors one line (`cli`)."""
  with cli.user_errors(PROG, USER_ERRORS, argv):
    rest = FLAGS(argv)
    if len(rest) > 1:
      raise app.UsageError(f'unexpected arguments {rest[1:]}')
    try:
      FLAGS.config.keys()  # a file that failed to load stands in for the config until used
    except OSError as e:  # its cause's last line names the file and the problem
      cause = str(e.__cause__ or e).strip().splitlines()[-1].strip()
      raise OSError(f'--config: {cause}') from e
  return rest


class PreflightError(ValueError):
  """A config value or data folder found wrong before JAX starts."""


def preflight(config) -> None:
  """Raises PreflightError for the mistakes that need no JAX: found before the backend starts,
  the error is the only line on stderr (the full checks, `train.checks`, follow the device log).
  """
  from dxnet_jax.data import embedded  # pylint: disable=g-import-not-at-top
  from dxnet_jax.data import paths  # pylint: disable=g-import-not-at-top

  if not config.batch_size > 0:
    raise PreflightError(
        f'config.batch_size {config.batch_size} must be a positive multiple of the devices of '
        'this run (global batch, split evenly).'
    )
  data = config.get('data') or {}
  if data.get('source') != 'folder':
    return
  folders = [(d, 'training folder') for d in data.get('train_dirs') or ()]
  if data.get('root'):
    folders.append((data.root, 'classification folder'))
  for folder, what in folders:
    if embedded.is_embedded(folder):  # scikit-image's photos, no folder
      continue
    try:
      paths.require_dir(folder, what)
    except (FileNotFoundError, ValueError) as e:
      raise PreflightError(str(e)) from None


def main(argv):
  del argv  # parse_flags took every argument
  logging.get_absl_handler().addFilter(_quiet_libraries)
  with cli.user_errors(PROG, (PreflightError,)):
    preflight(FLAGS.config)
  kernels.prepare_process(FLAGS.config.model.get('kernels', 'auto'))  # before JAX starts
  import jax  # pylint: disable=g-import-not-at-top

  if FLAGS.cpu_devices:
    # A setting of the CPU client: it must be made before anything starts the backend.
    jax.config.update('jax_num_cpu_devices', FLAGS.cpu_devices)
  distributed.initialize()
  # Imported after initialisation: nothing may touch the JAX backend before it.
  from dxnet_jax.train import checks  # pylint: disable=g-import-not-at-top
  from dxnet_jax.train import loop  # pylint: disable=g-import-not-at-top

  logging.info(
      'JAX %s: process %d of %d, %d local / %d global devices (%s).',
      jax.__version__,
      jax.process_index(),
      jax.process_count(),
      jax.local_device_count(),
      jax.device_count(),
      jax.default_backend(),
  )
  if FLAGS.cpu_devices and jax.default_backend() != 'cpu':
    logging.warning(
        '--cpu_devices=%d has no effect: JAX runs on %s, not the CPU.',
        FLAGS.cpu_devices,
        jax.default_backend(),
    )
  try:
    with cli.user_errors(PROG, (checks.ConfigError, FileNotFoundError)):
      loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except loop.Preempted as e:
    logging.warning('%s', e)
    sys.exit(PREEMPTED_EXIT_CODE)


def run():
  """The `dxnet-train` console command: `app.run(main)` with this module's usage and flags.

  For --help absl prints `__main__`'s docstring and the flags of the module named by
  sys.argv[0]; under a console command both are pip's launcher script, so this module's
  docstring and flags stand in for them.
  """
  sys.modules['__main__'].__doc__ = __doc__
  for flag in FLAGS.get_key_flags_for_module(__name__):
    FLAGS.register_key_flag_for_module(sys.argv[0], flag)
  config_files.put_roots_on_path(sys.argv)
  app.run(main, flags_parser=parse_flags)


if __name__ == '__main__':
  config_files.put_roots_on_path(sys.argv)
  app.run(main, flags_parser=parse_flags)
