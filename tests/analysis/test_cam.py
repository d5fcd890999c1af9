"""Class activation maps on real (tiny, randomly initialised) classifiers of the model library."""

import functools
import os

import jax
import numpy as np
import pytest
from PIL import Image

from dxnet_jax import models
from dxnet_jax.analysis import cam

NUM_CLASSES = 5


@pytest.fixture(scope='module')
def nets(random_variables):
  """Both nets with generic variables made on the host (conftest's `random_variables`): a jitted
  init would compile each net's whole forward pass once more."""
  out = {}
  for name in ('densenet_bc_k12_16', 'dxnet_k12_12'):
    net = models.create(name, blocks=(1, 1), growth_rate=4, num_classes=NUM_CLASSES, xunit_kernel=3)
    variables = random_variables(models.init_variables(net, (1, 16, 16, 3), abstract=True), 1)
    # Non-trivial BatchNorm statistics and head bias, so the identity below is not 0 = 0.
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda x: x, variables)
    variables['batch_stats'] = jax.tree.map(
        lambda x: x + np.asarray(rng.uniform(0.1, 0.5, x.shape), x.dtype), variables['batch_stats']
    )
    head = dict(variables['params']['head'])
    head['bias'] = head['bias'] + np.asarray(rng.normal(size=NUM_CLASSES), np.float32)
    variables['params'] = {**variables['params'], 'head': head}
    out[name] = (net, variables)
  return out


def _images(n=4, size=16, seed=0):
  return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype(np.float32)


@pytest.mark.slow  # ~6 s of CPU: 4 compiles of the CAM and one of the logits per net
def test_cam_class_sum_identity(nets):
  x = _images()
  for name, (net, variables) in nets.items():
    # Jitted: one compile, where op-by-op dispatch compiles each of the net's ops.
    logits = np.asarray(jax.jit(functools.partial(net.apply, train=False))(variables, x))
    for classes in (None, np.array([0, 1, 2, 4])):
      c = cam.class_activation_maps(net, variables, x, classes, batch_size=3)
      want = logits.argmax(-1) if classes is None else classes
      np.testing.assert_array_equal(c.classes, want)
      np.testing.assert_allclose(c.logits, logits, rtol=1e-5, atol=1e-5)
      # The logit is the spatial mean of the CAM (before ReLU) plus the head bias.
      np.testing.assert_allclose(
          c.cams.mean(axis=(1, 2)) + c.bias, logits[np.arange(len(x)), want], rtol=1e-4, atol=1e-5
      )
      assert c.cams.shape == (4, 8, 8)  # one transition: 16 -> 8
      assert np.ptp(c.cams) > 0  # spatially varying, not a constant


def test_cam_follows_the_evidence(nets):
  # Zero the right half of a 64x64 input: far from the seam and the borders (the receptive
  # field is about 10 pixels) the features, hence the CAM, are constant; on the left they vary.
  net, variables = nets['dxnet_k12_12']
  x = _images(2, size=64)
  x[:, :, 32:] = 0.0
  c = cam.class_activation_maps(net, variables, x)
  assert c.cams.shape == (2, 32, 32)
  scale = np.abs(c.cams).max()
  right = c.cams[:, 8:24, 22:27]
  left = c.cams[:, 8:24, 5:10]
  assert right.std(axis=(1, 2)).max() < 1e-5 * scale
  assert left.std(axis=(1, 2)).min() > 1e-2 * scale


def test_normalize_and_overlay():
  cams = np.array([[[-1.0, 2.0], [0.5, 4.0]], [[-1.0, -2.0], [-3.0, -0.5]]], np.float32)
  heat = cam.normalize_cams(cams, (8, 8))
  assert heat.shape == (2, 8, 8)
  assert heat[0].max() == pytest.approx(1.0) and heat[0].min() >= 0.0
  assert np.all(heat[1] == 0)  # no positive evidence
  img = np.full((8, 8, 1), 0.5, np.float32)
  out = cam.overlay(img, heat[0], alpha=0.5)
  assert out.shape == (8, 8, 3) and out.min() >= 0 and out.max() <= 1
  # Hot corner (heat 1, jet: red) vs cold (heat 0, jet: dark blue).
  assert out[-1, -1, 0] > out[-1, -1, 2] and out[0, 0, 2] > out[0, 0, 0]
  with pytest.raises(ValueError, match='differ in size'):
    cam.overlay(img, heat[0][:4])


def test_figure_overlays_and_image_folder(nets, tmp_path):
  x = _images(3)
  display = (x - x.min()) / (x.max() - x.min())
  results = {name: cam.class_activation_maps(net, v, x) for name, (net, v) in nets.items()}
  path = cam.plot_cams(
      display,
      results,
      str(tmp_path / 'cams.png'),
      class_names=[f'class{i}' for i in range(NUM_CLASSES)],
      labels=np.array([0, 1, 2]),
  )
  w, h = Image.open(path).size
  assert (w, h) == (600, 630)  # 3 columns x 2.0 in, 3 rows x 2.1 in, 100 dpi
  files = cam.save_overlays(display, results['dxnet_k12_12'], str(tmp_path / 'per_image'))
  assert len(files) == 3 and all(Image.open(f).size == (16, 16) for f in files)

  folder = tmp_path / 'imgs'
  folder.mkdir()
  for i in range(2):
    Image.fromarray(np.full((20, 30, 3), 60 * i, np.uint8)).save(folder / f'{i}.png')
  (folder / 'notes.txt').write_text('not an image')
  images, names = cam.load_image_folder(str(folder), 16)
  assert images.shape == (2, 16, 16, 3) and names == ['0.png', '1.png']
  np.testing.assert_allclose(images[1], 60 / 255, atol=1e-6)
  assert os.path.exists(path)
