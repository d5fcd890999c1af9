"""launch/timeboxed.py: the phase-2 schedule, and a real two-phase run of a tiny denoiser."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'launch'))
import timeboxed  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

from test_train import project  # noqa: F401  pylint: disable=unused-import


def test_phase_two_schedule_starts_after_the_furthest_run():
  total, decay_at = timeboxed.phase_two_schedule(
      {'a': 900, 'b': 1000}, rate=50.0, seconds=20.0, decay_shares=[0.3, 0.75]
  )
  assert total == 2000
  assert decay_at == (0.65, 0.875)  # 1000 + 0.3 * 1000 and 1000 + 0.75 * 1000, of 2000


def test_step_rate_ignores_records_of_earlier_phases():
  records = [
      {'step': 10, 'time': 5.0},
      {'step': 100, 'time': 100.0},
      {'step': 200, 'time': 110.0},
      {'step': 400, 'time': 130.0},
  ]
  assert timeboxed.step_rate(records, since=50.0) == pytest.approx(10.0)
  with pytest.raises(RuntimeError, match='too few train records'):
    timeboxed.step_rate(records[:2], since=50.0)


@pytest.mark.parametrize(
    'spec, message',
    [
        (['--run', 'nameonly'], 'NAME=CONFIG'),
        (['--run', 'a=x.py', '--run', 'a=y.py'], 'given twice'),
        (['--run', 'a=x.py', '--tail', '1.5'], '--tail'),
    ],
)
def test_bad_arguments(spec, message, capsys):
  with pytest.raises(SystemExit):
    timeboxed.parse_args(['--minutes', '1', '--root', 'r', *spec])
  assert message in capsys.readouterr().err


@pytest.mark.slow
def test_two_phase_run_decays_and_finishes(project, tmp_path):  # noqa: F811
  root = tmp_path / 'runs'
  result = subprocess.run(
      [
          sys.executable,
          str(REPO / 'launch' / 'timeboxed.py'),
          '--minutes',
          '0.9',
          '--tail',
          '0.5',
          '--eval-seconds',
          '1',
          '--root',
          str(root),
          '--run',
          f'tiny={project / "tiny.py"}',
          '--',
          '--config.checkpoint_every_steps=0',
          '--config.data.patches_per_epoch=400',
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  report = json.loads((root / 'timeboxed.json').read_text())
  phase1_steps = report['phase1']['steps']['tiny']
  num_steps = report['phase2']['num_steps']
  assert 0 < phase1_steps < num_steps
  with open(root / 'tiny' / 'metrics.jsonl') as f:
    train = [r for r in map(json.loads, f) if r['split'] == 'train']
  assert train[-1]['step'] == num_steps
  rates = {round(r['learning_rate'], 7) for r in train}
  assert 1e-3 in rates and min(rates) < 1e-3, rates  # decayed in phase 2 only
  assert all(r['learning_rate'] == pytest.approx(1e-3) for r in train if r['step'] <= phase1_steps)


@pytest.mark.slow
def test_sigterm_to_the_driver_saves_every_run(project, tmp_path):  # noqa: F811
  root = tmp_path / 'runs'
  driver = subprocess.Popen(
      [
          sys.executable,
          str(REPO / 'launch' / 'timeboxed.py'),
          '--minutes',
          '30',
          '--root',
          str(root),
          '--run',
          f'tiny={project / "tiny.py"}',
          '--',
          '--config.checkpoint_every_steps=0',
          '--config.data.patches_per_epoch=4000',
      ],
      cwd=REPO,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )
  metrics = root / 'tiny' / 'metrics.jsonl'
  deadline = time.time() + 120
  while time.time() < deadline and not (metrics.exists() and metrics.read_text().count('\n') >= 3):
    time.sleep(0.5)
  driver.send_signal(signal.SIGTERM)
  _, err = driver.communicate(timeout=120)
  assert driver.returncode == 143, err[-2000:]
  assert 'every run saved its state' in err
  with open(metrics) as f:
    last_step = max(json.loads(line)['step'] for line in f)
  saved = timeboxed.latest_checkpoint_step(root / 'tiny')
  assert saved >= last_step > 0  # saved at SIGTERM, not only at an epoch end (500 steps)


def test_phase_two_keeps_a_few_steps_when_the_box_is_spent():
  total, decay_at = timeboxed.phase_two_schedule(
      {'a': 100}, rate=5.0, seconds=-3.0, decay_shares=[0.5]
  )
  assert total == 100 + timeboxed.MIN_PHASE_TWO_STEPS and 100 / total < decay_at[0] < 1
