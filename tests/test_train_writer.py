"""MetricWriter: metrics.jsonl always, TensorBoard events when TensorFlow is there."""

import json
import sys

from dxnet_jax.train import writer as writer_lib


def _records(workdir):
  with open(workdir / 'metrics.jsonl') as f:
    return [json.loads(line) for line in f]


def test_writes_jsonl_and_tensorboard(tmp_path):
  writer = writer_lib.MetricWriter(str(tmp_path))
  writer.write(3, 'train', {'loss': 0.5})
  writer.close()
  assert _records(tmp_path)[0]['loss'] == 0.5 and _records(tmp_path)[0]['step'] == 3
  assert list((tmp_path / 'tensorboard').iterdir()), 'no TensorBoard event file'


def test_without_tensorflow_keeps_jsonl(tmp_path, monkeypatch, caplog):
  monkeypatch.setitem(sys.modules, 'tensorflow', None)  # makes `import tensorflow` fail
  writer = writer_lib.MetricWriter(str(tmp_path))
  writer.write(1, 'validation', {'psnr': 27.0})
  writer.write(2, 'validation', {'psnr': 27.5})
  writer.close()
  assert [r['psnr'] for r in _records(tmp_path)] == [27.0, 27.5]
  assert not (tmp_path / 'tensorboard').exists()
  assert 'TensorBoard events are off' in caplog.text
