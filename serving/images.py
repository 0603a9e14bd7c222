"""Files in and out of `vaetfx query`: digits from PNG, IDX or .npy; PNG grids; latent vectors.

Inputs become what the serving signatures take (uint8 [N, 28, 28] images,
float32 [N, L] latents) here, before any request, so a wrong file fails with
its name in the message rather than as an INVALID_ARGUMENT from the server.
"""
import math
import os
from typing import Sequence

import numpy as np
from PIL import Image

from vaetfx.shared import features

SIZE = features.IMAGE_SIZE
# A digit's picture larger than this is a mistake or an attack (a small PNG can
# claim billions of pixels); 40 megapixels still takes any camera's photo.
MAX_PIXELS = 40_000_000
PIL_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.gif')


class InputFileError(ValueError):
  """An input file is unreadable or does not hold what the command needs; the message names it."""


def _as_uint8(array: np.ndarray, path: str) -> np.ndarray:
  """uint8 as is; floats in [0, 1] scaled to 0..255; other integers must already be 0..255."""
  if array.dtype == np.uint8:
    return array
  if array.dtype.kind == 'f' and array.size and 0 <= array.min() and array.max() <= 1:
    return np.round(array * 255).astype(np.uint8)
  if array.dtype.kind in 'iu' and array.size and 0 <= array.min() and array.max() <= 255:
    return array.astype(np.uint8)
  raise InputFileError(f'{path}: pixels must be uint8, integers 0..255 or floats in [0, 1] '
                       f'(found {array.dtype})')


def _read_pil(path: str) -> np.ndarray:
  """One digit, resized to 28x28 if needed; a mostly light picture (a dark digit on paper) is
  inverted, since MNIST digits, and so the model's inputs, are light on black."""
  with Image.open(path) as image:
    width, height = image.size
    if width * height > MAX_PIXELS:
      raise InputFileError(f'{path}: {width}x{height} pixels, more than the {MAX_PIXELS:,} a '
                           f'digit\'s picture may have')
    gray = image.convert('L')
  if gray.size != (SIZE, SIZE):
    gray = gray.resize((SIZE, SIZE), Image.LANCZOS)
  pixels = np.asarray(gray, np.uint8)
  return (255 - pixels if pixels.mean() > 127 else pixels)[np.newaxis]


def _load_npy(path: str) -> np.ndarray:
  """An .npy file's array, memory-mapped: a header that declares more data than the file holds
  (10^9 images in a few bytes) is refused by the file's size before any memory is taken."""
  try:
    return np.load(path, mmap_mode='r', allow_pickle=False)
  except ValueError as e:
    if 'mmap length is greater than file size' not in str(e):
      raise
    raise InputFileError(f'{path}: its header declares more data than the file\'s '
                         f'{os.path.getsize(path):,} bytes hold (truncated or forged)') from e


def _read_npy(path: str) -> np.ndarray:
  array = _load_npy(path)
  if array.ndim == 2:
    array = array[np.newaxis]
  if array.ndim != 3 or array.shape[1:] != (SIZE, SIZE):
    raise InputFileError(f'{path}: shape {list(array.shape)}, expected [N, {SIZE}, {SIZE}] '
                         f'or [{SIZE}, {SIZE}]')
  return _as_uint8(array, path)


def _read_idx(path: str) -> np.ndarray:
  # Imported here: it brings in TFX's file I/O, seconds of import that PNG and .npy do not need.
  from vaetfx.shared import mnist_files  # pylint: disable=g-import-not-at-top
  try:
    return mnist_files.parse_idx(mnist_files.read_file_bytes(path), path, ndim=3)
  except mnist_files.MnistFormatError as e:
    raise InputFileError(str(e)) from e


def read_images(paths: Sequence[str], limit: int = 0) -> np.ndarray:
  """uint8 [N, 28, 28] from PNG/JPEG (one digit each), .npy or MNIST IDX files (gzip or not).

  `limit` keeps the first N images overall (0: all); IDX files hold thousands.
  """
  batches = []
  for path in paths:
    suffix = os.path.splitext(path)[1].lower()
    try:
      if suffix in PIL_SUFFIXES:
        batches.append(_read_pil(path))
      elif suffix == '.npy':
        batches.append(_read_npy(path))
      else:
        batches.append(_read_idx(path))
    except InputFileError:
      raise
    except (OSError, ValueError, Image.DecompressionBombError) as e:
      raise InputFileError(f'{path}: cannot read it ({e})') from e
  images = np.concatenate(batches) if batches else np.zeros((0, SIZE, SIZE), np.uint8)
  images = images[:limit] if limit > 0 else images
  if not len(images):
    raise InputFileError(f'{", ".join(paths) or "no input"}: holds no images')
  return np.ascontiguousarray(images)


def read_latents(path: str) -> np.ndarray:
  """float32 [N, L] from .npy ([L] or [N, L]), .npz (latent_mean, or an autoencoder's latent, as
  `encode` writes them) or text."""
  suffix = os.path.splitext(path)[1].lower()
  try:
    if suffix == '.npz':
      with np.load(path, allow_pickle=False) as archive:
        array = archive['latent' if 'latent' in archive.files else 'latent_mean']
    elif suffix == '.npy':
      array = _load_npy(path)
    else:
      array = np.loadtxt(path, ndmin=2, delimiter=',' if suffix == '.csv' else None)
  except InputFileError:
    raise
  except (OSError, ValueError, KeyError) as e:
    raise InputFileError(f'{path}: cannot read latent vectors ({e})') from e
  return latents_array(array, path)


def latents_array(values, source: str) -> np.ndarray:
  """[L] or [N, L] numbers -> float32 [N, L]; `source` names them in errors."""
  array = np.asarray(values)
  if array.ndim == 1:
    array = array[np.newaxis]
  if array.ndim != 2 or not array.size or array.dtype.kind not in 'iuf':
    raise InputFileError(f'{source}: expected numbers shaped [L] or [N, L], got '
                         f'{array.dtype} {list(array.shape)}')
  with np.errstate(over='ignore'):  # Beyond float32's range becomes inf, refused below.
    latents = array.astype(np.float32)
  finite = np.isfinite(latents)
  if not finite.all():
    row = int(np.flatnonzero(~finite.all(axis=1))[0])
    raise InputFileError(f'{source}: latent vector {row} holds {latents[row][~finite[row]][0]}: '
                         'expected finite numbers (within float32\'s range)')
  return latents


def grid(images: np.ndarray, columns: int = 0, padding: int = 2) -> np.ndarray:
  """[N, 28, 28] -> one uint8 picture, `columns` wide (0: as square as possible), gaps in gray."""
  pixels = _as_uint8(np.clip(images, 0, 1) if images.dtype.kind == 'f' else images, 'images')
  count = len(pixels)
  columns = columns or math.ceil(math.sqrt(count))
  rows = math.ceil(count / columns)
  cell = SIZE + padding
  canvas = np.full((rows * cell + padding, columns * cell + padding), 64, np.uint8)
  for i, image in enumerate(pixels):
    top, left = padding + (i // columns) * cell, padding + (i % columns) * cell
    canvas[top:top + SIZE, left:left + SIZE] = image
  return canvas


def write_png(path: str, picture: np.ndarray):
  directory = os.path.dirname(path)
  if directory:
    os.makedirs(directory, exist_ok=True)
  Image.fromarray(picture).save(path, format='PNG')


def side_by_side(originals: np.ndarray, reconstructions: np.ndarray) -> np.ndarray:
  """(original, reconstruction) pairs in [0, 1]: a grid of even width shows them side by side."""
  pairs = np.stack([originals.astype(np.float32) / 255.0, reconstructions], axis=1)
  return pairs.reshape(-1, SIZE, SIZE)
