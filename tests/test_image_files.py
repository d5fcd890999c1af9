"""Image files keep their bit depth and mode through `image_files.read` / `write`."""

import zlib

import numpy as np
import pytest
from PIL import Image
from PIL import ImageOps

from dxnet_jax import image_files
from dxnet_jax.data import paths


def _photo16(height=97, width=131):
  """A real photo crop scaled to 16 bits, with noise in the low byte."""
  rgb = np.asarray(Image.open(paths.data_root() / 'Set5/img_002_SRF_4_HR.png').convert('RGB'))
  low = np.random.default_rng(0).integers(0, 256, (height, width, 3))
  return (rgb[:height, :width].astype(np.uint16) << 8) | low.astype(np.uint16)


def _png_filter_types(data: bytes, height: int) -> set:
  """The filter type byte of every row of a (non-interlaced) PNG."""
  pos, idat = 8, b''
  while pos < len(data):
    length = int.from_bytes(data[pos : pos + 4], 'big')
    if data[pos + 4 : pos + 8] == b'IDAT':
      idat += data[pos + 8 : pos + 8 + length]
    pos += 12 + length
  rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, -1)
  return set(rows[:, 0].tolist())


def test_16bit_colour_png_round_trip_through_every_row_filter(tmp_path):
  y, x = np.mgrid[:40, :50]
  images = {
      'noise': np.random.default_rng(1).integers(0, 65536, (33, 41, 3)).astype(np.uint16),
      'across': np.repeat((x * 1300)[..., None], 3, -1).astype(np.uint16),
      'down': np.repeat((y * 1600)[..., None], 3, -1).astype(np.uint16),
      'photo': _photo16(),
  }
  filters = set()
  for name, pixels in images.items():
    path = tmp_path / f'{name}.png'
    image_files.write(path, image_files.Picture(pixels))
    filters |= _png_filter_types(path.read_bytes(), len(pixels))
    back = image_files.read(path)
    assert back.pixels.dtype == np.uint16 and back.alpha is None
    np.testing.assert_array_equal(back.pixels, pixels)
  assert filters == {0, 1, 2, 3, 4}  # none, sub, up, average, Paeth: PIL decoded them all


_LAYOUTS = [  # (suffix, channels, alpha, dtype); 16-bit gray+alpha PNG is refused (below)
    (suffix, channels, alpha, dtype)
    for suffix in ('.png', '.tif')
    for dtype in (np.uint8, np.uint16)
    for channels in (1, 3)
    for alpha in (False, True)
    if not (suffix == '.png' and dtype == np.uint16 and channels == 1 and alpha)
]


@pytest.mark.parametrize('suffix, channels, alpha, dtype', _LAYOUTS)
def test_round_trip_keeps_depth_mode_and_alpha(tmp_path, suffix, channels, alpha, dtype):
  rng = np.random.default_rng(channels)
  peak = np.iinfo(dtype).max
  pixels = rng.integers(0, peak + 1, (21, 34, channels)).astype(dtype)
  opacity = rng.integers(0, peak + 1, (21, 34, 1)).astype(dtype) if alpha else None
  path = tmp_path / f'image{suffix}'
  image_files.write(path, image_files.Picture(pixels, opacity))
  back = image_files.read(path)
  assert back.pixels.dtype == dtype
  np.testing.assert_array_equal(back.pixels, pixels)
  if alpha:
    np.testing.assert_array_equal(back.alpha, opacity)
  else:
    assert back.alpha is None


def test_pil_reads_the_16bit_files_as_16_bits_where_it_can(tmp_path):
  gray = np.random.default_rng(2).integers(0, 65536, (9, 11, 1)).astype(np.uint16)
  image_files.write(tmp_path / 'g.png', image_files.Picture(gray))
  with Image.open(tmp_path / 'g.png') as image:
    assert image.mode.startswith('I')
    np.testing.assert_array_equal(np.asarray(image), gray[..., 0])


def test_16bit_gray_alpha_png_is_refused_with_a_reason(tmp_path):
  path = tmp_path / 'la.png'
  pixels = np.zeros((4, 5, 2), np.uint16)
  with open(path, 'wb') as f:
    image_files._write_png16(f, pixels)  # pylint: disable=protected-access
  with pytest.raises(image_files.BadImageError, match='16-bit gray\\+alpha PNG is not supported'):
    image_files.read(path)


def test_icc_profile_is_kept(tmp_path):
  profile = b'\x00\x00\x02\x0cfake icc profile bytes' * 10
  eight, sixteen = np.full((4, 6, 3), 9, np.uint8), _photo16(8, 8)
  for name, pixels in [
      ('8.png', eight),
      ('8.tif', eight),
      ('16.png', sixteen),
      ('16.tif', sixteen),
  ]:
    image_files.write(tmp_path / name, image_files.Picture(pixels, None, profile))
    assert image_files.read(tmp_path / name).icc_profile == profile


@pytest.mark.parametrize('orientation', range(1, 9))
def test_exif_orientation_is_applied_as_pil_does(tmp_path, orientation):
  pixels = np.random.default_rng(3).integers(0, 256, (5, 7, 3)).astype(np.uint8)
  exif = Image.Exif()
  exif[0x0112] = orientation
  path = tmp_path / 'oriented.png'
  Image.fromarray(pixels).save(path, exif=exif)
  with Image.open(path) as image:
    expected = np.asarray(ImageOps.exif_transpose(image))
  np.testing.assert_array_equal(image_files.read(path).pixels, expected)


def test_jpeg_palette_and_bilevel_inputs(tmp_path):
  rgb = np.random.default_rng(4).integers(0, 256, (16, 16, 3)).astype(np.uint8)
  Image.fromarray(rgb).save(tmp_path / 'a.jpg', quality=95)
  Image.fromarray(rgb).convert('P').save(tmp_path / 'p.png')
  Image.fromarray(rgb[..., 0] > 128).save(tmp_path / 'b.png')
  jpeg = image_files.read(tmp_path / 'a.jpg')
  assert jpeg.pixels.dtype == np.uint8 and jpeg.pixels.shape == (16, 16, 3)
  np.testing.assert_array_equal(jpeg.pixels, np.asarray(Image.open(tmp_path / 'a.jpg')))
  assert image_files.read(tmp_path / 'p.png').pixels.shape == (16, 16, 3)
  bilevel = image_files.read(tmp_path / 'b.png').pixels
  assert bilevel.shape == (16, 16, 1) and set(np.unique(bilevel)) <= {0, 255}


def test_undecodable_and_float_files_name_the_file(tmp_path):
  (tmp_path / 'broken.png').write_bytes(b'\x89PNG not really')
  with pytest.raises(image_files.BadImageError, match='cannot decode image .*broken.png'):
    image_files.read(tmp_path / 'broken.png')
  Image.fromarray(np.zeros((3, 3), np.float32)).save(tmp_path / 'float.tif')
  with pytest.raises(image_files.BadImageError, match='floating-point images are not supported'):
    image_files.read(tmp_path / 'float.tif')


def test_write_never_replaces_without_overwrite(tmp_path):
  path = tmp_path / 'out.png'
  first = image_files.Picture(np.zeros((4, 4, 1), np.uint8))
  second = image_files.Picture(np.full((4, 4, 1), 200, np.uint8))
  image_files.write(path, first)
  with pytest.raises(FileExistsError, match='--overwrite'):
    image_files.write(path, second)
  assert image_files.read(path).pixels.max() == 0
  image_files.write(path, second, overwrite=True)
  assert image_files.read(path).pixels.min() == 200
  assert [p.name for p in tmp_path.iterdir()] == ['out.png']


def test_an_interrupted_write_leaves_neither_half_a_file_nor_a_temporary(tmp_path, monkeypatch):
  def fail_midway(f, picture):
    f.write(b'\x89PNG\r\n\x1a\n half')
    raise KeyboardInterrupt

  monkeypatch.setattr(image_files, '_write_png', fail_midway)
  with pytest.raises(KeyboardInterrupt):
    image_files.write(tmp_path / 'out.png', image_files.Picture(np.zeros((4, 4, 1), np.uint8)))
  assert not list(tmp_path.iterdir())


def test_write_takes_png_and_tiff_only(tmp_path):
  with pytest.raises(ValueError, match='PNG .* or TIFF'):
    image_files.write(tmp_path / 'out.jpg', image_files.Picture(np.zeros((2, 2, 1), np.uint8)))
