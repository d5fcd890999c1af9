"""XLA flag helper: string form, environment update, and a compile with the options."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from dxnet_jax.ops import xla_flags


def test_flag_string():
  assert xla_flags.as_flag_string({'xla_a': True, 'xla_b': 'X'}) == '--xla_a=true --xla_b=X'


def test_set_after_initialisation_raises():
  jnp.zeros(1).block_until_ready()
  with pytest.raises(RuntimeError, match='before JAX initialises'):
    xla_flags.set_xla_flags(xla_flags.MEMORY_OPTIMIZED_SCHEDULER)


def test_set_before_initialisation_in_a_fresh_process():
  code = (
      'import os; os.environ["XLA_FLAGS"] = "--xla_cpu_scheduler_type=X --xla_cpu_ftz=true"\n'
      'from dxnet_jax.ops import xla_flags\n'
      'print(xla_flags.set_xla_flags(xla_flags.MEMORY_OPTIMIZED_SCHEDULER))\n'
      'import jax.numpy as jnp; print(float(jnp.ones(3).sum()))'
  )
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  flags, total = out.stdout.split('\n')[:2]
  assert flags == '--xla_cpu_ftz=true --xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED'
  assert total == '3.0'


def test_options_compile_per_function():
  f = jax.jit(lambda x: jnp.tanh(x @ x).sum())
  x = jnp.ones((8, 8))
  compiled = f.lower(x).compile(compiler_options=xla_flags.MEMORY_OPTIMIZED_SCHEDULER)
  assert float(compiled(x)) == pytest.approx(float(f(x)))
