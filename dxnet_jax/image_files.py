"""Image files in and out at their own bit depth: 8- and 16-bit PNG and TIFF, JPEG and the rest.

`read(path) -> Picture` decodes a file to uint8 or uint16 pixels [H, W, 1 or 3] plus its alpha
channel, if any, with the EXIF orientation applied (the outputs carry no orientation tag).
`write(path, picture)` writes PNG or TIFF, chosen by the suffix, atomically: into a hidden
temporary file in the target's folder that is renamed over the target once complete, so an
interrupted run never leaves half a file.

PIL decodes and encodes every 8-bit image and 16-bit gray PNG and TIFF (mode 'I;16'), but it has
no 16-bit colour mode: it reads 16-bit RGB(A) files as 8 bits and cannot write them. Hence:

- 16-bit colour PNG: decoded by PIL's PNG decoder twice, once unpacking the high byte of every
  sample (PIL's own 'RGB;16B') and once the low byte ('RGB;16L' applied to the big-endian
  samples picks their second byte); encoded by `_write_png16` below (the PNG row filters and
  zlib, streamed in strips of rows). 16-bit gray+alpha PNG cannot be decoded this way (PIL has
  no low-byte unpacker for it) and is refused with a message.
- 16-bit TIFF: written with tifffile (deflate-compressed); 16-bit colour TIFF is read with it
  too. tifffile comes with scikit-image; LZW- or PackBits-compressed 16-bit colour TIFFs also
  need the `imagecodecs` package.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import secrets
import struct
import zlib

import numpy as np
from PIL import ExifTags
from PIL import Image

PNG_SUFFIXES = ('.png',)
TIFF_SUFFIXES = ('.tif', '.tiff')
_ORIENTATION = ExifTags.Base.Orientation
_BITS_PER_SAMPLE = 258  # TIFF tag
_PNG16_COLOUR_RAWMODES = ('RGB;16B', 'RGBA;16B')
_PNG_STRIP_ROWS = 64  # rows filtered and compressed at a time by `_write_png16`


class BadImageError(ValueError):
  """A file that cannot be decoded, or holds a kind of image these commands do not take."""


@dataclasses.dataclass
class Picture:
  """Decoded pixels at the file's bit depth and what writing them back needs."""

  pixels: np.ndarray  # uint8 or uint16 [H, W, 1 or 3]
  alpha: np.ndarray | None = None  # same dtype [H, W, 1], or None
  icc_profile: bytes | None = None

  @property
  def peak(self) -> int:
    """The largest pixel value: 255 or 65535."""
    return int(np.iinfo(self.pixels.dtype).max)

  @property
  def bits(self) -> int:
    return 8 * self.pixels.dtype.itemsize


# --- reading -------------------------------------------------------------------------------------


def read(path: str | os.PathLike) -> Picture:
  """Decodes one image file; a file that cannot be decoded is a BadImageError naming it."""
  path = pathlib.Path(path)
  try:
    channels, orientation, icc_profile = _decode(path)
  except (OSError, ValueError, SyntaxError, KeyError, Image.DecompressionBombError) as e:
    raise BadImageError(f'cannot decode image {path}: {e}') from e
  channels = _orient(channels, orientation)
  if channels.shape[-1] in (2, 4):
    return Picture(channels[..., :-1], channels[..., -1:], icc_profile)
  return Picture(channels, None, icc_profile)


def _decode(path: pathlib.Path) -> tuple[np.ndarray, int, bytes | None]:
  """(uint8 or uint16 [H, W, 1 to 4], EXIF orientation, ICC profile) of an image file."""
  try:
    image = Image.open(path)
  except Image.UnidentifiedImageError:
    if path.suffix.lower() in TIFF_SUFFIXES:
      return _read_tiff(path)  # layouts PIL does not take, such as 16-bit gray+alpha
    raise
  with image:
    icc_profile = image.info.get('icc_profile')
    if _is_png16_colour(image):  # before anything that decodes `image` (getexif does)
      channels, orientation = _read_png16_colour(path)
      return channels, orientation, icc_profile
    if _is_tiff16_colour(image):
      return _read_tiff(path)
    channels = _pil_channels(image)
    return channels, image.getexif().get(_ORIENTATION, 1), icc_profile


def _is_png16_colour(image: Image.Image) -> bool:
  if image.format != 'PNG' or not image.tile:
    return False
  rawmode = image.tile[0][3]
  if rawmode == 'LA;16B':
    raise BadImageError(
        '16-bit gray+alpha PNG is not supported (PIL cannot decode it losslessly); save it as '
        '16-bit gray, 16-bit RGBA or 8-bit gray+alpha'
    )
  return rawmode in _PNG16_COLOUR_RAWMODES


def _read_png16_colour(path: pathlib.Path) -> tuple[np.ndarray, int]:
  """(uint16 [H, W, 3 or 4], EXIF orientation) of a 16-bit colour PNG; PIL decodes the high and
  the low bytes of its samples apart."""
  planes = []
  for byte in ('16B', '16L'):
    with Image.open(path) as image:
      tile = image.tile[0]
      image.tile = [tuple(tile[:3]) + (tile[3].replace('16B', byte),)]
      image.load()
      planes.append(_array(image))
      orientation = image.getexif().get(_ORIENTATION, 1)
  high, low = planes
  return (high.astype(np.uint16) << 8) | low, orientation


def _is_tiff16_colour(image: Image.Image) -> bool:
  if image.format != 'TIFF' or image.mode not in ('RGB', 'RGBA'):
    return False
  bits = image.tag_v2.get(_BITS_PER_SAMPLE, (8,))
  return max(bits if isinstance(bits, tuple) else (bits,)) > 8


def _read_tiff(path: pathlib.Path) -> tuple[np.ndarray, int, bytes | None]:
  """(uint8 or uint16 [H, W, 1 to 4], orientation, ICC profile) of a TIFF's first page, read
  with tifffile (16-bit colour, and layouts PIL cannot open)."""
  import tifffile  # pylint: disable=g-import-not-at-top

  with tifffile.TiffFile(path) as tif:
    page = tif.pages.first
    axes = page.axes
    pixels = page.asarray()
    orientation = page.tags.valueof('Orientation', 1)
    icc_profile = page.tags.valueof('InterColorProfile')
  if axes.startswith('S'):  # planar configuration 'separate': samples first
    pixels = np.moveaxis(pixels, 0, -1)
  pixels = pixels[..., None] if pixels.ndim == 2 else pixels
  if pixels.dtype not in (np.uint8, np.uint16) or pixels.ndim != 3 or pixels.shape[-1] > 4:
    raise BadImageError(f'unsupported TIFF layout {pixels.dtype} {pixels.shape} (axes {axes})')
  return pixels, int(orientation), None if icc_profile is None else bytes(icc_profile)


def _pil_channels(image: Image.Image) -> np.ndarray:
  """uint8 or uint16 [H, W, 1 to 4] (gray, gray+alpha, RGB, RGBA) of a PIL image."""
  image.load()
  mode = image.mode
  if mode in ('I;16', 'I;16L', 'I;16B', 'I;16N'):
    return _array(image).astype(np.uint16, copy=False)[..., None]
  if mode in ('I', 'I;16S'):
    values = _array(image)
    if values.min() < 0 or values.max() > 65535:
      raise BadImageError(
          f'{mode} image with values outside 0-65535 (only 8 and 16 bits are taken)'
      )
    return values.astype(np.uint16)[..., None]
  if mode == 'F':
    raise BadImageError('floating-point images are not supported; save it with 8 or 16 bits')
  if mode == 'P':
    image = image.convert('RGBA' if 'transparency' in image.info else 'RGB')
  elif mode == '1':
    image = image.convert('L')
  elif mode in ('La', 'PA'):
    image = image.convert('LA' if mode == 'La' else 'RGBA')
  elif mode == 'RGBa':
    image = image.convert('RGBA')
  elif mode not in ('L', 'LA', 'RGB', 'RGBA'):
    image = image.convert('RGB')  # CMYK, YCbCr, LAB, HSV, RGBX
  pixels = _array(image)
  return pixels[..., None] if pixels.ndim == 2 else pixels


def _array(image: Image.Image, rows: int = 256) -> np.ndarray:
  """np.asarray(image), copied in strips of rows: asarray goes through one `tobytes()` of the
  whole image, which briefly holds it twice more."""
  width, height = image.size
  first = np.asarray(image.crop((0, 0, width, min(rows, height))))
  pixels = np.empty((height,) + first.shape[1:], first.dtype)
  pixels[: len(first)] = first
  for top in range(len(first), height, rows):
    pixels[top : top + rows] = np.asarray(image.crop((0, top, width, min(top + rows, height))))
  return pixels


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
  """Applies an EXIF orientation (as PIL's ImageOps.exif_transpose) to [H, W, C] pixels."""
  transforms = {
      2: lambda a: a[:, ::-1],
      3: lambda a: a[::-1, ::-1],
      4: lambda a: a[::-1],
      5: lambda a: a.transpose(1, 0, 2),
      6: lambda a: np.rot90(a, -1),
      7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
      8: lambda a: np.rot90(a, 1),
  }
  if orientation not in transforms:
    return pixels
  return np.ascontiguousarray(transforms[orientation](pixels))


# --- writing -------------------------------------------------------------------------------------


def write(path: str | os.PathLike, picture: Picture, *, overwrite: bool = False) -> None:
  """Writes `picture` as PNG or TIFF (by the suffix of `path`), atomically.

  Without `overwrite`, an existing `path` is a FileExistsError and stays as it was.
  """
  path = pathlib.Path(path)
  encode = _encoder(path)
  if not overwrite and path.exists():
    raise FileExistsError(f'{path} exists (--overwrite replaces it)')
  path.parent.mkdir(parents=True, exist_ok=True)
  temporary = path.with_name(f'.{path.name}.{secrets.token_hex(4)}.tmp')
  try:
    with open(temporary, 'xb') as f:
      encode(f, picture)
      f.flush()
      os.fsync(f.fileno())
    if not overwrite and path.exists():
      raise FileExistsError(f'{path} appeared while it was being written; left as it is')
    os.replace(temporary, path)
  finally:
    temporary.unlink(missing_ok=True)


def _encoder(path: pathlib.Path):
  suffix = path.suffix.lower()
  if suffix in PNG_SUFFIXES:
    return _write_png
  if suffix in TIFF_SUFFIXES:
    return _write_tiff
  raise ValueError(f'{path}: can write PNG ({PNG_SUFFIXES}) or TIFF ({TIFF_SUFFIXES}) only')


def _with_alpha(picture: Picture) -> np.ndarray:
  if picture.alpha is None:
    return picture.pixels
  return np.concatenate([picture.pixels, picture.alpha], axis=-1)


def _write_png(f, picture: Picture) -> None:
  if picture.pixels.dtype == np.uint16 and (
      picture.pixels.shape[-1] > 1 or picture.alpha is not None
  ):
    _write_png16(f, _with_alpha(picture), picture.icc_profile)
    return
  image = Image.fromarray(_pil_array(picture))
  options = {'icc_profile': picture.icc_profile} if picture.icc_profile else {}
  image.save(f, format='PNG', **options)


def _pil_array(picture: Picture) -> np.ndarray:
  """The array PIL makes an 'L', 'LA', 'RGB', 'RGBA' or 'I;16' image of."""
  pixels = _with_alpha(picture)
  return pixels[..., 0] if pixels.shape[-1] == 1 else pixels


def _write_tiff(f, picture: Picture) -> None:
  import tifffile  # pylint: disable=g-import-not-at-top

  pixels = _with_alpha(picture)
  tifffile.imwrite(
      f,
      pixels if pixels.shape[-1] > 1 else pixels[..., 0],
      photometric='rgb' if picture.pixels.shape[-1] == 3 else 'minisblack',
      extrasamples=('unassalpha',) if picture.alpha is not None else None,
      compression='zlib',
      iccprofile=picture.icc_profile,
  )


def _write_png16(f, pixels: np.ndarray, icc_profile: bytes | None = None) -> None:
  """Encodes uint16 [H, W, C] (C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) as a 16-bit PNG.

  Each row takes the PNG filter (none, sub, up, average, Paeth) with the smallest sum of
  absolute filtered bytes (libpng's heuristic); rows are filtered and compressed in strips so
  the encoder holds a few rows, not a second copy of the image.
  """
  height, width, channels = pixels.shape
  colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
  f.write(b'\x89PNG\r\n\x1a\n')
  _png_chunk(f, b'IHDR', struct.pack('>IIBBBBB', width, height, 16, colour_type, 0, 0, 0))
  if icc_profile:
    _png_chunk(f, b'iCCP', b'ICC profile\x00\x00' + zlib.compress(icc_profile))
  compressor = zlib.compressobj(6)
  bpp = 2 * channels
  previous = np.zeros(width * bpp, np.int16)
  for start in range(0, height, _PNG_STRIP_ROWS):
    rows = pixels[start : start + _PNG_STRIP_ROWS].astype('>u2').view(np.uint8)
    rows = rows.reshape(len(rows), width * bpp).astype(np.int16)
    filtered = _filter_rows(rows, previous, bpp)
    previous = rows[-1]
    data = compressor.compress(filtered.tobytes())
    if data:
      _png_chunk(f, b'IDAT', data)
  _png_chunk(f, b'IDAT', compressor.flush())
  _png_chunk(f, b'IEND', b'')


def _filter_rows(rows: np.ndarray, previous: np.ndarray, bpp: int) -> np.ndarray:
  """uint8 [n, 1 + row bytes]: each row's best filter type byte and its filtered bytes."""
  up = np.concatenate([previous[None], rows[:-1]])
  left = np.zeros_like(rows)
  left[:, bpp:] = rows[:, :-bpp]
  up_left = np.zeros_like(rows)
  up_left[:, bpp:] = up[:, :-bpp]
  estimate = left + up - up_left
  to_left, to_up, to_up_left = (np.abs(estimate - p) for p in (left, up, up_left))
  paeth = np.where(
      (to_left <= to_up) & (to_left <= to_up_left), left, np.where(to_up <= to_up_left, up, up_left)
  )
  candidates = (
      np.stack([rows, rows - left, rows - up, rows - (left + up) // 2, rows - paeth]) & 0xFF
  )  # [filter, n, row bytes]
  cost = np.abs(((candidates + 128) & 0xFF) - 128).sum(-1)  # as signed bytes
  best = np.argmin(cost, axis=0)
  chosen = candidates[best, np.arange(len(rows))]
  return np.concatenate([best[:, None], chosen], axis=1).astype(np.uint8)


def _png_chunk(f, kind: bytes, data: bytes) -> None:
  f.write(struct.pack('>I', len(data)) + kind + data)
  f.write(struct.pack('>I', zlib.crc32(kind + data) & 0xFFFFFFFF))
