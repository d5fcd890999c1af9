"""Where a training step's time goes: XLA ops of one jitted step, grouped, from a JAX trace.

    python -m benchmarks.profile_step [--net dxnet_denoise_444] [--batch 16] [--image 50,50,1]
                                      [--steps 3] [--top 15] [--kernels xla] [--trace-dir DIR]
                                      [--remat speed] [--wide 10]

Traces `--steps` steps (after warm-up) with `jax.profiler` (Perfetto JSON), sums each XLA op's
time per step, and prints four tables: op kinds (YNNPACK/XNNPACK library calls, FFTs, plain
dots/convolutions, fusions whose name says they copy or transpose, other fusions); the parts of
the net the ops belong to, forward and backward (read from the compiled step's HLO metadata:
bn1, conv1, bn2, conv2, xunit of the dense layers, transitions, concatenations...); the
`--top` single ops; and the `--wide` fusions that read the most arrays. A fusion with dozens of
operands is XLA computing a sum (a gradient read by many later layers) inside its consumer;
two such fusions of the same size at one place compute that sum twice. Op times are summed
over XLA's worker threads, so they add up to more than the wall time when ops run in parallel;
both are printed.
"""

import argparse
import collections
import glob
import gzip
import json
import re
import tempfile
import time

import jax

from benchmarks import steps, timing
from dxnet_jax import kernels

# Trace events that are not XLA ops: Python frames, the executor's own spans, the dispatch.
_NOT_OPS = ('$', 'ThunkExecutor', 'PjitFunction')


def op_kind(name: str) -> str:
  """A coarse kind of an XLA op from its HLO instruction name."""
  base = re.sub(r'\.\d+$', '', name)
  if base.startswith(('ynn', 'xnn')):
    return 'library (YNN/XNN) calls'
  if base.startswith('fft'):
    return 'FFTs'
  if base.startswith(('custom-call', 'ffi_call')):
    return 'native kernels (custom calls)'
  if base.startswith(('dot', 'convolution')):
    return 'dots/convolutions'
  if 'copy' in base or 'transpose' in base:
    return 'copy/transpose fusions'
  return 'other fusions'


# Parts of a DenseNet/DxNet a traced op can belong to, in the order they are looked for in the
# op's source path (an xUnit's BatchNorms are 'xunit', not 'bn1'/'bn2').
PARTS = ('xunit', 'bn1', 'conv1', 'bn2', 'conv2', 'transition', 'stem', 'concatenate')
UNATTRIBUTED = 'no source (made by XLA)'


def op_sources(hlo_text: str) -> dict:
  """{HLO instruction name: its `op_name` path} from a compiled module's metadata."""
  return dict(
      m.groups() for m in re.finditer(r'^\s*%?([\w.\-]+) = .*?op_name="([^"]*)"', hlo_text, re.M)
  )


def _direction(path: str) -> str:
  return 'backward' if 'transpose(' in path else 'forward'


def op_places(hlo_text: str) -> dict:
  """{HLO instruction name: (direction, part)} from a compiled module's `op_name` metadata.

  Direction is 'backward' for ops of the transposed (gradient) computation; part is the first
  of PARTS in the op's path, else 'other'. Instructions XLA made itself (layout copies,
  weight-gradient transposes) carry no metadata and are left out: see `UNATTRIBUTED`.
  """
  places = {}
  for name, path in op_sources(hlo_text).items():
    segments = re.split(r'[/.]', path)
    part = next((p for p in PARTS if any(seg.startswith(p) for seg in segments)), 'other')
    places[name] = (_direction(path), part)
  return places


def fusion_operands(hlo_text: str) -> dict:
  """{fusion name: number of operands} for the fusions the step's entry computation calls."""
  entry = hlo_text[hlo_text.find('\nENTRY') :]
  return {
      m.group(1): len(re.findall(r'%', m.group(2)))
      for m in re.finditer(r'^\s*%?([\w.\-]+) = \S+ fusion\((.*?)\), kind=', entry, re.M)
  }


def wide_fusion_rows(ops: dict, operands: dict, sources: dict, top: int) -> list:
  """Rows [fusion, operands, direction, where, ms/step] of the `top` fusions by operand count.

  'where' is the op's path from the model's trunk on (its module path, or '-' if XLA made it).
  """
  widest = sorted(operands, key=lambda name: (-operands[name], name))[:top]
  rows = []
  for name in widest:
    path = sources.get(name)
    where = re.sub(r'^.*?(trunk/|backbone/)', '', path) if path else '-'
    rows.append(
        [name, operands[name], _direction(path) if path else '-', where, ops.get(name, 0.0) * 1e3]
    )
  return rows


def op_times(trace_file: str, steps_traced: int) -> dict:
  """{op name: seconds per step} from a Perfetto trace written by `jax.profiler.trace`."""
  with gzip.open(trace_file) as f:
    events = json.load(f)['traceEvents']
  totals = collections.Counter()
  for event in events:
    if event.get('ph') == 'X' and not event['name'].startswith(_NOT_OPS):
      totals[event['name']] += event['dur'] * 1e-6 / steps_traced
  return dict(totals)


def part_rows(ops: dict, places: dict) -> list:
  """Table rows [part, forward ms, backward ms, total ms, share] from op times and `op_places`.

  Ops without a source have no known direction: their forward and backward cells are '-'.
  """
  by_part = collections.defaultdict(lambda: [0.0, 0.0])
  for name, seconds in ops.items():
    direction, part = places.get(name, ('backward', UNATTRIBUTED))
    by_part[part][direction == 'backward'] += seconds
  total = sum(ops.values())
  rows = []
  for part, (f, b) in sorted(by_part.items(), key=lambda kv: -sum(kv[1])):
    known = part != UNATTRIBUTED
    rows.append(
        [
            part,
            f * 1e3 if known else '-',
            b * 1e3 if known else '-',
            (f + b) * 1e3,
            f'{100 * (f + b) / total:.1f}%',
        ]
    )
  return rows


def main():
  kernels.prepare_process()
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--net', default='dxnet_denoise_444')
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--image', default='50,50,1', help='H,W,C of one input')
  parser.add_argument('--kernels', default='auto', help="the models' `kernels` setting")
  parser.add_argument('--steps', type=int, default=3)
  parser.add_argument('--top', type=int, default=15)
  parser.add_argument('--wide', type=int, default=10, help='fusions with the most operands')
  parser.add_argument('--trace-dir', default=None, help='keep the trace here (default: temp)')
  parser.add_argument(
      '--remat',
      default='',
      choices=['', 'on', 'memory', 'speed'],
      help="dense blocks' remat (default: none)",
  )
  args = parser.parse_args()
  remat = {'': {}, 'on': {'remat': True}}.get(args.remat, {'remat': args.remat})
  work = steps.Workload(args.net, args.batch, tuple(int(v) for v in args.image.split(',')))
  run, compiled, _ = steps.jax_step(work, **remat, kernels=args.kernels)
  hlo_text = compiled.as_text()
  places = op_places(hlo_text)
  for _ in range(3):
    timing.block(run())
  trace_dir = args.trace_dir or tempfile.mkdtemp(prefix='profile_step_')
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    start = time.perf_counter()
    for _ in range(args.steps):
      timing.block(run())
    wall = (time.perf_counter() - start) / args.steps
  trace_file = sorted(glob.glob(f'{trace_dir}/**/*.trace.json.gz', recursive=True))[-1]
  ops = op_times(trace_file, args.steps)
  total = sum(ops.values())
  kinds = collections.Counter()
  for name, seconds in ops.items():
    kinds[op_kind(name)] += seconds
  print(
      f'# {work.name}, batch {work.batch}x{args.image}, remat {args.remat or "off"}, '
      f'{timing.machine()}'
  )
  print(
      f'# {args.steps} traced steps: wall {wall * 1e3:.0f} ms/step (traced), op time '
      f'{total * 1e3:.0f} ms/step, {len(ops)} ops; trace: {trace_file}'
  )
  timing.print_table(
      ['kind', 'ms/step', 'share of op time'],
      [[k, s * 1e3, f'{100 * s / total:.1f}%'] for k, s in kinds.most_common()],
  )
  print()
  timing.print_table(
      ['part', 'forward ms/step', 'backward ms/step', 'ms/step', 'share of op time'],
      part_rows(ops, places),
  )
  print()
  timing.print_table(
      ['op', 'kind', 'ms/step', 'share of op time'],
      [
          [n, op_kind(n), s * 1e3, f'{100 * s / total:.1f}%']
          for n, s in collections.Counter(ops).most_common(args.top)
      ],
  )
  print()
  timing.print_table(
      ['fusion', 'operands', 'direction', 'where', 'ms/step'],
      wide_fusion_rows(ops, fusion_operands(hlo_text), op_sources(hlo_text), args.wide),
  )


if __name__ == '__main__':
  main()
