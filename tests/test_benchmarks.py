"""The benchmark scripts' plumbing: each script runs at a tiny size and prints its table with
sane values (their speeds are read from the tables, not tested); the PyTorch versions of the
layer ops compute what the JAX ones do."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from benchmarks import depthwise, host_malloc, layer_ops, profile_step, timing, torch_nets
from benchmarks import bm3d_baseline, input_pipeline, memory, train_step, xla_flags
from dxnet_jax import models, pretrained
from dxnet_jax.xla_cpu import native_build
from test_startup import tiny_copy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A DxNet 2-1 denoiser (growth rate 4), registered for a test under this name in both the
# registry and benchmarks/torch_nets.py: the scripts' plumbing and the PyTorch comparison on a
# net a fraction of DxNet 4-4-4's size, whose compiles dominated these tests.
TINY = 'dxnet_denoise_tiny'


@pytest.fixture
def tiny_net(monkeypatch):
  spec = models.MODELS['dxnet_denoise_444']
  tiny = dataclasses.replace(spec, kwargs={**spec.kwargs, 'blocks': (2, 1), 'growth_rate': 4})
  monkeypatch.setitem(models.MODELS, TINY, tiny)
  monkeypatch.setitem(
      torch_nets.NETS, TINY, lambda: torch_nets.DenseDenoiser(1, (2, 1), 4, xunit=True)
  )
  return TINY


def test_nets_argument_takes_groups_and_names():
  names = [w.name for w in train_step._workloads('cifar,dxnet105')]
  assert names == ['densenet_bc_k12_16', 'dxnet_k12_12', 'dxnet105']
  assert len(train_step._workloads('all')) == 6
  with pytest.raises(SystemExit, match="unknown \\['nope'\\]"):
    train_step._workloads('cifar,nope')


def test_torch_variants_per_device():
  assert set(train_step._torch_variants('cpu')) == {'torch 1t', 'torch 2t'}
  assert train_step._torch_variants('cuda') == {'torch cuda': {'device': 'cuda'}}
  assert set(train_step._torch_variants('auto')) == {'torch 1t', 'torch 2t'}  # CI has no GPU


def test_depthwise_table_and_json(tmp_path, monkeypatch, capsys):
  out = tmp_path / 'dw.json'
  monkeypatch.setattr(depthwise, 'SHAPES', [('tiny', (2, 8, 8, 3))])
  monkeypatch.setattr(
      sys,
      'argv',
      [
          'depthwise',
          '--impls',
          'xla,fft,shift_fft',
          '--reps',
          '1',
          '--calls',
          '2',
          '--kernel',
          '3',
          '--json',
          str(out),
      ],
  )
  depthwise.main()
  table = capsys.readouterr().out
  assert 'tiny' in table and 'fwd+bwd' in table
  measured = json.loads(out.read_text())['ms']['tiny']
  assert set(measured) == {'xla', 'fft', 'shift_fft'}
  assert all(v['fwd'] > 0 and v['fwd+bwd'] > 0 for v in measured.values())


@pytest.mark.slow
@pytest.mark.parametrize('remat', [True, False])
def test_train_step_table_with_torch(tmp_path, monkeypatch, capsys, tiny_net, remat):
  """Both kernel settings without remat; the 'cpu' one with and without remat."""
  kernels = 'cpu' if remat else 'cpu,xla'
  out = tmp_path / 'ts.json'
  monkeypatch.setitem(
      train_step.WORKLOADS, 'tiny', [train_step.steps.Workload(tiny_net, 2, (12, 12, 1))]
  )
  monkeypatch.setattr(
      sys,
      'argv',
      [
          'train_step',
          '--nets',
          'tiny',
          '--kernels',
          kernels,
          '--reps',
          '1',
          '--json',
          str(out),
      ]
      + ([] if remat else ['--no-remat']),
  )
  train_step.main()
  rows = json.loads(out.read_text())['rows']
  variants = [r[2] for r in rows]
  assert 'jax cpu' in variants and ('jax xla' in variants) != remat
  assert ('jax cpu +remat' in variants) == remat
  assert all(r[3] > 0 for r in rows)
  printed = capsys.readouterr().out
  # The JAX and PyTorch builds of the net have the same parameters (main asserts it).
  assert f'{tiny_net}: {models.parameter_count(tiny_net):,} parameters in both' in printed
  assert 'jax cpu compiled in' in printed


@pytest.mark.slow
def test_host_malloc_table_compares_both_allocators(monkeypatch, capsys):
  monkeypatch.setitem(host_malloc._IMAGES, 'dxnet_denoise_444', (2, (12, 12, 1)))
  monkeypatch.setattr(
      sys, 'argv', ['host_malloc', '--nets', 'dxnet_denoise_444', '--rounds', '1', '--steps', '1']
  )
  host_malloc.main()
  rows = [
      line
      for line in capsys.readouterr().out.splitlines()
      if line.startswith('| dxnet_denoise_444')
  ]
  assert [r.split('|')[2].strip() for r in rows] == ['system', 'keep']
  compile_s = [float(r.split('|')[8]) for r in rows]
  assert all(s > 0 for s in compile_s)


_SPLIT_STEP = r"""
import json

import jax
jax.config.update('jax_num_cpu_devices', 2)
from benchmarks import steps
work = steps.Workload('dxnet_denoise_444', 4, (12, 12, 1))
tiny = dict(blocks=(2, 1), growth_rate=4, stem_features=8)
one = steps.jax_step(work, **tiny)[0]
two, compiled, _ = steps.jax_step(work, devices=jax.devices()[:2], **tiny)
losses = [[float(one()), float(two())] for _ in range(3)]
print(json.dumps({'losses': losses, 'devices': len(compiled.input_shardings[0][1].device_set)}))
"""


@pytest.mark.slow
def test_step_split_across_cpu_devices_is_the_same_step():
  env = dict(
      os.environ,
      JAX_PLATFORMS='cpu',
      PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
  )
  out = subprocess.run(
      [sys.executable, '-c', _SPLIT_STEP],
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
      check=True,
  ).stdout
  result = json.loads(out.strip().splitlines()[-1])
  assert result['devices'] == 2
  # BatchNorm statistics over the whole batch: the same losses, step after step.
  for one, two in result['losses']:
    assert two == pytest.approx(one, rel=1e-4)


def test_profile_step_groups_xla_ops_by_kind():
  kind = profile_step.op_kind
  assert kind('ynn_fusion.12') == 'library (YNN/XNN) calls'
  assert kind('fft.3') == 'FFTs'
  assert kind('dot.81') == kind('convolution') == 'dots/convolutions'
  assert kind('copy_bitcast_fusion.1') == kind('transpose_copy_fusion') == 'copy/transpose fusions'
  assert kind('add_maximum_fusion') == 'other fusions'


def test_profile_step_places_ops_in_the_net():
  hlo = '\n'.join(
      [
          '  %ynn_fusion.3 = f32[8] fusion(%p), metadata={op_name="jit(step)/transpose(jvp(Net))/'
          'trunk/block0/layer1/layer1._norm_relu/bn1/reduce_sum" stack_frame_id=1}',
          '  %fft.2 = c64[2,4] fft(%q), metadata={op_name="jit(step)/jvp(Net)/block0/layer1/xunit/'
          'bn/jit(fft)/fft"}',
          '  %concatenate.1 = f32[2,8] concatenate(%a, %b), metadata={op_name="jit(step)/jvp(Net)/'
          'block0/concatenate"}',
          '  %copy.7 = f32[8,2] copy(%c)',
      ]
  )
  places = profile_step.op_places(hlo)
  assert places == {
      'ynn_fusion.3': ('backward', 'bn1'),
      'fft.2': ('forward', 'xunit'),
      'concatenate.1': ('forward', 'concatenate'),
  }
  rows = profile_step.part_rows({'ynn_fusion.3': 0.002, 'fft.2': 0.001, 'copy.7': 0.001}, places)
  assert rows[0] == ['bn1', 0.0, 2.0, 2.0, '50.0%']
  assert rows[-1][0] == profile_step.UNATTRIBUTED and rows[-1][1:3] == ['-', '-']


def test_profile_step_lists_the_fusions_that_read_the_most_arrays():
  hlo = '\n'.join(
      [
          '%fused_computation.1 (param_0: f32[8]) -> f32[8] {',
          '  %param_0 = f32[8]{0} parameter(0)',
          '}',
          '',
          'ENTRY %main (a: f32[8], b: f32[8], c: f32[8]) -> f32[8] {',
          '  %add_fusion.2 = f32[8]{0} fusion(%a, %b, %c), kind=kLoop, calls=%fused_computation.1, '
          'metadata={op_name="jit(step)/transpose(jvp(Net))/Net.features/backbone/trunk/block0/'
          'layer1/xunit/mul"}',
          '  %copy_fusion = f32[8]{0} fusion(%a), kind=kLoop, calls=%fused_computation.1',
          '  ROOT %dot.1 = f32[8]{0} dot(%add_fusion.2, %copy_fusion)',
          '}',
      ]
  )
  operands = profile_step.fusion_operands(hlo)
  assert operands == {'add_fusion.2': 3, 'copy_fusion': 1}
  rows = profile_step.wide_fusion_rows(
      {'add_fusion.2': 0.004}, operands, profile_step.op_sources(hlo), top=5
  )
  assert rows == [
      ['add_fusion.2', 3, 'backward', 'trunk/block0/layer1/xunit/mul', 4.0],
      ['copy_fusion', 1, '-', '-', 0.0],
  ]


def _tables(printed):
  """Markdown tables of a benchmark's output, each a list of its data rows' cells."""
  tables, current = [], None
  for line in printed.splitlines():
    if line.startswith('|'):
      if current is None:
        current = []
        tables.append(current)
      current.append([c.strip() for c in line.strip('|').split('|')])
    else:
      current = None
  return [t[2:] for t in tables]  # drop each header and its rule


@pytest.mark.slow
def test_profile_step_prints_where_a_real_step_goes(tmp_path, monkeypatch, capsys, tiny_net):
  monkeypatch.setattr(
      sys,
      'argv',
      [
          'profile_step',
          '--net',
          tiny_net,
          '--batch',
          '2',
          '--image',
          '12,12,1',
          '--steps',
          '2',
          '--top',
          '5',
          '--trace-dir',
          str(tmp_path),
          '--remat',
          'speed',
      ],
  )
  profile_step.main()
  out = capsys.readouterr().out
  assert 'remat speed' in out.splitlines()[0]
  kinds, parts, top, wide = _tables(out)
  share = lambda rows: sum(float(r[-1].rstrip('%')) for r in rows)
  assert 99.0 < share(kinds) < 101.0  # the kinds' shares add up to all op time
  assert 99.0 < share(parts) < 101.0  # and so do the parts'
  # The xUnit's default depthwise on CPU: native kernels where they build, else FFTs.
  expected = 'native kernels (custom calls)' if native_build.available() else 'FFTs'
  assert expected in [r[0] for r in kinds]
  assert {'xunit', 'conv1'} <= {r[0] for r in parts}
  assert len(top) == 5
  counts = [int(r[1]) for r in wide]
  assert counts and counts == sorted(counts, reverse=True)  # the widest fusions first
  assert list(tmp_path.glob('**/*.trace.json.gz'))


@pytest.mark.parametrize(
    'op,out',
    [
        ('bn_relu', 8),
        ('conv1x1', 5),
        ('conv3x3', 3),
        ('depthwise9x9', 8),
        ('xunit', 8),
        ('concat', 11),
    ],
)
def test_layer_ops_time_the_same_op_in_jax_and_torch(op, out):
  spec = layer_ops.LayerOp(op, 'test', (2, 10, 10, 8), out)
  f, inputs = layer_ops.jax_op(spec)
  y, grads = layer_ops.jax_forward_backward(f)(*inputs, layer_ops.cotangent_for(spec))
  torch_forward, torch_forward_backward, _ = layer_ops.torch_op(spec, inputs)
  nhwc = lambda t: t.detach().permute(0, 2, 3, 1).numpy()
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
  with torch.no_grad():
    close(nhwc(torch_forward()), y)
  torch_y, torch_dx = torch_forward_backward()
  close(nhwc(torch_y), y)
  close(nhwc(torch_dx), grads[0])


@pytest.mark.slow
def test_layer_ops_prints_a_row_per_op(monkeypatch, capsys):
  monkeypatch.setattr(
      layer_ops,
      'OPS',
      [
          layer_ops.LayerOp('conv3x3', 'tiny', (2, 8, 8, 4), 2),
          layer_ops.LayerOp('concat', 'tiny', (2, 8, 8, 4), 6),
      ],
  )
  monkeypatch.setattr(sys, 'argv', ['layer_ops', '--reps', '2', '--ops', 'concat'])
  layer_ops.main()
  (rows,) = _tables(capsys.readouterr().out)
  assert [r[:3] for r in rows] == [['concat', 'tiny', '2x8x8x4->6']]
  assert all(float(c) > 0 for c in rows[0][3:])


def test_layer_ops_says_how_to_install_torch(monkeypatch):
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` now raises ImportError
  monkeypatch.setattr(sys, 'argv', ['layer_ops', '--reps', '1'])
  with pytest.raises(SystemExit, match=r'pip install -e "\.\[bench\]"'):
    layer_ops.main()


def _hold_lock(lock):
  """A process that holds an exclusive lock on `lock` for 1.5 s (returns once it holds it)."""
  holder = subprocess.Popen(
      [
          sys.executable,
          '-c',
          'import fcntl, sys, time\n'
          f'f = open({str(lock)!r}, "a"); fcntl.flock(f, fcntl.LOCK_EX)\n'
          'print("held", flush=True); time.sleep(1.5)',
      ],
      stdout=subprocess.PIPE,
      text=True,
  )
  assert holder.stdout.readline().strip() == 'held'
  return holder


@pytest.mark.parametrize('use_lock', [True, False])
def test_timing_waits_for_the_lock_another_process_holds(tmp_path, monkeypatch, use_lock):
  lock = tmp_path / 'timing.lock'
  if use_lock:
    monkeypatch.setenv(timing.LOCK_ENV, str(lock))
  else:
    monkeypatch.delenv(timing.LOCK_ENV, raising=False)
  holder = _hold_lock(lock)
  start = time.perf_counter()
  t = timing.time_interleaved({'noop': lambda: 0}, reps=1)
  waited = time.perf_counter() - start
  holder.wait()
  assert set(t) == {'noop'}
  # With the variable set it times only once the other process lets go; without, at once.
  assert (waited > 0.5) == use_lock, waited


def _script(args, timeout=600):
  """Runs a benchmark script as a user does (`python -m benchmarks.NAME ...`); its stdout."""
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  done = subprocess.run(
      [sys.executable, '-m', *args],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=timeout,
  )
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  return done.stdout


@pytest.mark.slow
def test_bm3d_baseline_scores_cameraman_as_published(capsys):
  # In this process, as the other scripts' tests run theirs: BM3D itself is the time.
  assert bm3d_baseline.main(['--set', 'Set12', '--limit', '1', '--sigma', '50']) == 0
  out = capsys.readouterr().out
  (row,) = re.findall(r'^Set12 +1 images +PSNR ([\d.]+) dB +SSIM ([\d.]+)$', out, re.M)
  psnr, ssim = map(float, row)
  # BM3D on Cameraman (Set12's 01.png) at sigma 50: 26.13 dB in DnCNN's table (Zhang et al.
  # 2017, table 3). Another noise draw and the bm3d package's later BM3D (26.43 dB measured
  # here) move it by tenths of a dB; a broken pipeline (wrong sigma, clipped or misaligned
  # images) moves it by dBs.
  assert abs(psnr - 26.13) < 0.5, psnr
  assert 0.7 < ssim < 0.9, ssim


@pytest.mark.slow
def test_memory_table_adds_up_and_remat_lowers_the_peak(monkeypatch, capsys, tiny_net):
  monkeypatch.setattr(
      sys,
      'argv',
      ['memory', '--nets', tiny_net, '--batch', '2', '--image', '12,12,1', '--settings', '0,1'],
  )
  memory.main()
  (rows,) = _tables(capsys.readouterr().out)
  assert [r[:2] for r in rows] == [[tiny_net, 'remat off'], [tiny_net, 'remat on']]
  params_mib = models.parameter_count(tiny_net) * 4 / 2**20
  for _, _, temp, args, out_mib, _, peak, _ in rows:
    temp, args, out_mib, peak = map(float, (temp, args, out_mib, peak))
    # The step's arguments: the parameters and Adam's two moments (3 x float32 parameters), plus
    # the BatchNorm statistics and a 2x12x12 batch (a few KiB).
    assert 3 * params_mib <= args < 3 * params_mib * 1.05, (args, params_mib)
    assert peak == pytest.approx(temp + args + out_mib, abs=0.02)  # printed to 3 digits
  off, on = (float(r[6]) for r in rows)
  assert on < off  # recomputation keeps fewer activations
  assert float(rows[0][7]) == 1 and float(rows[1][7]) == pytest.approx(off / on, rel=0.01)


@pytest.mark.slow
def test_xla_flags_times_each_candidate_and_keeps_the_loss(monkeypatch, capsys, tiny_net):
  monkeypatch.setattr(
      sys,
      'argv',
      ['xla_flags', '--net', tiny_net, '--batch', '2', '--image', '12,12,1', '--reps', '1']
      + ['--candidates', 'default,memory_scheduler'],
  )
  xla_flags.main()
  (rows,) = _tables(capsys.readouterr().out)
  assert [r[0] for r in rows] == ['default', 'memory_scheduler']
  assert all(float(r[2]) > 0 for r in rows) and float(rows[0][3]) == 1
  losses = [float(r[4]) for r in rows]
  assert losses[0] > 0 and losses[1] == pytest.approx(losses[0], rel=1e-3)  # printed to 3 digits


@pytest.mark.slow
def test_inference_memory_table_for_a_tiny_photo(tmp_path, monkeypatch, random_variables):
  # The script's model as a tiny copy (test_startup.tiny_copy): the processes it starts compile
  # a fraction of the shipped net; they inherit DXNET_PRETRAINED_DIR.
  model = tiny_copy('denoise_dxnet_444_s50_h200', tmp_path, random_variables)  # its default
  monkeypatch.setenv(pretrained.ENV_VAR, str(tmp_path))
  out = _script(
      ['benchmarks.inference_memory', '--sizes', '64x48', '--tile', '64', '--model', model]
  )
  window = int(re.search(r'tile 64 \(window (\d+) px\)', out).group(1))
  assert window > 64  # the tile and the receptive field's margins
  rows = [line.split() for line in out.splitlines() if re.match(r'\s*\d+x\d+', line)]
  assert [r[0] for r in rows] == [f'{window}x{window}', '64x48']
  for size, mpx, image_mib, peak, minus_window, wall, file_s, _ in rows:
    width, height = map(int, size.split('x'))
    assert float(mpx) == pytest.approx(width * height / 1e6, abs=0.05)
    assert float(image_mib) == pytest.approx(2 * width * height / 2**20, abs=0.05)
    # A JAX process holds at least its runtime and the model; no 64x48 photo needs 4 GiB.
    assert 100 < float(peak) < 4096
    assert 0 < float(file_s) <= float(wall)
  assert float(rows[0][4]) == 0  # the window row is the baseline of the '- window row' column


def test_input_pipeline_table_gives_batch_shapes_and_rates(monkeypatch, capsys):
  monkeypatch.setattr(sys, 'argv', ['input_pipeline', '--batches', '2', '--pipelines', '1,3,4'])
  input_pipeline.main()
  out = capsys.readouterr().out
  lines = out.strip().splitlines()
  assert lines[0].split(' | ')[0].strip() == 'pipeline'
  rows = [[c.strip() for c in line.split(' | ')] for line in lines[2:]]
  assert [r[0] for r in rows] == [
      'SR x4, 96 px HR patches',
      'denoising, 40 px, sigma 50',
      'denoising, 50 px, sigma 0-55',
  ]
  # SR inputs are the LR patches (96 / 4 = 24 px, colour); denoising inputs the gray patches.
  assert [r[2] for r in rows] == ['16x24x24x3', '32x40x40x1', '32x50x50x1']
  for _, batch, _, load_s, ms, rate in rows:
    assert float(load_s) >= 0 and float(ms) > 0
    assert float(rate.replace(',', '')) == pytest.approx(int(batch) * 1e3 / float(ms), rel=0.02)
