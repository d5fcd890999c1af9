"""`dxnet-sweep`: checks a study and its root, then runs the unfinished runs on Ray Tune."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Dict, Optional, Sequence

from dxnet_jax.sweep import steps
from dxnet_jax.sweep import table
from dxnet_jax.sweep.study import Run, Study, StudyError, load_study

EXIT_FAILED = 1
EXIT_USAGE = 2


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
  import dxnet_jax.sweep  # pylint: disable=g-import-not-at-top

  parser = argparse.ArgumentParser(
      prog='dxnet-sweep',
      description=dxnet_jax.sweep.__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  parser.add_argument('study', help='study file, path.py[:arg]')
  parser.add_argument('--root', required=True, help='folder of the workdirs and the table')
  parser.add_argument(
      '--address', help="a running Ray cluster, HOST:PORT or 'auto' (default: start a local Ray)"
  )
  parser.add_argument('--cpus-per-run', type=float, help='CPUs per training (study.resources)')
  parser.add_argument('--gpus-per-run', type=float, help='GPUs per training (study.resources)')
  parser.add_argument(
      '--main-flag',
      dest='main_flags',
      action='append',
      default=[],
      metavar='FLAG',
      help='a flag for every run of dxnet_jax.main, e.g. --main-flag=--cpu_devices=2',
  )
  parser.add_argument(
      '--dry-run', action='store_true', help='check the study, print the runs, start nothing'
  )
  return parser.parse_args(argv)


def _check_args(args: argparse.Namespace):
  for flag in ('cpus_per_run', 'gpus_per_run'):
    value = getattr(args, flag)
    if value is not None and (value < 0 or (flag == 'cpus_per_run' and value == 0)):
      raise StudyError(f'--{flag.replace("_", "-")} must be positive, got {value:g}.')
  for flag in args.main_flags:
    if not flag.startswith('-'):
      raise StudyError(f'--main-flag {flag!r} is not a flag; write --main-flag=--name=value.')
    name = flag.lstrip('-').split('=', 1)[0]
    if name == 'workdir' or name.startswith('config'):
      raise StudyError(
          f'--main-flag {flag!r}: the sweep sets --workdir and --config; put config changes '
          'into the study (overrides), where they are checked and recorded.'
      )


def make_job(study: Study, run: Run, root: str, args: argparse.Namespace) -> steps.Job:
  """The run's job: main's flags, the analyses and what Ray reserves for it."""
  workdir = os.path.join(root, run.name)
  resources = {'cpu': 1.0, **dict(run.resources)}
  if args.cpus_per_run is not None:
    resources['cpu'] = args.cpus_per_run
  if args.gpus_per_run is not None:
    resources['gpu'] = args.gpus_per_run
  env = {'PYTHONPATH': os.environ['PYTHONPATH']} if os.environ.get('PYTHONPATH') else {}
  return steps.Job(
      name=run.name,
      workdir=workdir,
      cwd=os.getcwd(),
      main_args=(*run.config_args(), f'--workdir={workdir}', *args.main_flags),
      analyses=tuple(study.analyses),
      columns=tuple(study.columns),
      env=tuple(env.items()),
      resources=tuple(resources.items()),
  )


def finished(study: Study, workdir: str) -> Optional[Dict]:
  """The outcome of a run whose training and analyses are all done; None otherwise."""
  results = table.read_results(workdir)
  analyses = {a.name: table.read_analysis(workdir, a) for a in study.analyses}
  if results is None or None in analyses.values():
    return None
  return {'status': table.DONE, 'results': results, 'analyses': analyses}


def _print_commands(study: Study, jobs: Dict[str, steps.Job]):
  for run in study.runs:
    job = jobs[run.name]
    state = 'done' if table.read_results(job.workdir) else 'to run'
    print(f'{run.name} ({state}): {shlex.join(job.main_command())}')
    for analysis in study.analyses:
      done = table.read_analysis(job.workdir, analysis) is not None
      command = shlex.join(analysis.command(job.workdir))
      print(f'{run.name} {analysis.name} ({"done" if done else "to run"}): {command}')


def _summary(study: Study, outcomes: Dict[str, Dict]):
  """The per-label statistics of the finished runs, as markdown on stdout."""
  from dxnet_jax.analysis import stats  # pylint: disable=g-import-not-at-top

  rows = table.table_rows(study, outcomes)
  if any(row['status'] == table.DONE for row in rows):
    print(stats.markdown_summary(rows, study.columns, study.compare))


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = _parse_args(argv)
  try:
    _check_args(args)
    study = load_study(args.study)
    root = os.path.abspath(args.root)
    jobs = {run.name: make_job(study, run, root, args) for run in study.runs}
    if args.dry_run:
      _print_commands(study, jobs)
      return 0
    table.check_workdirs(study, root)
    os.makedirs(root, exist_ok=True)
    outcomes = {}
    for name, job in list(jobs.items()):
      outcome = finished(study, job.workdir)
      if outcome is not None:
        outcomes[name] = outcome
        del jobs[name]
    from dxnet_jax.sweep import ray_tune  # pylint: disable=g-import-not-at-top

    progress = ray_tune.Progress(study, root, outcomes, len(jobs))
    progress.write_table()
    progress.say(
        f'{study.spec}: {len(study.runs)} runs under {root}, {len(outcomes)} already finished'
    )
    stopped = None
    if jobs:
      ray, started = ray_tune.start_ray(args.address)
      try:
        stopped = ray_tune.run(root, jobs, progress)
      finally:
        if started:
          ray.shutdown()
  except (StudyError, ImportError) as e:
    print(f'sweep: error: {e}', file=sys.stderr)
    return EXIT_USAGE
  _summary(study, outcomes)
  if stopped:
    return 128 + stopped
  return EXIT_FAILED if any(o['status'] == table.FAILED for o in outcomes.values()) else 0


if __name__ == '__main__':
  sys.exit(main())
