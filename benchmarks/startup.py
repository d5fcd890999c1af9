"""Start-up time of the commands: cold (empty compilation cache), then warm (its second run).

    python -m benchmarks.startup                      # the four cases, as a user runs them
    python -m benchmarks.startup --size tiny          # tiny net and images: checks it runs
    python -m benchmarks.startup --repo OTHER --cache off   # another checkout, no cache

Cases, each a fresh Python process started from the repository root:
  quickstart  `python -m dxnet_jax.main --config configs/quickstart.py` to its first logged step
  denoise     `python -m dxnet_jax.denoise` on one 768x512 8-bit gray image
  evaluate    `python -m dxnet_jax.evaluate --pretrained ...` on Set12
  load        a fresh Python's `pretrained.load` and first jitted `apply` (the README's example)
Each case gets its own empty cache folder (`$DXNET_JAX_CACHE`) and runs twice in it; `--cache
off` runs it once without a cache, and `--repo` runs another checkout's package (one without
this cache measures the cold start before it). The native kernels' build cache is left as it is.

`--breakdown` adds a third, warm run with `JAX_LOG_COMPILES=1` and a process that only imports
what the case imports, and prints where the warm time goes: imports, JAX's tracing, lowering to
MLIR and loading from the cache (JAX's own timings; nested programs may count twice), and the
rest (computing, image files, Python).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]
CASES = ('quickstart', 'denoise', 'evaluate', 'load')
MODEL = 'denoise_dxnet_444_s50_h200'
FIRST_STEP = re.compile(r'step \d+/\d+ ')
# size -> (photo width and height, evaluation set, load's image side, quick start overrides)
SIZES = {
    'full': ((768, 512), 'Set12', 256, ()),
    'tiny': (
        (48, 32),
        None,
        32,
        (
            '--config.model.blocks=(1,1)',
            '--config.model.growth_rate=4',
            '--config.model.stem_features=8',
            '--config.batch_size=2',
            '--config.log_every_steps=1',
        ),
    ),
}
LOAD = """
import sys
import jax
import numpy as np
from dxnet_jax import pretrained
model, variables, config = pretrained.load(sys.argv[1])
apply = jax.jit(model.apply, static_argnames='train')
side = int(sys.argv[2])
noisy = np.random.default_rng(0).random((side, side, 1), np.float32)
clean = apply(variables, noisy[None], train=False)[0]
print(float(clean.mean()))
"""


# What each case imports before it computes anything (the breakdown's import time).
IMPORTS = {
    'quickstart': 'import dxnet_jax.main; from dxnet_jax.train import checks, loop',
    'denoise': 'import dxnet_jax.denoise',
    'evaluate': 'import dxnet_jax.evaluate',
    'load': 'import jax, numpy; from dxnet_jax import kernels, models, pretrained',
}
# JAX_LOG_COMPILES's lines: (column, pattern of the seconds).
JAX_PHASES = (
    ('trace', re.compile(r'Finished tracing \S+ for jit in ([\d.e+-]+) sec')),
    ('lower', re.compile(r'Finished jaxpr to MLIR module conversion \S+ in ([\d.e+-]+) sec')),
    ('cache load', re.compile(r'Finished XLA compilation of \S+ in ([\d.e+-]+) sec')),
)


def _photo(path: pathlib.Path, size: tuple[int, int], seed: int = 0) -> None:
  """An 8-bit gray image with smooth shapes and fine texture (the timing ignores content)."""
  width, height = size
  y, x = np.mgrid[0:height, 0:width] / max(width, height)
  rng = np.random.default_rng(seed)
  pixels = 128 + 60 * np.sin(9 * x + 4 * y) + 40 * np.cos(23 * x * y) + rng.normal(0, 8, x.shape)
  Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)


def commands(size: str, scratch: pathlib.Path) -> dict[str, tuple[list[str], bool]]:
  """case -> (argv, whether it ends at the first logged step rather than at exit)."""
  photo_size, eval_set, side, overrides = SIZES[size]
  _photo(scratch / 'photo.png', photo_size)
  if eval_set is None:
    (scratch / 'set').mkdir(exist_ok=True)
    for i in range(2):
      _photo(scratch / 'set' / f'{i}.png', (32, 32), seed=i)
    eval_set = str(scratch / 'set')
  python = [sys.executable]
  return {
      'quickstart': (
          python
          + ['-m', 'dxnet_jax.main', '--config', 'configs/quickstart.py']
          + ['--workdir', str(scratch / 'run'), *overrides],
          True,
      ),
      'denoise': (
          python
          + ['-m', 'dxnet_jax.denoise', '--model', MODEL, str(scratch / 'photo.png')]
          + ['--out', str(scratch / 'out'), '--overwrite'],
          False,
      ),
      'evaluate': (
          python + ['-m', 'dxnet_jax.evaluate', '--pretrained', MODEL, '--set', eval_set],
          False,
      ),
      'load': (python + ['-c', LOAD, MODEL, str(side)], False),
  }


def time_command(
    argv: list[str], until_step: bool, env: dict, cwd: pathlib.Path, log: list | None = None
) -> float:
  """Wall seconds from start to the first logged training step (`until_step`) or to exit; the
  output's lines are appended to `log`."""
  start = time.perf_counter()
  proc = subprocess.Popen(
      argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )
  lines = [] if log is None else log
  for line in proc.stdout:
    lines.append(line)
    if until_step and FIRST_STEP.search(line):
      elapsed = time.perf_counter() - start
      proc.kill()
      proc.wait()
      return elapsed
  code = proc.wait()
  elapsed = time.perf_counter() - start
  if code or until_step:
    tail = ''.join(lines[-15:])
    raise RuntimeError(f'{" ".join(argv[:4])} ... ended with status {code}:\n{tail}')
  return elapsed


def measure(
    case: str, size: str, repo: pathlib.Path, cache: bool, breakdown: dict | None = None
) -> tuple[float, float | None]:
  """(cold, warm) seconds of `case`: two runs sharing one fresh cache folder (one run, warm
  None, without a cache). A `breakdown` dict receives the third run's parts (module docstring)."""
  with tempfile.TemporaryDirectory(prefix='dxnet-startup-') as tmp:
    scratch = pathlib.Path(tmp)
    env = {k: v for k, v in os.environ.items() if not k.startswith('JAX_COMPILATION_CACHE')}
    env['DXNET_JAX_CACHE'] = str(scratch / 'cache') if cache else 'off'
    env['PYTHONPATH'] = os.pathsep.join([str(repo), env.get('PYTHONPATH', '')]).rstrip(os.pathsep)
    times = []
    for _ in range(2 if cache else 1):
      argv, until_step = commands(size, scratch)[case]
      times.append(time_command(argv, until_step, env, repo))
      if case == 'quickstart':  # a fresh workdir, or the second run would resume the first
        shutil.rmtree(scratch / 'run', ignore_errors=True)
    if breakdown is not None and cache:
      argv, until_step = commands(size, scratch)[case]
      log = []
      breakdown['warm'] = time_command(argv, until_step, dict(env, JAX_LOG_COMPILES='1'), repo, log)
      text = ''.join(log)
      for name, pattern in JAX_PHASES:
        breakdown[name] = sum(map(float, pattern.findall(text)))
      breakdown['imports'] = time_command([sys.executable, '-c', IMPORTS[case]], False, env, repo)
      breakdown['rest'] = breakdown['warm'] - sum(
          breakdown[k] for k in ('imports', *(name for name, _ in JAX_PHASES))
      )
    return times[0], times[-1] if cache else None


def table(rows: list[tuple[str, float, float | None]]) -> str:
  lines = ['| case | cold s | warm s | warm / cold |', '|---|---:|---:|---:|']
  for case, cold, warm in rows:
    if warm is None:
      lines.append(f'| {case} | {cold:.1f} | - | - |')
    else:
      lines.append(f'| {case} | {cold:.1f} | {warm:.1f} | {warm / cold:.2f} |')
  return '\n'.join(lines)


def breakdown_table(rows: list[tuple[str, dict]]) -> str:
  columns = ('warm', 'imports', *(name for name, _ in JAX_PHASES), 'rest')
  lines = [
      '| case | ' + ' | '.join(f'{c} s' for c in columns) + ' |',
      '|---|' + '---:|' * len(columns),
  ]
  for case, parts in rows:
    lines.append(f'| {case} | ' + ' | '.join(f'{parts[c]:.1f}' for c in columns) + ' |')
  return '\n'.join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m benchmarks.startup', description=__doc__)
  parser.add_argument('--size', choices=sorted(SIZES), default='full')
  parser.add_argument('--cases', default=','.join(CASES), help='comma-separated subset')
  parser.add_argument('--repo', default=str(REPO), help='checkout whose package runs')
  parser.add_argument('--cache', choices=('on', 'off'), default='on')
  parser.add_argument(
      '--breakdown', action='store_true', help='where the warm time goes (module docstring)'
  )
  args = parser.parse_args(argv)
  cases = args.cases.split(',')
  unknown = sorted(set(cases) - set(CASES))
  if unknown:
    parser.error(f'unknown cases {unknown}; choose from {CASES}')
  repo = pathlib.Path(args.repo).resolve()
  rows, parts = [], []
  for case in cases:
    breakdown = {} if args.breakdown else None
    cold, warm = measure(case, args.size, repo, args.cache == 'on', breakdown)
    rows.append((case, cold, warm))
    print(f'{case}: cold {cold:.1f} s, warm {warm} s', file=sys.stderr, flush=True)
    if breakdown:
      parts.append((case, breakdown))
  print(table(rows))
  if parts:
    print()
    print(breakdown_table(parts))
  return 0


if __name__ == '__main__':
  sys.exit(main())
