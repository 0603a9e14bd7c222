"""Readers for MNIST's canonical files: the four IDX files (gzip or not) and Keras' mnist.npz.

Every check names the file and says what is wrong, because a corrupt download
otherwise surfaces much later as a shape error deep inside Beam or TensorFlow.
"""
import gzip
import io
import os
import struct
import zipfile
import zlib
from typing import Tuple

import numpy as np

from vaetfx.shared import features, storage

IDX_FILES = {
    features.TRAIN_SPLIT: ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    features.EVAL_SPLIT: ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}
NPZ_FILE = 'mnist.npz'
NPZ_KEYS = {features.TRAIN_SPLIT: ('x_train', 'y_train'), features.EVAL_SPLIT: ('x_test', 'y_test')}
_UBYTE = 0x08
_GZIP_MAGIC = b'\x1f\x8b'


class MnistFormatError(ValueError):
  """An MNIST file is missing, corrupt or of the wrong shape; the message names it."""


def read_file_bytes(path: str) -> bytes:
  """The file's content, gunzipped when its name ends in .gz."""
  try:
    with storage.open_file(path) as f:
      data = f.read()
  except OSError as e:
    raise MnistFormatError(f'{path}: cannot read it ({e.strerror or e})') from e
  if not data:
    raise MnistFormatError(f'{path}: the file is empty')
  if not path.endswith('.gz'):
    return data
  if data[:2] != _GZIP_MAGIC:
    raise MnistFormatError(
        f'{path}: named .gz but is not gzip-compressed (starts with 0x{data[:4].hex()})')
  try:
    data = gzip.decompress(data)
  except (OSError, EOFError, zlib.error) as e:
    raise MnistFormatError(f'{path}: corrupt or truncated gzip data ({e})') from e
  if not data:
    raise MnistFormatError(f'{path}: the file is empty once decompressed')
  return data


def parse_idx(data: bytes, path: str, ndim: int) -> np.ndarray:
  """Parses IDX bytes of unsigned bytes with `ndim` dimensions; the sizes come from the header."""
  if len(data) < 4:
    raise MnistFormatError(f'{path}: truncated: {len(data)} bytes, too short for an IDX header')
  expected_magic = bytes((0, 0, _UBYTE, ndim))
  if data[:4] != expected_magic:
    raise MnistFormatError(
        f'{path}: wrong magic number 0x{data[:4].hex()}, expected 0x{expected_magic.hex()} '
        f'(IDX file of unsigned bytes with {ndim} dimension{"s" if ndim > 1 else ""})')
  header_size = 4 + 4 * ndim
  if len(data) < header_size:
    raise MnistFormatError(f'{path}: truncated inside the IDX header ({len(data)} bytes)')
  shape = struct.unpack(f'>{ndim}I', data[4:header_size])
  expected_size = int(np.prod(shape))
  body_size = len(data) - header_size
  if body_size != expected_size:
    problem = 'truncated' if body_size < expected_size else 'has trailing bytes'
    raise MnistFormatError(
        f'{path}: {problem}: the header says shape {list(shape)} ({expected_size} bytes of data) '
        f'but {body_size} bytes follow it')
  return np.frombuffer(data, np.uint8, offset=header_size).reshape(shape)


def _check_twins(plain: str, compressed: str):
  """Refuses `x` next to an `x.gz` that holds other data: which one is meant is unknowable.

  Identical twins (a gunzip -k leftover) are fine; they are compared decompressed.
  """
  if read_file_bytes(plain) != read_file_bytes(compressed):
    raise MnistFormatError(
        f'{plain} and {compressed} hold different data: keep only one of them')


def _find(directory: str, name: str) -> str:
  """`name` or `name.gz` in `directory`, whichever is there (the same data when both are)."""
  plain, compressed = (os.path.join(directory, name + ext) for ext in ('', '.gz'))
  found = [path for path in (plain, compressed) if storage.exists(path)]
  if len(found) == 2:
    _check_twins(plain, compressed)
  return found[0] if found else ''


def check_split(images: np.ndarray, labels: np.ndarray, images_source: str, labels_source: str):
  """Images must be N x 28 x 28 uint8 and labels N digits 0-9."""
  size = features.IMAGE_SIZE
  if images.ndim != 3 or images.shape[1:] != (size, size):
    raise MnistFormatError(
        f'{images_source}: images have shape {list(images.shape[1:])}, expected [{size}, {size}]')
  if labels.ndim != 1:
    raise MnistFormatError(f'{labels_source}: labels have shape {list(labels.shape)}, expected [N]')
  if len(images) != len(labels):
    raise MnistFormatError(
        f'{images_source} holds {len(images)} images but {labels_source} holds '
        f'{len(labels)} labels: the counts must match')
  if len(images) == 0:
    raise MnistFormatError(f'{images_source}: holds no images')
  if labels.max() > 9:
    raise MnistFormatError(f'{labels_source}: label {int(labels.max())} is not a digit 0-9')


def _load_idx_split(images_path: str, labels_path: str) -> Tuple[np.ndarray, np.ndarray]:
  images = parse_idx(read_file_bytes(images_path), images_path, ndim=3)
  labels = parse_idx(read_file_bytes(labels_path), labels_path, ndim=1)
  check_split(images, labels, images_path, labels_path)
  return images, labels


def _load_npz_split(path: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
  images_key, labels_key = NPZ_KEYS[split]
  data = read_file_bytes(path)
  if not data.startswith(b'PK'):
    raise MnistFormatError(
        f'{path}: not an .npz file (a zip archive starts with PK, this with 0x{data[:4].hex()})')
  try:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
      missing = [key for key in (images_key, labels_key) if key not in npz.files]
      if missing:
        raise MnistFormatError(f'{path}: split {split!r} needs arrays {missing}; it has {npz.files}')
      images, labels = npz[images_key], npz[labels_key]
  except MnistFormatError:
    raise
  except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
    # A half-finished download, a bad CRC or a damaged array header all land here.
    raise MnistFormatError(f'{path}: corrupt or truncated .npz file ({e})') from e
  for key, array in ((images_key, images), (labels_key, labels)):
    if array.dtype != np.uint8:
      raise MnistFormatError(f'{path}: {key} has dtype {array.dtype}, expected uint8')
  check_split(images, labels, f'{path}[{images_key}]', f'{path}[{labels_key}]')
  return images, labels


def load_split(directory: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
  """(images uint8 [N, 28, 28], labels uint8 [N]) of one split: IDX files first, else mnist.npz."""
  images_name, labels_name = IDX_FILES[split]
  images_path, labels_path = _find(directory, images_name), _find(directory, labels_name)
  if images_path and labels_path:
    return _load_idx_split(images_path, labels_path)
  npz_path = os.path.join(directory, NPZ_FILE)
  if storage.exists(npz_path):
    return _load_npz_split(npz_path, split)
  found = images_path or labels_path
  detail = f'only {os.path.basename(found)} is there' if found else 'neither is there'
  raise MnistFormatError(
      f'{directory}: the {split!r} split is missing: it needs {images_name}[.gz] and '
      f'{labels_name}[.gz] ({detail}), or {NPZ_FILE}')
