"""One run's steps, as a worker finishes them: its training, then each analysis, in its workdir.

Whatever a step finished before is kept: main resumes a training from its latest checkpoint, a
run with a results.json is not trained again, and an analysis whose output folder exists is not
run again. So a run killed anywhere (with its worker, its node or the sweep) completes when it is
started again, on any node that sees the workdir.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Tuple

from dxnet_jax.sweep import table
from dxnet_jax.sweep.study import Analysis, LOG_NAME, PARTIAL, StudyError

TAIL_LINES = 40
GPU_MEMORY_VARS = (
    'XLA_PYTHON_CLIENT_MEM_FRACTION',
    'XLA_PYTHON_CLIENT_PREALLOCATE',
    'XLA_PYTHON_CLIENT_ALLOCATOR',
)
_PR_SET_PDEATHSIG = 1


@dataclasses.dataclass(frozen=True)
class Job:
  """What a worker needs to finish one run; built by the sweep, sent to the worker."""

  name: str
  workdir: str
  cwd: str  # where the study's relative config paths resolve (the sweep's directory)
  main_args: Tuple[str, ...]  # dxnet_jax.main's flags
  analyses: Tuple[Analysis, ...]
  columns: Tuple[str, ...]  # the table's columns, to check each analysis writes its values
  env: Tuple[Tuple[str, str], ...] = ()  # variables set for every step (e.g. PYTHONPATH)
  resources: Tuple[Tuple[str, float], ...] = (('cpu', 1.0),)  # what Ray reserves for it

  def main_command(self) -> List[str]:
    return [sys.executable, '-m', 'dxnet_jax.main', *self.main_args]


def finish(job: Job, where: str = '') -> Dict[str, Any]:
  """Runs the job's unfinished steps; returns its outcome for the table.

  The outcome holds 'status' (done | failed), 'results' (the run's results.json), 'analyses'
  (name -> values), 'error' when failed, and 'attempts': (step, seconds, exit status) per step
  run here (step None is the training). `where` names the node in the logs.
  """
  os.makedirs(job.workdir, exist_ok=True)
  outcome = {'status': table.DONE, 'results': None, 'analyses': {}, 'attempts': []}
  env = _environment(job)
  results = table.read_results(job.workdir)
  if results is None:
    log = os.path.join(job.workdir, LOG_NAME)
    code, seconds, tail = _call(job.main_command(), log, job.cwd, env, where)
    outcome['attempts'].append((None, seconds, code))
    results = table.read_results(job.workdir)
    if code or results is None:
      problem = _exit_reason(code) if code else 'exited 0 without a results.json'
      return _failed(outcome, f'{problem} (log: {log})', tail)
  outcome['results'] = results
  for analysis in job.analyses:
    try:
      values = table.read_analysis(job.workdir, analysis)
      if values is None:
        values = _analyse(job, analysis, env, where, outcome['attempts'])
      if table.missing_values(list(job.columns), analysis, values):
        raise StudyError(table.missing_message(list(job.columns), analysis, job.workdir, values))
    except _StepFailed as e:
      return _failed(outcome, f'{analysis.name} analysis: {e.reason}', e.tail)
    except StudyError as e:
      return _failed(outcome, f'{analysis.name} analysis: {e}', '')
    outcome['analyses'][analysis.name] = values
  return outcome


class _StepFailed(Exception):

  def __init__(self, reason: str, tail: str):
    super().__init__(reason)
    self.reason, self.tail = reason, tail


def _analyse(job: Job, analysis: Analysis, env, where: str, attempts: list) -> Dict[str, Any]:
  """Runs an analysis into an empty `.partial` folder, renamed into place once it succeeded."""
  partial = analysis.output(job.workdir) + PARTIAL
  shutil.rmtree(partial, ignore_errors=True)  # an earlier attempt's remains
  os.makedirs(partial)
  log = analysis.output(job.workdir) + '.log'
  code, seconds, tail = _call(analysis.command(job.workdir), log, job.cwd, env, where)
  attempts.append((analysis.name, seconds, code))
  if code:
    raise _StepFailed(f'{_exit_reason(code)} (log: {log})', tail)
  try:
    values = table.analysis_values(partial, analysis)
  except StudyError as e:
    raise _StepFailed(str(e), tail) from None
  table.atomic_write(os.path.join(partial, table.ANALYSIS_RECORD), json.dumps(analysis.settings()))
  os.replace(partial, analysis.output(job.workdir))
  return values


def _failed(outcome: Dict[str, Any], reason: str, tail: str) -> Dict[str, Any]:
  return {**outcome, 'status': table.FAILED, 'error': f'{reason}\n{tail}'.rstrip()}


def _environment(job: Job) -> Dict[str, str]:
  env = {**os.environ, 'PYTHONUNBUFFERED': '1', **dict(job.env)}
  gpus = dict(job.resources).get('gpu', 0)
  if 0 < gpus < 1 and not any(v in env for v in GPU_MEMORY_VARS):
    # Runs sharing a GPU each take their share of its memory rather than XLA's default 75%.
    env['XLA_PYTHON_CLIENT_MEM_FRACTION'] = f'{0.9 * gpus:.3f}'
  return env


def _die_with_parent():
  """In the child: SIGTERM when the worker dies, so that the training saves and stops."""
  _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith('linux') else None


def _call(command: List[str], log_path: str, cwd: str, env, where: str) -> Tuple[int, float, str]:
  """Runs `command` with its output appended to `log_path`: (exit status, seconds, log tail)."""
  with open(log_path, 'ab') as log:
    offset = log.tell()
    node = f' on {where}' if where else ''
    log.write(f'==== {time.strftime("%Y-%m-%d %H:%M:%S")}{node} {shlex.join(command)}\n'.encode())
    log.flush()
    started = time.monotonic()
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        # Its own session: a terminal's Ctrl-C reaches the sweep, which stops the runs.
        start_new_session=True,
        preexec_fn=_die_with_parent if _LIBC is not None else None,
    )
    try:
      code = proc.wait()
    except BaseException:
      proc.terminate()  # the worker is being stopped: the training saves and exits
      proc.wait()
      raise
  return code, time.monotonic() - started, _log_tail(log_path, offset)


def _exit_reason(code: int) -> str:
  if code < 0:
    try:
      return f'killed by {signal.Signals(-code).name}'
    except ValueError:
      return f'killed by signal {-code}'
  if code == 128 + signal.SIGTERM:
    return 'stopped by SIGTERM (exit 143) with its state saved; rerun the sweep to resume it'
  return f'exit status {code}'


def _log_tail(path: str, offset: int) -> str:
  try:
    with open(path, 'rb') as f:
      f.seek(offset)
      text = f.read().decode(errors='replace')
  except OSError:
    return ''
  return '\n'.join(text.splitlines()[-TAIL_LINES:])
