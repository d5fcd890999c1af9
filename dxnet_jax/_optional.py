"""Optional dependencies: imported where a feature needs them, named by the extra that installs them.

The core install (`pip install dxnet_jax`) trains, evaluates and runs the shipped models on local
image folders. Everything else comes with an extra:

  tfds         TensorFlow Datasets sources and the streaming ImageNet pipeline (TensorFlow)
  tensorboard  TensorBoard event files next to metrics.jsonl
  plots        the figures of dxnet_jax.analysis (matplotlib)
  quickstart   scikit-image's bundled photos (`skimage:train`, `skimage:test`)
  sweep        multi-seed studies on Ray Tune (`dxnet-sweep`)
  convert      reading PyTorch checkpoints (`dxnet-convert`; PyTorch)
  all          tfds, tensorboard, plots and quickstart
"""

from __future__ import annotations

import importlib
import types


def require(module: str, extra: str, feature: str) -> types.ModuleType:
  """Imports `module`; where it is missing, an ImportError that says which extra installs it."""
  try:
    return importlib.import_module(module)
  except ImportError as error:
    raise ImportError(
        f'{feature} needs the optional package {module.split(".")[0]!r} ({error}). '
        f'Install it with: pip install "dxnet_jax[{extra}]"'
    ) from error
