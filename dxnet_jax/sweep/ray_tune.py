"""The sweep on Ray Tune: one trial per unfinished run, the table kept as the trials report.

Ray schedules the trials on the resources each run asks for (a local Ray by default, or a
running cluster), retries those whose worker or node died, and stops them on Ctrl-C or SIGTERM.
Each trial finishes its run's steps in the run's workdir (`steps.finish`), which holds the run's
state: a rerun of the sweep starts trials for the unfinished runs only, and they resume there.
So Tune keeps no checkpoints of its own and its experiment folder is only a record.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any, Dict, List, Optional

from dxnet_jax import _optional
from dxnet_jax.sweep import steps
from dxnet_jax.sweep import table
from dxnet_jax.sweep.study import Study

# Offline and quiet: no usage reports; Tune's classic console output, which verbose=0 silences.
RAY_ENV = {
    'RAY_USAGE_STATS_ENABLED': '0',
    'RAY_AIR_NEW_OUTPUT': '0',
}
OBJECT_STORE_BYTES = 100 * 1024**2
RETRIES = 2  # trials restarted after their worker or node died


def import_ray():
  for name, value in RAY_ENV.items():
    os.environ.setdefault(name, value)
  ray = _optional.require('ray', 'sweep', 'dxnet-sweep')
  _optional.require('ray.tune', 'sweep', 'dxnet-sweep')
  return ray


def start_ray(address: Optional[str]):
  """Ray for the sweep, and whether the sweep started it (and so shuts it down).

  A Ray this process already joined (a notebook's) is used as it is; else the cluster at
  `address` ('auto' or HOST:PORT), else a new local Ray on this machine's CPUs and GPUs.
  """
  ray = import_ray()
  if ray.is_initialized():
    return ray, False
  if address:
    ray.init(address=address, log_to_driver=False, logging_level='WARNING')
  else:
    ray.init(
        address='local',
        include_dashboard=False,
        object_store_memory=OBJECT_STORE_BYTES,
        log_to_driver=False,
        logging_level='WARNING',
    )
  return ray, True


def _duration(seconds: float) -> str:
  from dxnet_jax.train import writer  # pylint: disable=g-import-not-at-top

  return writer.duration(seconds)


def _trainable(config: Dict[str, Any], jobs: Dict[str, steps.Job]):
  """A Tune trial: finishes one run and reports its outcome."""
  import ray  # pylint: disable=g-import-not-at-top
  from ray import tune  # pylint: disable=g-import-not-at-top

  node = ray.get_runtime_context().get_node_id()
  outcome = steps.finish(jobs[config['run']], f'node {node[:12]}')
  tune.report({'outcome': json.dumps(outcome)})


class Progress:
  """Driver-side record of the trials: the table, timing.json and a status line with ETA."""

  def __init__(self, study: Study, root: str, outcomes: Dict[str, Dict[str, Any]], todo: int):
    self.study, self.root, self.outcomes = study, root, outcomes
    self.timing = table.read_timing(root)
    self.todo = todo  # runs submitted to Ray
    self.running: Dict[str, float] = {}  # run name -> start time
    self.walls: List[float] = []  # wall time of each run finished by this sweep
    self.most_running = 1

  def write_table(self):
    table.write_table(self.study, self.root, table.table_rows(self.study, self.outcomes))

  def started(self, name: str):
    self.running[name] = time.monotonic()
    self.most_running = max(self.most_running, len(self.running))
    self.say(f'started {name}')

  def finished(self, name: str, outcome: Dict[str, Any]):
    started = self.running.pop(name, time.monotonic())
    for step, seconds, code in outcome.pop('attempts', ()):
      table.record_attempt(self.timing, name, step, seconds, code)
    table.write_timing(self.root, self.timing)
    self.outcomes[name] = outcome
    self.todo -= 1
    self.write_table()
    if outcome['status'] == table.DONE:
      self.walls.append(time.monotonic() - started)
      self.say(f'{name} done in {_duration(self.walls[-1])}')
    else:
      shown = '\n'.join(outcome['error'].splitlines()[-12:])
      self.say(f'FAILED {name}: {shown}')

  def eta(self) -> str:
    """Time left from the mean wall time of the runs done so far; '' before the first."""
    if not self.walls or not self.todo:
      return ''
    mean, now = sum(self.walls) / len(self.walls), time.monotonic()
    waiting = self.todo - len(self.running)
    left = mean * waiting + sum(max(mean - (now - t), 0.0) for t in self.running.values())
    return f', ETA {_duration(left / self.most_running)}'

  def say(self, message: str):
    done = sum(o['status'] == table.DONE for o in self.outcomes.values())
    failed = len(self.outcomes) - done
    status = (
        f'{done}/{len(self.study.runs)} done, {len(self.running)} running, {failed} failed'
        f'{self.eta()}'
    )
    print(f'sweep [{time.strftime("%H:%M:%S")}] {status} | {message}', file=sys.stderr, flush=True)


def _callback(progress: Progress):
  """The Tune callback that hands the trials' events to `progress`."""
  from ray import tune  # pylint: disable=g-import-not-at-top

  class Callback(tune.Callback):

    def on_trial_start(self, iteration, trials, trial, **info):
      progress.started(trial.config['run'])

    def on_trial_result(self, iteration, trials, trial, result, **info):
      progress.finished(trial.config['run'], json.loads(result['outcome']))

    def on_trial_recover(self, iteration, trials, trial, **info):
      progress.say(f'{trial.config["run"]}: its worker died; restarting it ({trial.error_file})')

    def on_trial_error(self, iteration, trials, trial, **info):
      error = f'Ray: the trial failed {RETRIES + 1} times (see {trial.error_file})'
      progress.finished(trial.config['run'], {'status': table.FAILED, 'error': error})

  return Callback()


def run(root: str, jobs: Dict[str, steps.Job], progress: Progress) -> Optional[int]:
  """Runs `jobs` (run name -> job) as Tune trials, each on the resources its job asks for.

  Returns None, or the signal (SIGINT, SIGTERM) that stopped the sweep: Tune then stops the
  trials, whose trainings get SIGTERM and save their state.
  """
  from ray import tune  # pylint: disable=g-import-not-at-top

  signals = []

  def on_sigterm(signum, frame):
    signals.append(signum)
    handler = signal.getsignal(signal.SIGINT)  # Tune's while it runs: stops the trials
    if callable(handler):
      handler(signal.SIGINT, frame)

  trainable = tune.with_parameters(_trainable, jobs=jobs)
  tuner = tune.Tuner(
      tune.with_resources(trainable, lambda config: dict(jobs[config['run']].resources)),
      param_space={'run': tune.grid_search(list(jobs))},
      tune_config=tune.TuneConfig(
          trial_name_creator=lambda trial: trial.config['run'],
          trial_dirname_creator=lambda trial: trial.config['run'],
      ),
      run_config=tune.RunConfig(
          name='tune',
          storage_path=os.path.join(os.path.abspath(root), '.ray'),
          verbose=0,
          callbacks=[_callback(progress)],
          failure_config=tune.FailureConfig(max_failures=RETRIES),
      ),
  )
  previous = signal.signal(signal.SIGTERM, on_sigterm), signal.getsignal(signal.SIGINT)
  try:
    tuner.fit()
  finally:  # Tune leaves its SIGINT handler behind
    signal.signal(signal.SIGTERM, previous[0])
    signal.signal(signal.SIGINT, previous[1])
  if progress.todo:  # trials left unfinished: Tune was interrupted
    return signals[0] if signals else signal.SIGINT
  return None
