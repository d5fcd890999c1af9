"""Class activation maps (paper Fig. 5).

Our classifiers end in global average pooling followed by one dense layer, so the logit of class c
decomposes over positions (Zhou et al., "Learning Deep Features for Discriminative Localization",
CVPR 2016):

    logit_c = mean_{x,y} f(x, y) . W[:, c] + b_c,    CAM_c(x, y) = f(x, y) . W[:, c],

with f the final feature map (`model.apply(v, x, method='features')`) and W, b the head's kernel and
bias (`params['head']`). The paper compares where a DenseNet and a DxNet look: CAMs of the two,
side by side over the same images. For display a CAM is rectified (ReLU), bilinearly upsampled to
the image size and divided by its maximum, then drawn with the jet colormap over the image.

CLI:

    python -m dxnet_jax.analysis.cam --workdir DENSENET --workdir DXNET [--images DIR] --out DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from dxnet_jax import _optional
from dxnet_jax.analysis import figures


@dataclasses.dataclass
class Cams:
  """Raw class activation maps of one model on a batch.

  cams: [N, h, w] CAM of `classes` before ReLU, at the feature-map resolution.
  logits: [N, K]; classes: [N] the class each CAM is for; bias: [N] the head bias of that class
  (so `cams.mean((1, 2)) + bias == logits[arange(N), classes]`).
  """

  cams: np.ndarray
  logits: np.ndarray
  classes: np.ndarray
  bias: np.ndarray

  @property
  def predictions(self) -> np.ndarray:
    return self.logits.argmax(-1)

  @property
  def probabilities(self) -> np.ndarray:
    return np.asarray(jax.nn.softmax(jnp.asarray(self.logits), axis=-1))


def head_params(variables: Mapping[str, Any]) -> tuple[jax.Array, jax.Array]:
  """(kernel [C, K], bias [K]) of a classifier's dense head."""
  head = variables['params']['head']
  return head['kernel'], head['bias']


def class_activation_maps(
    model, variables: Mapping[str, Any], inputs, classes=None, *, batch_size: int = 64
) -> Cams:
  """Raw CAMs of `classes` (default: each image's predicted class) for model inputs.

  `inputs` are what the model takes (already normalised, NHWC). Batched so that large sets do
  not materialise every feature map at once.
  """
  kernel, bias = head_params(variables)

  @jax.jit
  def run(x):
    feats = model.apply(variables, x, train=False, method='features')
    maps = jnp.einsum('nhwc,ck->nhwk', feats.astype(jnp.float32), kernel.astype(jnp.float32))
    logits = model.apply(variables, x, train=False)
    return maps, logits

  inputs = np.asarray(inputs, np.float32)
  if inputs.ndim != 4:
    raise ValueError(f'inputs must be NHWC, got shape {inputs.shape}')
  maps, logits = [], []
  for start in range(0, len(inputs), batch_size):
    m, lg = run(jnp.asarray(inputs[start : start + batch_size]))
    maps.append(np.asarray(m))
    logits.append(np.asarray(lg))
  maps, logits = np.concatenate(maps), np.concatenate(logits)
  classes = logits.argmax(-1) if classes is None else np.asarray(classes, np.int64)
  if classes.shape != (len(inputs),):
    raise ValueError(f'need one class per image, got shape {classes.shape}')
  rows = np.arange(len(inputs))
  return Cams(
      cams=maps[rows, :, :, classes],
      logits=logits,
      classes=classes,
      bias=np.asarray(bias, np.float32)[classes],
  )


def normalize_cams(cams: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """ReLU, bilinear upsampling to `size` (H, W), division by the per-image maximum: [N, H, W]
  in [0, 1]. A CAM with no positive evidence stays all zero."""
  cams = np.maximum(np.asarray(cams, np.float32), 0.0)
  n = cams.shape[0]
  up = np.asarray(jax.image.resize(jnp.asarray(cams), (n,) + tuple(size), 'bilinear'))
  up = np.maximum(up, 0.0)
  peak = up.reshape(n, -1).max(axis=1)
  return up / np.where(peak > 0, peak, 1.0)[:, None, None]


def overlay(
    image: np.ndarray, heat: np.ndarray, *, alpha: float = 0.45, cmap: str = 'jet'
) -> np.ndarray:
  """RGB float image in [0, 1]: `heat` ([H, W] in [0, 1]) in `cmap` blended over `image`
  ([H, W], [H, W, 1] or [H, W, 3] in [0, 1])."""
  matplotlib = _optional.require('matplotlib', 'plots', 'heat-map overlays')
  image = np.asarray(image, np.float32)
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, axis=-1)
  if image.shape[:2] != heat.shape:
    raise ValueError(f'image {image.shape[:2]} and heat map {heat.shape} differ in size')
  colored = matplotlib.colormaps[cmap](np.clip(heat, 0, 1))[..., :3]
  return np.clip((1 - alpha) * np.clip(image, 0, 1) + alpha * colored, 0, 1)


def cam_figure(
    images: np.ndarray,
    results: Mapping[str, Cams],
    *,
    class_names: Sequence[str] | None = None,
    labels: np.ndarray | None = None,
    image_titles: Sequence[str] | None = None,
    alpha: float = 0.45,
):
  """A matplotlib figure, one row per image: the image (`images` in [0, 1], NHWC), then each
  model's CAM overlay, titled with the class the CAM is for and the model's probability of it.
  The image column is titled by `image_titles`, else by the true `labels`, else 'image'.
  """
  images = np.asarray(images, np.float32)
  n, height, width = images.shape[:3]
  names = list(results)
  plt = figures.pyplot()
  cols = 1 + len(names)
  fig, axes = plt.subplots(n, cols, figsize=(2.0 * cols, 2.1 * n), squeeze=False)

  def label(k):
    return class_names[k] if class_names is not None else str(int(k))

  heats = {name: normalize_cams(res.cams, (height, width)) for name, res in results.items()}
  for i in range(n):
    ax = axes[i, 0]
    gray = images.shape[-1] == 1
    ax.imshow(
        np.clip(images[i].squeeze(), 0, 1), cmap='gray' if gray else None, interpolation='nearest'
    )
    if image_titles is not None:
      title = image_titles[i]
    else:
      title = 'image' if labels is None else f'label: {label(labels[i])}'
    ax.set_title(title, fontsize=7)
    for j, name in enumerate(names):
      res = results[name]
      c = res.classes[i]
      ax = axes[i, 1 + j]
      ax.imshow(overlay(images[i], heats[name][i], alpha=alpha), interpolation='nearest')
      ax.set_title(f'{name}: {label(c)} ({res.probabilities[i, c]:.2f})', fontsize=7)
  for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
  fig.tight_layout()
  return fig


def plot_cams(
    images: np.ndarray,
    results: Mapping[str, Cams],
    path: str,
    *,
    class_names: Sequence[str] | None = None,
    labels: np.ndarray | None = None,
    image_titles: Sequence[str] | None = None,
    alpha: float = 0.45,
    dpi: int = 100,
) -> str:
  """`cam_figure` written to a PNG; returns its path."""
  fig = cam_figure(
      images,
      results,
      class_names=class_names,
      labels=labels,
      image_titles=image_titles,
      alpha=alpha,
  )
  return figures.save(fig, path, dpi)


def save_overlays(
    images: np.ndarray, cams: Cams, folder: str, *, prefix: str = 'cam', alpha: float = 0.45
) -> list[str]:
  """One overlay PNG per image (the image's own size), for use outside the comparison figure."""
  from PIL import Image

  images = np.asarray(images, np.float32)
  heats = normalize_cams(cams.cams, images.shape[1:3])
  os.makedirs(folder, exist_ok=True)
  paths = []
  for i in range(len(images)):
    rgb = (overlay(images[i], heats[i], alpha=alpha) * 255 + 0.5).astype(np.uint8)
    p = os.path.join(folder, f'{prefix}_{i:03d}_class{int(cams.classes[i])}.png')
    Image.fromarray(rgb).save(p)
    paths.append(p)
  return paths


# --------------------------------------------------------------------------------------------
# Images for the CLI.


def load_image_folder(
    folder: str, size: int, channels: int = 3, limit: int | None = None
) -> tuple[np.ndarray, list[str]]:
  """Images of a folder, centre-cropped to a square and resized to `size`: float [N, s, s, C]
  in [0, 1], with their file names."""
  from PIL import Image

  exts = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
  names = sorted(f for f in os.listdir(folder) if f.lower().endswith(exts))[:limit]
  if not names:
    raise ValueError(f'no images in {folder}')
  out = []
  for name in names:
    with Image.open(os.path.join(folder, name)) as im:
      im = im.convert('L' if channels == 1 else 'RGB')
      w, h = im.size
      s = min(w, h)
      im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
      im = im.resize((size, size), Image.BICUBIC)
      arr = np.asarray(im, np.float32) / 255.0
    out.append(arr[..., None] if arr.ndim == 2 else arr)
  return np.stack(out), names


def _normalise(images01: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
  mean, std = info.get('mean'), info.get('std')
  if mean is None:
    return images01
  return (images01 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def _denormalise(inputs: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
  mean, std = info.get('mean'), info.get('std')
  if mean is None:
    return np.clip(inputs, 0, 1)
  return np.clip(inputs * np.asarray(std, np.float32) + np.asarray(mean, np.float32), 0, 1)


def main(argv: Sequence[str] | None = None) -> str:
  parser = argparse.ArgumentParser(
      prog='python -m dxnet_jax.analysis.cam',
      description='Class activation maps of classifiers, side by side (paper Fig. 5).',
  )
  parser.add_argument(
      '--workdir',
      action='append',
      required=True,
      help="a classifier's training workdir; repeat to compare models",
  )
  parser.add_argument(
      '--name',
      action='append',
      default=None,
      help="column title per --workdir (default: the workdir's base name)",
  )
  parser.add_argument(
      '--images', default=None, help='folder of images (default: the first validation images)'
  )
  parser.add_argument('--num', type=int, default=6, help='number of images')
  parser.add_argument(
      '--class-of',
      choices=('prediction', 'label'),
      default='prediction',
      help="CAM of each model's predicted class, or of the true label",
  )
  parser.add_argument('--out', required=True, help='output folder')
  parser.add_argument(
      '--per-image', action='store_true', help='also write one overlay PNG per image and model'
  )
  args = parser.parse_args(argv)
  if args.name and len(args.name) != len(args.workdir):
    parser.error('give one --name per --workdir')
  _optional.require('matplotlib', 'plots', 'python -m dxnet_jax.analysis.cam').use('Agg')

  from dxnet_jax import data as data_lib
  from dxnet_jax.train import checkpoint

  loaded = [checkpoint.load_for_inference(w) for w in args.workdir]
  _, _, config0 = loaded[0]
  data = data_lib.build(config0, global_batch_size=max(args.num, 1), seed=0)
  info = dict(data.info)
  labels = None
  if args.images:
    images01, _ = load_image_folder(
        args.images, int(info['image_size']), int(info.get('channels', 3)), args.num
    )
    inputs = _normalise(images01, info)
  else:
    val = data.validation()
    if val is None:
      raise SystemExit('the data has no validation split: pass --images')
    batch = next(iter(val))
    keep = np.asarray(batch.get('mask', np.ones(len(batch['inputs']))))[: args.num] > 0
    inputs = np.asarray(batch['inputs'])[: args.num][keep]
    labels = np.asarray(batch['targets'])[: args.num][keep]
    images01 = _denormalise(inputs, info)
  if args.class_of == 'label' and labels is None:
    parser.error('--class-of label needs the validation set (no --images)')

  results = {}
  for i, (model, variables, _) in enumerate(loaded):
    name = args.name[i] if args.name else os.path.basename(os.path.normpath(args.workdir[i]))
    cams = class_activation_maps(
        model, variables, inputs, labels if args.class_of == 'label' else None
    )
    results[name] = cams
    if args.per_image:
      save_overlays(images01, cams, os.path.join(args.out, name))
  path = plot_cams(
      images01,
      results,
      os.path.join(args.out, 'cams.png'),
      class_names=info.get('class_names'),
      labels=labels,
  )
  print(f'wrote {path}')
  return path


if __name__ == '__main__':
  main()
