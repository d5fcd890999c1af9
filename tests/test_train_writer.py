"""MetricWriter: metrics.jsonl always, TensorBoard events when the `tensorboard` extra is there."""

import json
import sys

from tensorboard.backend.event_processing import event_accumulator

from dxnet_jax.train import writer as writer_lib


def _records(workdir):
  with open(workdir / 'metrics.jsonl') as f:
    return [json.loads(line) for line in f]


def test_writes_jsonl_and_tensorboard(tmp_path):
  writer = writer_lib.MetricWriter(str(tmp_path))
  writer.write(3, 'train', {'loss': 0.5})
  writer.write(5, 'train', {'loss': 0.25})
  writer.close()
  assert [(r['step'], r['loss']) for r in _records(tmp_path)] == [(3, 0.5), (5, 0.25)]
  events = event_accumulator.EventAccumulator(str(tmp_path / 'tensorboard'))
  events.Reload()
  loss = events.Tensors('train/loss')
  assert [(e.step, e.tensor_proto.float_val[0]) for e in loss] == [(3, 0.5), (5, 0.25)]


def test_without_tensorboard_keeps_jsonl(tmp_path, monkeypatch, caplog):
  for name in ('tensorboard', 'tensorboard.summary'):
    monkeypatch.setitem(sys.modules, name, None)  # makes `import tensorboard.summary` fail
  writer = writer_lib.MetricWriter(str(tmp_path))
  writer.write(1, 'validation', {'psnr': 27.0})
  writer.write(2, 'validation', {'psnr': 27.5})
  writer.close()
  assert [r['psnr'] for r in _records(tmp_path)] == [27.0, 27.5]
  assert not (tmp_path / 'tensorboard').exists()
  assert 'TensorBoard events are off' in caplog.text
  assert 'pip install "dxnet_jax[tensorboard]"' in caplog.text
