"""Trains several configs side by side with the same step budget, sized to fit a wall-clock box.

    python launch/timeboxed.py --minutes 4 --root runs/gpu \\
        --run dxnet=configs/denoise.py:dxnet_444,gpu \\
        --run densenet=configs/denoise.py:densenet_555,gpu [-- --config.key=value ...]

Why: on a leased accelerator the time is fixed but the step rate is unknown until the nets run,
and a learning-rate schedule needs the number of steps in advance. So the runs go in two phases:

1. Every run starts at once (`dxnet_jax.main`, one process each) with a step count too large to
   reach, so the learning rate stays at its first value. After `(1 - tail) * minutes` each gets
   SIGTERM, which makes the trainer save a checkpoint and exit 143.
2. From the slowest run's step rate and start-up time, one common `num_steps` is chosen that ends
   the box; every run resumes with it and `optim.decay_at` moved into the remaining steps
   (`--decays`, fractions of them), then ends with its usual final evaluation.

Both phases run `optim.schedule='piecewise'` (the LR times `optim.decay_factor` at each decay
point), whatever the config says: in phase 1 it is a constant LR.

Every run thus gets the same number of steps and the same schedule after phase 1 (a faster run
only spends a few more of its first-phase steps at the first learning rate). What happened is
written to `ROOT/timeboxed.json`. Rerunning with the same ROOT after a finished phase 2 just
re-evaluates (the trainer resumes at its last step).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

UNREACHABLE_STEPS = 10**9
MIN_PHASE_TWO_STEPS = 10  # even when the box is spent, so that the decays happen
PREEMPTED = 143  # dxnet_jax.main's exit code after a SIGTERM save


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--minutes', type=float, required=True, help='the whole box, both phases')
  parser.add_argument('--root', required=True, help="parent of the runs' workdirs")
  parser.add_argument(
      '--run',
      action='append',
      required=True,
      metavar='NAME=CONFIG',
      help='a workdir name and a config file (with its :argument), repeatable',
  )
  parser.add_argument(
      '--tail',
      type=float,
      default=0.35,
      help='share of the box for phase 2 (decays and final evaluation)',
  )
  parser.add_argument(
      '--decays',
      default='0.3,0.75',
      help='where the LR decays, as fractions of the steps left for phase 2',
  )
  parser.add_argument(
      '--eval-seconds',
      type=float,
      default=30.0,
      help='time kept back at the end for the final evaluation',
  )
  parser.add_argument('--python', default=sys.executable)
  parser.add_argument('overrides', nargs='*', help='--config.key=value flags for every run')
  args = parser.parse_args(argv)
  runs = {}
  for spec in args.run:
    name, sep, config = spec.partition('=')
    if not sep or not name or not config:
      parser.error(f'--run takes NAME=CONFIG, got {spec!r}')
    if name in runs:
      parser.error(f'--run name {name!r} given twice')
    runs[name] = config
  args.runs = runs
  if not 0 < args.tail < 1:
    parser.error(f'--tail must be in (0, 1), got {args.tail}')
  args.decay_shares = [float(d) for d in args.decays.split(',') if d]
  if not all(0 <= d < 1 for d in args.decay_shares):
    parser.error(f'--decays must be fractions in [0, 1), got {args.decays!r}')
  return args


def latest_checkpoint_step(workdir: Path) -> int:
  steps = [int(p.name) for p in (workdir / 'checkpoints' / 'latest').glob('*') if p.name.isdigit()]
  return max(steps, default=0)


def train_records(workdir: Path) -> list[dict]:
  path = workdir / 'metrics.jsonl'
  if not path.exists():
    return []
  with open(path) as f:
    records = [json.loads(line) for line in f if line.strip()]
  return [r for r in records if r.get('split') == 'train']


def step_rate(records: list[dict], since: float) -> float:
  """Steps per second between the first and the last train record written after `since`."""
  records = [r for r in records if r['time'] >= since]
  if len(records) < 2 or records[-1]['time'] <= records[0]['time']:
    raise RuntimeError(
        'too few train records to measure the step rate: lower '
        '--config.log_every_steps or give phase 1 more time (--minutes, --tail)'
    )
  return (records[-1]['step'] - records[0]['step']) / (records[-1]['time'] - records[0]['time'])


def phase_two_schedule(
    steps_done: dict[str, int], rate: float, seconds: float, decay_shares: list[float]
) -> tuple[int, tuple[float, ...]]:
  """(num_steps, decay_at) that fill `seconds` at `rate` after the furthest run's step (at least
  MIN_PHASE_TWO_STEPS more)."""
  start = max(steps_done.values())
  remaining = max(int(rate * seconds), MIN_PHASE_TWO_STEPS)
  total = start + remaining
  decay_at = tuple(round((start + share * remaining) / total, 6) for share in decay_shares)
  return total, decay_at


def _command(args, name: str, config: str, extra: list[str]) -> list[str]:
  return [
      args.python,
      '-m',
      'dxnet_jax.main',
      f'--config={config}',
      f'--workdir={Path(args.root) / name}',
      *args.overrides,
      '--config.optim.schedule=piecewise',
      *extra,
  ]


def _run_all(
    args,
    extra_by_name: dict[str, list[str]],
    stop_after: float | None,
    log_mode: str,
    ready=lambda: True,
) -> dict[str, int]:
  """Starts every run, SIGTERMs them after `stop_after` seconds (if given), waits; exit codes.

  The stop waits past `stop_after` (up to twice it) until `ready()`: a slow start on a loaded
  machine must not leave a run without the records its step rate is measured from.
  """
  env = dict(os.environ)
  if len(args.runs) > 1:  # several processes share one accelerator
    env.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  procs = {}
  for name, config in args.runs.items():
    workdir = Path(args.root) / name
    workdir.mkdir(parents=True, exist_ok=True)
    log = open(workdir / 'timeboxed.log', log_mode)
    procs[name] = (
        subprocess.Popen(
            _command(args, name, config, extra_by_name[name]),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        ),
        log,
    )

  def stop_all(*_):
    for proc, _ in procs.values():
      if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # the trainer saves its state and exits 143

  terminated = []

  def on_sigterm(*_):
    terminated.append(True)
    stop_all()

  # A SIGTERM to this driver (a scheduler, `timeout`) reaches the trainers, so nothing is lost.
  previous = signal.signal(signal.SIGTERM, on_sigterm)
  try:
    if stop_after is not None:
      start = time.time()
      while any(p.poll() is None for p, _ in procs.values()):
        elapsed = time.time() - start
        if elapsed >= 2 * stop_after or (elapsed >= stop_after and ready()):
          break
        time.sleep(0.5)
      stop_all()
    codes = {name: proc.wait() for name, (proc, _) in procs.items()}
  finally:
    signal.signal(signal.SIGTERM, previous)
  for _, log in procs.values():
    log.close()
  if terminated:
    print(
        f'SIGTERM: every run saved its state ({codes}); each workdir resumes with '
        '`python -m dxnet_jax.main --config ... --workdir ...`.',
        file=sys.stderr,
    )
    raise SystemExit(PREEMPTED)
  return codes


def _fail(name: str, code: int, root: Path, phase: int):
  tail = (root / name / 'timeboxed.log').read_text().splitlines()[-15:]
  raise SystemExit(
      f'phase {phase}: run {name!r} exited with {code}; the end of its log '
      f'({root / name / "timeboxed.log"}):\n' + '\n'.join(tail)
  )


def main(argv=None):
  args = parse_args(argv)
  root = Path(args.root)
  root.mkdir(parents=True, exist_ok=True)
  box = args.minutes * 60
  started = time.time()
  report = {'minutes': args.minutes, 'runs': args.runs, 'overrides': args.overrides}

  phase1 = box * (1 - args.tail)

  def fresh_records(name):  # this invocation's, not those of an earlier one in the same root
    return [r for r in train_records(root / name) if r['time'] >= started]

  def rates_measurable():
    return all(len(fresh_records(n)) >= 2 for n in args.runs)

  codes = _run_all(
      args,
      {n: [f'--config.num_steps={UNREACHABLE_STEPS}'] for n in args.runs},
      phase1,
      'w',
      ready=rates_measurable,
  )
  for name, code in codes.items():
    if code not in (PREEMPTED, 0):
      _fail(name, code, root, 1)
  steps_done = {n: latest_checkpoint_step(root / n) for n in args.runs}
  records = {n: fresh_records(n) for n in args.runs}
  rates = {n: step_rate(records[n], started) for n in args.runs}
  # Start-up of phase 1 (imports, data, compilation) predicts phase 2's.
  startup = max(
      records[n][0]['time'] - started - records[n][0]['step'] / rates[n] for n in args.runs
  )
  left = box - (time.time() - started) - startup - args.eval_seconds
  num_steps, decay_at = phase_two_schedule(steps_done, min(rates.values()), left, args.decay_shares)
  report['phase1'] = {
      'seconds': round(time.time() - started, 1),
      'steps': steps_done,
      'steps_per_second': {n: round(r, 2) for n, r in rates.items()},
      'startup_seconds': round(startup, 1),
  }
  report['phase2'] = {'num_steps': num_steps, 'decay_at': decay_at}
  print(json.dumps(report, indent=1), flush=True)

  phase2_start = time.time()
  extra = [f'--config.num_steps={num_steps}', f'--config.optim.decay_at={decay_at!r}']
  codes = _run_all(args, {n: extra for n in args.runs}, None, 'a')
  for name, code in codes.items():
    if code != 0:
      _fail(name, code, root, 2)
  report['phase2']['seconds'] = round(time.time() - phase2_start, 1)
  report['seconds'] = round(time.time() - started, 1)
  report['results'] = {}
  for name in args.runs:
    results_file = root / name / 'results.json'
    if results_file.exists():
      results = json.loads(results_file.read_text())
      report['results'][name] = [
          {k: e[k] for k in ('set', 'method', 'psnr', 'ssim') if k in e}
          for e in results.get('evaluation', [])
      ]
  with open(root / 'timeboxed.json', 'w') as f:
    json.dump(report, f, indent=1)
  print(json.dumps({k: report[k] for k in ('seconds', 'phase2', 'results')}, indent=1))
  return report


if __name__ == '__main__':
  main()
