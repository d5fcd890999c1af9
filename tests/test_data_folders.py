"""Image folders: path resolution and the defined behaviour for each kind of bad input."""

import pathlib
import shutil

import numpy as np
import pytest
from PIL import Image

from dxnet_jax.data import eval_sets
from dxnet_jax.data import images
from dxnet_jax.data import paths
from dxnet_jax.data import sources

SHARED = paths.data_root()
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f'shared data absent: {SHARED}')


def _write(folder: pathlib.Path, name: str, array: np.ndarray):
  folder.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(folder / name)


def _rgb(h=24, w=20, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_relative_paths_resolve_against_env(tmp_path, monkeypatch):
  monkeypatch.setenv(paths.ENV_VAR, str(tmp_path))
  assert paths.resolve('Set5') == tmp_path / 'Set5'
  assert paths.resolve('/abs/x') == pathlib.Path('/abs/x')
  assert paths.resolve('gs://bucket/tfds') == 'gs://bucket/tfds'


def test_default_root_is_next_to_the_repo(monkeypatch):
  monkeypatch.delenv(paths.ENV_VAR, raising=False)
  repo = pathlib.Path(__file__).resolve().parents[1]
  assert paths.data_root() == repo.parent / 'shared' / 'data'


def test_missing_folder_names_path_and_fix(tmp_path, monkeypatch):
  monkeypatch.setenv(paths.ENV_VAR, str(tmp_path))
  with pytest.raises(FileNotFoundError, match=r'(?s)nothere.*DXNET_DATA_DIR'):
    images.load_folder('nothere', 3, strict=False)


def test_empty_folder_is_an_error(tmp_path):
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'empty' / 'notes.txt').write_text('no images here')
  with pytest.raises(ValueError, match='empty holds no image files'):
    images.load_folder(tmp_path / 'empty', 3, strict=False)


def test_non_image_files_are_ignored_with_a_counted_warning(tmp_path):
  _write(tmp_path, 'a.png', _rgb())
  (tmp_path / 'README.txt').write_text('x')
  (tmp_path / 'labels.csv').write_text('x')
  (tmp_path / '.hidden.png').write_text('ignored silently')
  with pytest.warns(images.DataWarning, match='2 files without an image extension'):
    loaded = images.load_folder(tmp_path, 3, strict=False)
  assert [im.name for im in loaded] == ['a.png']


def test_corrupt_file_skipped_in_training_but_fatal_in_evaluation(tmp_path):
  _write(tmp_path, 'a.png', _rgb())
  _write(tmp_path, 'b.png', _rgb(seed=1))
  (tmp_path / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
  with pytest.warns(images.DataWarning, match='1 corrupt .*broken.png'):
    loaded = images.load_folder(tmp_path, 3, strict=False)
  assert [im.name for im in loaded] == ['a.png', 'b.png']
  with pytest.raises(images.BadImageError, match='broken.png'):
    eval_sets.load(str(tmp_path), task='super_resolution')


def test_truncated_file_counts_as_corrupt(tmp_path):
  _write(tmp_path, 'a.png', _rgb(64, 64))
  data = (tmp_path / 'a.png').read_bytes()
  (tmp_path / 'cut.png').write_bytes(data[: len(data) // 2])
  with pytest.warns(images.DataWarning, match='cut.png'):
    assert len(images.load_folder(tmp_path, 3, strict=False)) == 1


def test_gray_in_rgb_and_rgb_in_gray_are_converted_with_warnings(tmp_path):
  gray = np.arange(24 * 20, dtype=np.uint8).reshape(24, 20)
  _write(tmp_path, 'gray.png', gray)
  _write(tmp_path, 'rgb.png', _rgb())
  with pytest.warns(images.DataWarning, match='1 gray images were replicated'):
    loaded = images.load_folder(tmp_path, 3, strict=False)
  as_rgb = {im.name: im for im in loaded}
  assert as_rgb['gray.png'].gray and as_rgb['gray.png'].pixels.shape == (24, 20, 3)
  np.testing.assert_array_equal(as_rgb['gray.png'].pixels, np.repeat(gray[..., None], 3, -1))
  with pytest.warns(images.DataWarning, match='1 colour images were converted to gray'):
    loaded = images.load_folder(tmp_path, 1, strict=False)
  assert all(im.pixels.shape == (24, 20, 1) for im in loaded)


def test_failure_when_no_file_decodes(tmp_path):
  (tmp_path / 'x.jpg').write_bytes(b'garbage')
  with pytest.warns(images.DataWarning), pytest.raises(ValueError, match='none of its 1'):
    images.load_folder(tmp_path, 3, strict=False)


def test_classification_folder_rejects_wrong_image_size(tmp_path):
  _write(tmp_path / 'train' / 'cat', '0.png', _rgb(32, 32))
  _write(tmp_path / 'train' / 'dog', '0.png', _rgb(40, 32))
  with pytest.raises(ValueError, match=r'dog/0.png is 32x40'):
    sources.load_folder(tmp_path, 'train', image_size=32)


def test_classification_folder_without_classes(tmp_path):
  (tmp_path / 'train').mkdir()
  with pytest.raises(ValueError, match='no class folders'):
    sources.load_folder(tmp_path, 'train', image_size=32)


@needs_shared
def test_real_gray_image_in_rgb_set_is_replicated_and_counted():
  with pytest.warns(images.DataWarning, match='1 gray images .*img_003'):
    loaded = images.load_folder('Set14', 3, strict=True)
  bridge = [im for im in loaded if im.name.startswith('img_003')][0]
  assert bridge.gray and bridge.pixels.shape[-1] == 3
  assert sum(im.gray for im in loaded) == 1


@needs_shared
def test_real_cifar_folder_class_order(tmp_path):
  """Alphabetical class folders give the official CIFAR-10 label order."""
  for name in sorted(p.name for p in (SHARED / 'cifar10' / 'train').iterdir()):
    dst = tmp_path / 'train' / name
    dst.mkdir(parents=True)
    shutil.copy(SHARED / 'cifar10' / 'train' / name / '0000.jpg', dst)
  arrays = sources.load_folder(tmp_path, 'train', image_size=32)
  assert arrays.class_names == (
      'airplane',
      'automobile',
      'bird',
      'cat',
      'deer',
      'dog',
      'frog',
      'horse',
      'ship',
      'truck',
  )
  np.testing.assert_array_equal(arrays.labels, np.arange(10))
  assert arrays.images.shape == (10, 32, 32, 3) and arrays.images.dtype == np.uint8
