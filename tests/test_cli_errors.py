"""Bad command lines end with one line on stderr and exit status 2, before anything compiles."""

import importlib
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAIN = ['-m', 'dxnet_jax.main', '--workdir', 'WORKDIR']
QUICKSTART = ['--config', 'configs/quickstart.py']

# (command line, environment, what the line says)
BAD = {
    'config argument': (TRAIN + ['--config', 'configs/denoise.py:foo'], {}, "model 'foo'"),
    'override': (TRAIN + QUICKSTART + ['--config.batch_size=-3'], {}, 'config.batch_size -3'),
    'config file': (TRAIN + ['--config', 'configs/nope.py'], {}, "'configs/nope.py'"),
    'data folder': (
        TRAIN + ['--config', 'configs/denoise.py:dxnet_444'],
        {'DXNET_DATA_DIR': 'no/such/folder'},
        'training folder not found',
    ),
    'flag': (TRAIN + QUICKSTART + ['--bogus'], {}, "flag 'bogus'"),
    'evaluate set': (
        ['-m', 'dxnet_jax.evaluate', '--baseline', 'noisy', '--sigma', '25', '--set', 'no/such'],
        {},
        'no/such',
    ),
}


def _run(argv, env, tmp_path, *extra):
  argv = [a.replace('WORKDIR', str(tmp_path / 'run')) for a in argv]
  env = dict(os.environ, PYTHONPATH=str(REPO), **env)
  return subprocess.run(
      [sys.executable, *argv, *extra],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )


@pytest.mark.parametrize('case', sorted(BAD))
def test_bad_input_is_one_line_and_status_2(case, tmp_path):
  argv, env, says = BAD[case]
  done = _run(argv, env, tmp_path)
  lines = done.stderr.strip().splitlines()
  assert done.returncode == 2, done.stderr[-3000:]
  assert len(lines) == 1, done.stderr[-3000:]  # no device log above it
  assert lines[-1].startswith(('dxnet-train: error: ', 'dxnet-evaluate: error: ')), lines[-1]
  assert says in lines[-1] and sum(': error: ' in line for line in lines) == 1
  assert 'Traceback' not in done.stderr
  assert not (tmp_path / 'run' / 'checkpoints').exists()


def test_verbose_shows_the_traceback(tmp_path):
  argv, env, says = BAD['override']
  done = _run(argv, env, tmp_path, '--verbose')
  assert done.returncode == 2
  assert 'Traceback (most recent call last)' in done.stderr
  assert says in done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    'module, name',
    [('evaluate', 'dxnet-evaluate'), ('denoise', 'dxnet-denoise'), ('upscale', 'dxnet-upscale')],
)
def test_help_names_the_command(module, name, capsys, monkeypatch):
  """The command's own name, not its module's, whatever sys.argv[0] is: here pytest's (as under
  `python -m dxnet_jax.MODULE`, where it is the module's path; in process, as nothing else about
  the help needs a fresh interpreter)."""
  main = importlib.import_module(f'dxnet_jax.{module}').main
  monkeypatch.setattr(sys, 'argv', [str(REPO / 'dxnet_jax' / f'{module}.py')])
  with pytest.raises(SystemExit) as exit_info:
    main(['--help'])
  assert exit_info.value.code in (0, None)
  assert capsys.readouterr().out.startswith(f'usage: {name} ')


def test_preflight_takes_the_quickstart_and_embedded_photos():
  from configs import quickstart  # pylint: disable=g-import-not-at-top
  from dxnet_jax import main  # pylint: disable=g-import-not-at-top

  main.preflight(quickstart.get_config())  # 'skimage:train' is no folder, and no error
