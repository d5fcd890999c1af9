"""xla_cpu.fusion: same values and gradients, and XLA computes a value (or gradient) once for its many
readers."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax

from unittest import mock

import pytest

from dxnet_jax import models
from dxnet_jax.xla_cpu import dense_block, fusion, native_conv


def test_values_are_unchanged_including_infinities_and_nans():
  x = jnp.array([0.0, -2.5, 3.0, jnp.inf, -jnp.inf, jnp.nan, 1e30])
  np.testing.assert_array_equal(jax.jit(fusion.materialized)(x), x)
  ints = jnp.arange(3)
  assert fusion.materialized(ints) is ints


def test_gradient_materialized_is_the_identity_to_every_derivative_order():
  # Sharpness analysis takes Hessian-vector products (jvp of grad) through the models.
  x = jnp.array([0.5, -1.0, 2.0])
  f = lambda x: jnp.sum(jnp.sin(fusion.gradient_materialized(x) * x))
  g = lambda x: jnp.sum(jnp.sin(x * x))
  np.testing.assert_allclose(jax.grad(f)(x), jax.grad(g)(x), rtol=1e-6)
  hvp = lambda h: jax.jvp(jax.grad(h), (x,), (jnp.ones_like(x),))[1]
  np.testing.assert_allclose(hvp(f), hvp(g), rtol=1e-6)


def _backward_fusion_operand_counts(hlo_text: str, keep) -> list:
  """Operands of each backward-pass fusion whose source path satisfies `keep(path)`."""
  counts = []
  for m in re.finditer(
      r'^\s*%?\S+ = \S+ fusion\((.*?)\), kind=.*?op_name="([^"]*)"', hlo_text, re.M
  ):
    operands, path = m.groups()
    if 'transpose(' in path and keep(path):
      counts.append(operands.count('%'))
  return counts


def _gradient_hlo(model) -> str:
  """The compiled gradient of a training-mode classification loss, as HLO text. Lowered from the
  variables' shapes: no initialiser compiled (its values do not change the program)."""
  x, y = jnp.ones((2, 8, 8, 3)), jnp.zeros((2,), jnp.int32)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))

  def loss(params, batch_stats):
    logits, _ = model.apply(
        {'params': params, 'batch_stats': batch_stats}, x, train=True, mutable=['batch_stats']
    )
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  lowered = jax.jit(jax.grad(loss)).lower(variables['params'], variables['batch_stats'])
  return lowered.compile().as_text()


@pytest.mark.slow
def test_remat_speed_reads_each_layer_output_gradient_from_one_buffer():
  # Under remat='speed' a dense layer's output gradient is the sum of every later layer's
  # piece. Fused into each of the 3x3 convolution's nine shifted copies it was recomputed nine
  # times (DenseNet-BC 16-16-16 step 1.6x slower); materialised, each copy reads one buffer.
  # (The 'matmul' form of the 3x3 convolution; the native kernel reads its operand as a buffer.)
  with mock.patch.object(native_conv, 'preferred', lambda *args: False):
    # One block of three layers: each layer's output gradient is a sum of later readers' pieces.
    model = models.create('densenet_bc_k12_16', blocks=(3,), remat='speed', kernels='cpu')
    hlo = _gradient_hlo(model)
  counts = _backward_fusion_operand_counts(hlo, lambda path: path.endswith('conv2/slice'))
  assert len(counts) == 3 * 8, counts  # three layers, eight shifted copies besides the centre
  assert max(counts) == 1, counts


def test_gradient_through_product_passes_gradients_unchanged_to_every_order():
  x = jnp.arange(12.0).reshape(2, 6) / 7 - 0.5
  f = lambda x: jnp.sum(jnp.sin(fusion.gradient_through_product(x) * x))
  g = lambda x: jnp.sum(jnp.sin(x * x))
  np.testing.assert_array_equal(jax.jit(jax.grad(f))(x), jax.jit(jax.grad(g))(x))
  hvp = lambda h: jax.jvp(jax.grad(h), (x,), (jnp.ones_like(x),))[1]
  np.testing.assert_allclose(hvp(f), hvp(g), rtol=1e-6)
  assert fusion.gradient_through_product(x) is x


def _first_xunit_backward_operand_counts(through_product: bool) -> list:
  """Operands of each backward fusion of a small DxNet's first dense layer's xUnit."""
  identity = lambda y: y
  with mock.patch.object(
      dense_block,
      'gradient_through_product',
      fusion.gradient_through_product if through_product else identity,
  ):
    hlo = _gradient_hlo(models.create('dxnet_k12_12', blocks=(4,), kernels='cpu'))
  return _backward_fusion_operand_counts(hlo, lambda path: 'trunk/block0/layer0/xunit/' in path)


@pytest.mark.slow
def test_xunit_output_gradient_is_summed_once_before_its_readers():
  # The first layer's output gradient is a sum over the three later layers' pieces (and the
  # final BatchNorm's). Left to XLA, that sum sat inside several of the xUnit's backward fusions
  # (28-37 operands each); through the product, each reads one buffer (12 operands at most).
  # One 4-layer block shows it (a second block, compiled twice, added nothing to the check).
  fused = _first_xunit_backward_operand_counts(through_product=False)
  once = _first_xunit_backward_operand_counts(through_product=True)
  assert sum(c > 20 for c in fused) >= 2, fused  # the premise: the sum is recomputed
  assert once and max(once) <= 12, once
