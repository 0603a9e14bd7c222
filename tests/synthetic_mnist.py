"""Small MNIST-like data sets for the tests: digits drawn with PIL, written as real files.

The tests never need the real MNIST: these images have MNIST's shape, dtype,
value range and file formats (IDX, optionally gzip-compressed, and Keras'
mnist.npz), so every reader and every component runs on them unchanged.
"""
import gzip
import os
import struct

import numpy as np
from PIL import Image, ImageDraw, ImageFont

IDX_NAMES = {
    'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
    'eval': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'),
}


def draw_digits(count: int, seed: int = 0):
  """Returns (images uint8 [count, 28, 28], labels uint8 [count]) of drawn digits 0-9."""
  rng = np.random.default_rng(seed)
  font = ImageFont.load_default(size=22)
  labels = (np.arange(count) % 10).astype(np.uint8)
  rng.shuffle(labels)
  images = np.zeros((count, 28, 28), np.uint8)
  for i, label in enumerate(labels):
    canvas = Image.new('L', (28, 28), 0)
    offset = rng.integers(-2, 3, size=2)
    ImageDraw.Draw(canvas).text((14 + offset[0], 14 + offset[1]), str(label),
                                fill=255, font=font, anchor='mm')
    angle = float(rng.uniform(-15, 15))
    images[i] = np.asarray(canvas.rotate(angle, resample=Image.BILINEAR))
  return images, labels


def idx_bytes(array: np.ndarray) -> bytes:
  """Encodes a uint8 array in the IDX format: magic (0, 0, 0x08, ndim), big-endian dims, data."""
  header = struct.pack('>BBBB', 0, 0, 0x08, array.ndim)
  header += struct.pack(f'>{array.ndim}I', *array.shape)
  return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_file(path: str, data: bytes, compress: bool) -> str:
  if compress:
    path += '.gz'
    data = gzip.compress(data)
  with open(path, 'wb') as f:
    f.write(data)
  return path


def write_mnist_idx(directory, splits, compress=True):
  """Writes {'train': (images, labels), 'eval': (...)} as the four MNIST IDX files."""
  os.makedirs(directory, exist_ok=True)
  for split, (images, labels) in splits.items():
    images_name, labels_name = IDX_NAMES[split]
    write_file(os.path.join(directory, images_name), idx_bytes(images), compress)
    write_file(os.path.join(directory, labels_name), idx_bytes(labels), compress)
  return directory


def write_mnist_npz(directory, splits):
  """Writes the splits as Keras' mnist.npz (x_train, y_train, x_test, y_test)."""
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, 'mnist.npz')
  (x_train, y_train), (x_test, y_test) = splits['train'], splits['eval']
  np.savez_compressed(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
  return path


def make_splits(train_count=200, eval_count=100, seed=0):
  return {'train': draw_digits(train_count, seed), 'eval': draw_digits(eval_count, seed + 1)}
