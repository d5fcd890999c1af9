"""The package as a user gets it: the wheel, installed with its core dependencies only into a fresh
virtual environment, run from outside the checkout.

The core dependencies are pinned to the versions of this interpreter's environment (what the
suite is tested with), so pip takes them from its cache when CI's own install filled it. pip
must reach them (cache, index or local wheels) as it did for the suite's own install: a pip
failure, network errors included, fails the test rather than skipping it.
"""

import importlib.metadata
import json
import os
import pathlib
import pkgutil
import re
import shutil
import subprocess
import sys
import venv

import numpy as np
import pytest
from PIL import Image

import dxnet_jax
from dxnet_jax import metrics
from dxnet_jax import pretrained
from dxnet_jax.data import paths

REPO = pathlib.Path(__file__).resolve().parents[1]
MODEL = 'denoise_dxnet_444_s50_h200'
# What the wheel needs to build: the package and the project files setuptools reads.
PROJECT_FILES = ('pyproject.toml', 'setup.cfg', 'README.md')
# Every public module; the core install must import each of them.
CORE_MODULES = (
    'dxnet_jax',
    'dxnet_jax.analysis',
    'dxnet_jax.analysis.budget_plots',
    'dxnet_jax.analysis.cam',
    'dxnet_jax.analysis.figures',
    'dxnet_jax.analysis.notebook',
    'dxnet_jax.analysis.paper_points',
    'dxnet_jax.analysis.sharpness',
    'dxnet_jax.analysis.sharpness.command',
    'dxnet_jax.analysis.sharpness.estimators',
    'dxnet_jax.analysis.sharpness.plots',
    'dxnet_jax.analysis.stats',
    'dxnet_jax.analysis.study_plots',
    'dxnet_jax.cli',
    'dxnet_jax.compilation_cache',
    'dxnet_jax.config_files',
    'dxnet_jax.convert',
    'dxnet_jax.data',
    'dxnet_jax.data.augment',
    'dxnet_jax.data.classification',
    'dxnet_jax.data.config',
    'dxnet_jax.data.degrade',
    'dxnet_jax.data.embedded',
    'dxnet_jax.data.eval_sets',
    'dxnet_jax.data.imagenet',
    'dxnet_jax.data.images',
    'dxnet_jax.data.paths',
    'dxnet_jax.data.pipeline',
    'dxnet_jax.data.restoration',
    'dxnet_jax.data.sources',
    'dxnet_jax.denoise',
    'dxnet_jax.depthwise_fft',
    'dxnet_jax.distributed',
    'dxnet_jax.evaluate',
    'dxnet_jax.image_files',
    'dxnet_jax.inference',
    'dxnet_jax.kernels',
    'dxnet_jax.layers',
    'dxnet_jax.main',
    'dxnet_jax.metrics',
    'dxnet_jax.models',
    'dxnet_jax.models.densenet',
    'dxnet_jax.models.registry',
    'dxnet_jax.models.restoration',
    'dxnet_jax.noise_level',
    'dxnet_jax.pretrained',
    'dxnet_jax.sharding',
    'dxnet_jax.sweep',
    'dxnet_jax.sweep.cli',
    'dxnet_jax.sweep.ray_tune',
    'dxnet_jax.sweep.steps',
    'dxnet_jax.sweep.study',
    'dxnet_jax.sweep.table',
    'dxnet_jax.train',
    'dxnet_jax.train.checkpoint',
    'dxnet_jax.train.checks',
    'dxnet_jax.train.defaults',
    'dxnet_jax.train.loop',
    'dxnet_jax.train.optim',
    'dxnet_jax.train.state',
    'dxnet_jax.train.steps',
    'dxnet_jax.train.tasks',
    'dxnet_jax.train.writer',
    'dxnet_jax.upscale',
    'dxnet_jax.xla_cpu',
    'dxnet_jax.xla_cpu.batchnorm',
    'dxnet_jax.xla_cpu.conv',
    'dxnet_jax.xla_cpu.dense_block',
    'dxnet_jax.xla_cpu.fusion',
    'dxnet_jax.xla_cpu.host_memory',
    'dxnet_jax.xla_cpu.matmul_conv',
    'dxnet_jax.xla_cpu.native_build',
    'dxnet_jax.xla_cpu.native_conv',
    'dxnet_jax.xla_cpu.remat',
)
# Two steps of a tiny gray denoiser on the images next to the config file.
TINY_CONFIG = """\
import os

from dxnet_jax.train import defaults


def get_config():
  here = os.path.dirname(os.path.abspath(__file__))
  config = defaults.base_config(
      'denoising', 'dxnet_denoise_444', (16, 16, 1), train_dirs=(os.path.join(here, 'images'),),
      validation_set=None, holdout=1, patch_size=16, patches_per_epoch=8, validation_crop=16,
      eval_sets=(), sigma=25.0, prefetch=0)
  config.model.update(blocks=(1, 1), growth_rate=4, stem_features=8)
  config.update(batch_size=4, num_steps=2, log_every_steps=1, final_eval=False)
  return config
"""
# Packages that only extras install.
OPTIONAL = ('tensorflow', 'tensorflow_datasets', 'tensorboard', 'matplotlib', 'skimage', 'ray')


def _public_modules():
  return sorted(
      {'dxnet_jax'}
      | {
          info.name
          for info in pkgutil.walk_packages(dxnet_jax.__path__, 'dxnet_jax.')
          if not any(part.startswith('_') for part in info.name.split('.'))
      }
  )


def test_core_module_list_names_every_public_module():
  assert sorted(CORE_MODULES) == _public_modules()


def _user_env(venv_dir: pathlib.Path) -> dict:
  """This process's environment as a user's shell would have it with the venv active: no
  PYTHONPATH into the checkout, the venv's bin first on PATH."""
  env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME')}
  env['VIRTUAL_ENV'] = str(venv_dir)
  env['PATH'] = f'{venv_dir / "bin"}{os.pathsep}{env.get("PATH", "")}'
  return env


def _run(args, env, cwd, timeout=600):
  return subprocess.run(
      [str(a) for a in args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
  )


def _build_wheel(tmp_path: pathlib.Path) -> pathlib.Path:
  """Builds from a copy of the project files, so the checkout gets no build/ or egg-info."""
  source = tmp_path / 'source'
  shutil.copytree(
      REPO / 'dxnet_jax', source / 'dxnet_jax', ignore=shutil.ignore_patterns('__pycache__')
  )
  for name in PROJECT_FILES:
    shutil.copy(REPO / name, source / name)
  build = [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '-w', tmp_path / 'dist', source]
  if _has('setuptools') and _has('wheel'):
    build.append('--no-build-isolation')  # the installed backend: no index needed to build
  done = _run(build, dict(os.environ), tmp_path)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  (wheel,) = (tmp_path / 'dist').glob('dxnet_jax-*.whl')
  return wheel


def _has(module: str) -> bool:
  try:
    importlib.metadata.version(module)
    return True
  except importlib.metadata.PackageNotFoundError:
    return False


def _constraints(tmp_path: pathlib.Path) -> pathlib.Path:
  """name==version of every distribution here (but this project): the tested versions."""
  pins = sorted(
      {
          f'{d.metadata["Name"]}=={d.version}'
          for d in importlib.metadata.distributions()
          if d.metadata['Name'] and d.metadata['Name'].lower().replace('-', '_') != 'dxnet_jax'
      }
  )
  path = tmp_path / 'constraints.txt'
  path.write_text('\n'.join(pins) + '\n')
  return path


def _pip_has_python_option() -> bool:
  """Whether this interpreter's pip installs into another environment (`pip --python`, 22.3+)."""
  major, minor = (int(part) for part in importlib.metadata.version('pip').split('.')[:2])
  return (major, minor) >= (22, 3)


def _install(tmp_path: pathlib.Path):
  """(venv python, user environment, working folder outside the checkout).

  This interpreter's pip installs into the venv (`pip --python`) where it can, rather than one
  that ensurepip installs there first: what lands in the venv is the same, seconds sooner."""
  wheel = _build_wheel(tmp_path)
  venv_dir = tmp_path / 'venv'
  outer_pip = _pip_has_python_option()
  venv.EnvBuilder(with_pip=not outer_pip).create(venv_dir)
  python = venv_dir / 'bin' / 'python'
  env = _user_env(venv_dir)
  work = tmp_path / 'work'
  work.mkdir()
  pip = [sys.executable, '-m', 'pip', '--python', python] if outer_pip else [python, '-m', 'pip']
  install = [*pip, 'install', '--disable-pip-version-check', '--no-input']
  install += ['-c', _constraints(tmp_path), wheel]
  done = _run(install, env, work, timeout=1800)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  return python, env, work


def _check_console_commands(installed, runs):
  """`dxnet-train --help` runs as the user types it (its help depends on how absl sees a
  launcher script's process); the other commands' launcher scripts ran in the modules' process
  (`runs`, from _check_in_one_process). dxnet-denoise, dxnet-evaluate and dxnet-train run as
  commands of their own in the checks after this one."""
  _, env, work = installed
  status, out = runs['dxnet-models']
  assert status == 0, out[-3000:]
  assert re.search(r'^dxnet_denoise_444\s+denoising\s', out, re.M), out
  done = _run(['dxnet-train', '--help'], env, work)
  runs = {**runs, 'dxnet-train --help': (0, done.stdout)}
  for command in ('dxnet-train', 'dxnet-evaluate', 'dxnet-models'):
    out = runs[f'{command} --help'][1]
    assert f'{command} --' in out, (command, out[-2000:])
  for command in ('dxnet-denoise', 'dxnet-upscale'):
    status, out = runs[f'{command} --help']
    assert status == 0 and 'usage' in out.lower(), (command, status, out[-2000:])


def _check_denoise_cleans_a_real_noisy_photo(installed):
  _, env, work = installed
  photos = work / 'photos'
  photos.mkdir()
  for name in ('01.png', '02.png'):
    shutil.copy(paths.data_root() / 'Set12' / name, photos / name)
  out = work / 'denoised'
  done = _run(
      ['dxnet-denoise', '--model', MODEL, '--add-noise', '50', '--seed', '0', photos, '--out', out],
      env,
      work,
  )
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  denoised = dict(re.findall(r'(\d\d)\.png -> .*denoised ([\d.]+) dB', done.stdout + done.stderr))
  assert sorted(denoised) == ['01', '02'], done.stdout + done.stderr
  clean = np.asarray(Image.open(photos / '01.png').convert('L'))
  result = np.asarray(Image.open(next(out.glob('01*denoised*.png'))))
  assert result.shape == clean.shape and result.dtype == np.uint8
  # The same images, noise and model scored by dxnet-evaluate.
  done = _run(
      ['dxnet-evaluate', '--pretrained', MODEL, '--set', photos, '--sigma', '50', '--seed', '0']
      + ['--per-image', '--json'],
      env,
      work,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  (row,) = json.loads(done.stdout)['results']
  for image in row['images']:
    assert abs(float(denoised[image['name'][:2]]) - image['psnr']) < 0.006, (image, denoised)
  assert row['psnr'] > 25.0


def _check_train_writes_metrics_without_tensorboard(installed):
  _, env, work = installed
  images = work / 'images'
  images.mkdir()
  rng = np.random.default_rng(0)
  for i in range(4):
    Image.fromarray(rng.integers(0, 256, (24, 24), np.uint8)).save(images / f'{i}.png')
  (work / 'tiny.py').write_text(TINY_CONFIG)
  done = _run(['dxnet-train', '--config', 'tiny.py', '--workdir', 'run'], env, work)
  assert done.returncode == 0, done.stderr[-3000:]
  assert (work / 'run' / 'metrics.jsonl').read_text().count('"split": "train"') == 2
  assert not (work / 'run' / 'tensorboard').exists()
  assert 'pip install "dxnet_jax[tensorboard]"' in done.stderr, done.stderr[-3000:]


# Run by the venv's python from outside the checkout (one process for what needs no command of
# its own): first `import X` of each optional package, as in a fresh interpreter; then every
# public module; then a missing extra's message; then launcher scripts in turn (`dxnet-models`,
# the others' --help). Prints one JSON line.
IN_ONE_PROCESS = """
import contextlib, importlib, io, json, runpy, sys, traceback
optional, core, commands = json.loads(sys.argv[1])
result = {'optional': {}, 'runs': {}}
for name in optional:
  try:
    importlib.import_module(name)
    result['optional'][name] = 'imported'
  except BaseException as e:
    result['optional'][name] = type(e).__name__
for name in core:
  importlib.import_module(name)
import dxnet_jax, dxnet_jax.pretrained as p
result['location'] = dxnet_jax.__file__
result['available'] = list(p.available())
result['files'] = sorted(f.name for f in (p.root() / %r).iterdir())
from dxnet_jax.data import embedded
try:
  embedded.load('skimage:test', 1)
  result['missing_extra'] = None
except Exception:
  result['missing_extra'] = traceback.format_exc()
for script, *args in commands:
  out, status = io.StringIO(), 0
  sys.argv = [script, *args]
  with contextlib.redirect_stdout(out):
    try:
      runpy.run_path(script, run_name='__main__')
    except SystemExit as e:
      status = e.code or 0
  result['runs'][' '.join([script.rsplit('/', 1)[-1], *args])] = (status, out.getvalue())
print(json.dumps(result))
""" % MODEL


def _check_in_one_process(installed):
  """The checks of IN_ONE_PROCESS; the launcher scripts' runs (command line -> (status, out))."""
  python, env, work = installed
  commands = [[str(python.parent / 'dxnet-models')]] + [
      [str(python.parent / c), '--help']
      for c in ('dxnet-evaluate', 'dxnet-models', 'dxnet-denoise', 'dxnet-upscale')
  ]
  done = _run(
      [python, '-c', IN_ONE_PROCESS, json.dumps([OPTIONAL, CORE_MODULES, commands])], env, work
  )
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads(done.stdout.splitlines()[-1])
  # Every public module imports, from the venv's copy of the package.
  assert pathlib.Path(result['location']).is_relative_to(python.parent.parent), result['location']
  assert MODEL in result['available']
  assert result['files'] == sorted((pretrained.CARD, pretrained.MANIFEST, pretrained.WEIGHTS))
  # No optional package is installed.
  assert result['optional'] == {m: 'ModuleNotFoundError' for m in OPTIONAL}, result['optional']
  # A missing extra is named.
  assert result['missing_extra'] is not None
  assert 'pip install "dxnet_jax[quickstart]"' in result['missing_extra'], result['missing_extra']
  return result['runs']


@pytest.mark.slow
def test_the_wheel_installs_lean_and_runs_from_outside_the_checkout(tmp_path):
  """One virtual environment for all checks (so parallel workers do not build one each)."""
  installed = _install(tmp_path)
  runs = _check_in_one_process(installed)
  _check_console_commands(installed, runs)
  _check_denoise_cleans_a_real_noisy_photo(installed)
  _check_train_writes_metrics_without_tensorboard(installed)
