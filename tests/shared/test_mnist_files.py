"""The IDX and npz readers against hand-made bytes, including every kind of bad input."""
import gzip
import io
import os
import re
import zipfile

import numpy as np
import pytest

from tests import synthetic_mnist
from vaetfx.shared import mnist_files
from vaetfx.shared.mnist_files import MnistFormatError

IMAGES = np.arange(3 * 28 * 28, dtype=np.uint64).reshape(3, 28, 28).astype(np.uint8)
LABELS = np.array([7, 0, 9], np.uint8)


def _write(directory, name, data: bytes) -> str:
  path = os.path.join(directory, name)
  with open(path, 'wb') as f:
    f.write(data)
  return path


def _write_split(directory, split='train', images=IMAGES, labels=LABELS, compress=True):
  images_name, labels_name = mnist_files.IDX_FILES[split]
  encode = gzip.compress if compress else bytes
  suffix = '.gz' if compress else ''
  _write(directory, images_name + suffix, encode(synthetic_mnist.idx_bytes(images)))
  _write(directory, labels_name + suffix, encode(synthetic_mnist.idx_bytes(labels)))


def test_parse_idx_reads_shape_from_header():
  header = bytes([0, 0, 8, 3]) + (3).to_bytes(4, 'big') + (28).to_bytes(4, 'big') * 2
  parsed = mnist_files.parse_idx(header + IMAGES.tobytes(), 'x', ndim=3)
  np.testing.assert_array_equal(parsed, IMAGES)


@pytest.mark.parametrize('compress', [True, False])
def test_load_split_gzip_or_plain(tmp_path, compress):
  _write_split(str(tmp_path), compress=compress)
  images, labels = mnist_files.load_split(str(tmp_path), 'train')
  np.testing.assert_array_equal(images, IMAGES)
  np.testing.assert_array_equal(labels, LABELS)


def test_load_split_from_npz(tmp_path):
  splits = {'train': (IMAGES, LABELS), 'eval': (IMAGES[:2], LABELS[:2])}
  synthetic_mnist.write_mnist_npz(str(tmp_path), splits)
  images, labels = mnist_files.load_split(str(tmp_path), 'eval')
  np.testing.assert_array_equal(images, IMAGES[:2])
  np.testing.assert_array_equal(labels, LABELS[:2])


def test_wrong_magic_number(tmp_path):
  data = bytearray(synthetic_mnist.idx_bytes(IMAGES))
  data[2] = 0x0D  # float32 instead of unsigned byte
  path = _write(str(tmp_path), 'img', bytes(data))
  with pytest.raises(MnistFormatError, match=r'img: wrong magic number 0x00000d03, expected 0x00000803'):
    mnist_files.parse_idx(bytes(data), path, ndim=3)


def test_labels_file_given_as_images_is_a_wrong_magic(tmp_path):
  _write_split(str(tmp_path), compress=False)
  images_name, labels_name = mnist_files.IDX_FILES['train']
  os.replace(os.path.join(tmp_path, labels_name), os.path.join(tmp_path, images_name))
  _write(str(tmp_path), labels_name, synthetic_mnist.idx_bytes(LABELS))
  with pytest.raises(MnistFormatError, match=f'{images_name}: wrong magic number'):
    mnist_files.load_split(str(tmp_path), 'train')


def test_truncated_file(tmp_path):
  _write_split(str(tmp_path))
  images_name = mnist_files.IDX_FILES['train'][0] + '.gz'
  _write(str(tmp_path), images_name, gzip.compress(synthetic_mnist.idx_bytes(IMAGES)[:-100]))
  with pytest.raises(MnistFormatError,
                     match=rf'{images_name}: truncated: the header says shape \[3, 28, 28\]'):
    mnist_files.load_split(str(tmp_path), 'train')


def test_truncated_gzip_stream(tmp_path):
  _write_split(str(tmp_path))
  images_name = mnist_files.IDX_FILES['train'][0] + '.gz'
  compressed = gzip.compress(synthetic_mnist.idx_bytes(IMAGES))
  _write(str(tmp_path), images_name, compressed[:len(compressed) // 2])
  with pytest.raises(MnistFormatError, match=f'{images_name}: corrupt or truncated gzip data'):
    mnist_files.load_split(str(tmp_path), 'train')


def test_truncated_header():
  with pytest.raises(MnistFormatError, match='too short for an IDX header'):
    mnist_files.parse_idx(b'\x00\x00', 'f', ndim=3)
  with pytest.raises(MnistFormatError, match='truncated inside the IDX header'):
    mnist_files.parse_idx(bytes([0, 0, 8, 3, 0, 0]), 'f', ndim=3)


def test_trailing_bytes():
  with pytest.raises(MnistFormatError, match='has trailing bytes'):
    mnist_files.parse_idx(synthetic_mnist.idx_bytes(LABELS) + b'\x01', 'f', ndim=1)


def test_count_mismatch(tmp_path):
  _write_split(str(tmp_path), labels=LABELS[:2])
  images_name, labels_name = mnist_files.IDX_FILES['train']
  with pytest.raises(MnistFormatError,
                     match=f'{images_name}.gz holds 3 images but .*{labels_name}.gz holds 2 labels'):
    mnist_files.load_split(str(tmp_path), 'train')


def test_wrong_image_size(tmp_path):
  _write_split(str(tmp_path), images=np.zeros((3, 32, 32), np.uint8))
  with pytest.raises(MnistFormatError, match=r'images have shape \[32, 32\], expected \[28, 28\]'):
    mnist_files.load_split(str(tmp_path), 'train')


def test_empty_file(tmp_path):
  _write_split(str(tmp_path), compress=False)
  images_name = mnist_files.IDX_FILES['train'][0]
  _write(str(tmp_path), images_name, b'')
  with pytest.raises(MnistFormatError, match=f'{images_name}: the file is empty'):
    mnist_files.load_split(str(tmp_path), 'train')


def test_not_gzip_but_named_gz(tmp_path):
  _write_split(str(tmp_path))
  labels_name = mnist_files.IDX_FILES['train'][1] + '.gz'
  _write(str(tmp_path), labels_name, synthetic_mnist.idx_bytes(LABELS))
  with pytest.raises(MnistFormatError, match=f'{labels_name}: named .gz but is not gzip-compressed'):
    mnist_files.load_split(str(tmp_path), 'train')


def test_missing_split(tmp_path):
  _write_split(str(tmp_path), split='train')
  with pytest.raises(MnistFormatError, match=r"the 'eval' split is missing: it needs "
                     r't10k-images-idx3-ubyte\[.gz\] and t10k-labels-idx1-ubyte\[.gz\]'):
    mnist_files.load_split(str(tmp_path), 'eval')


def test_half_missing_split_names_what_is_there(tmp_path):
  _write_split(str(tmp_path), split='eval')
  os.remove(os.path.join(tmp_path, mnist_files.IDX_FILES['eval'][1] + '.gz'))
  with pytest.raises(MnistFormatError, match='only t10k-images-idx3-ubyte.gz is there'):
    mnist_files.load_split(str(tmp_path), 'eval')


def test_label_out_of_range(tmp_path):
  _write_split(str(tmp_path), labels=np.array([1, 2, 10], np.uint8))
  with pytest.raises(MnistFormatError, match='label 10 is not a digit 0-9'):
    mnist_files.load_split(str(tmp_path), 'train')


def test_npz_missing_arrays_and_wrong_dtype(tmp_path):
  path = os.path.join(tmp_path, 'mnist.npz')
  np.savez(path, x_train=IMAGES, y_train=LABELS)
  with pytest.raises(MnistFormatError, match=r"split 'eval' needs arrays \['x_test', 'y_test'\]"):
    mnist_files.load_split(str(tmp_path), 'eval')
  np.savez(path, x_train=IMAGES.astype(np.float32), y_train=LABELS)
  with pytest.raises(MnistFormatError, match='x_train has dtype float32, expected uint8'):
    mnist_files.load_split(str(tmp_path), 'train')


def _npz_bytes(tmp_path) -> bytes:
  path = os.path.join(tmp_path, 'valid.npz')
  np.savez(path, x_train=IMAGES, y_train=LABELS)
  with open(path, 'rb') as f:
    return f.read()


def _flip_a_pixel_byte(data: bytes) -> bytes:
  """The archive stays well-formed; only the CRC-32 of x_train's data no longer matches."""
  at = data.index(IMAGES.tobytes()[:64]) + 100
  return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


def _garbage_member() -> bytes:
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, 'w') as archive:
    archive.writestr('x_train.npy', b'\x93NUMPY garbage')
    archive.writestr('y_train.npy', b'\x93NUMPY garbage')
  return buffer.getvalue()


@pytest.mark.parametrize('damage, fault', [
    (lambda data: b'this is not a zip archive', 'not an .npz file'),
    (lambda data: data[:len(data) // 2], 'corrupt or truncated .npz file'),
    (_flip_a_pixel_byte, r'corrupt or truncated .npz file \(Bad CRC-32'),
    (lambda data: _garbage_member(), 'corrupt or truncated .npz file'),
], ids=['garbage', 'half-downloaded', 'bad-crc', 'garbage-array'])
def test_damaged_npz_names_the_file_and_the_fault(tmp_path, damage, fault):
  path = _write(str(tmp_path), 'mnist.npz', damage(_npz_bytes(tmp_path)))
  with pytest.raises(MnistFormatError, match=f'^{re.escape(path)}: {fault}'):
    mnist_files.load_split(str(tmp_path), 'train')


def test_gz_and_plain_twins_with_different_data_are_refused_naming_both(tmp_path):
  _write_split(str(tmp_path), compress=True)
  _write_split(str(tmp_path), labels=LABELS[::-1], compress=False)
  labels = os.path.join(str(tmp_path), 'train-labels-idx1-ubyte')
  with pytest.raises(MnistFormatError, match=re.escape(
      f'{labels} and {labels}.gz hold different data: keep only one of them')):
    mnist_files.load_split(str(tmp_path), 'train')


def test_identical_gz_and_plain_twins_are_read(tmp_path):
  _write_split(str(tmp_path), compress=True)
  _write_split(str(tmp_path), compress=False)
  images, labels = mnist_files.load_split(str(tmp_path), 'train')
  np.testing.assert_array_equal(images, IMAGES)
  np.testing.assert_array_equal(labels, LABELS)
