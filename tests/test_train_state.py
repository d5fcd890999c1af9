"""The train state's initialisation traces the net once, even after a config check shaped it."""

import collections

import flax.linen as nn
import jax
import optax

from dxnet_jax import models
from dxnet_jax.train import state as state_lib

_TRACES = collections.Counter()


class _CountingNet(nn.Module):
  """A one-conv net that counts, per tag, how often it is traced."""

  tag: str

  @nn.compact
  def __call__(self, x, train: bool):
    _TRACES[self.tag] += 1
    return nn.Conv(2, (3, 3))(x)


def test_shaping_then_initialising_the_same_model_traces_it_once():
  model = _CountingNet('once')
  shape = (1, 8, 8, 1)
  abstract = models.init_variables(model, shape, abstract=True)
  assert _TRACES['once'] == 1
  tx = optax.sgd(0.1)
  state = jax.jit(lambda: state_lib.create_train_state(model, tx, shape, seed=0))()
  assert _TRACES['once'] == 1, 'the train state traced the net again'
  assert jax.tree.map(lambda a: (a.shape, a.dtype), abstract['params']) == jax.tree.map(
      lambda a: (a.shape, a.dtype), state.params
  )


def test_one_trace_per_model_and_input_shape():
  models.init_variables(_CountingNet('twice'), (1, 8, 8, 1), abstract=True)
  models.init_variables(_CountingNet('twice'), (1, 8, 8, 1), abstract=True)
  assert _TRACES['twice'] == 1, 'equal modules share one trace'
  models.init_variables(_CountingNet('twice'), (1, 8, 8, 2), abstract=True)
  assert _TRACES['twice'] == 2, 'another input shape is another program'
