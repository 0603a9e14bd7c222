"""components/digits.py: held-out digits read back from a split folder with the one TFRecord
reader (shared/tfrecords.py), in file-name order, as tf.data read them before."""
import gzip
import os

import numpy as np
import pytest
import tensorflow as tf

from vaetfx.components import digits
from vaetfx.shared import examples, tfrecords


def _write(path, images, labels):
  with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type='GZIP')) as writer:
    for record in examples.serialize_examples(images, labels):
      writer.write(record)


@pytest.fixture
def split(tmp_path):
  """Two gzipped files of 7 and 5 digits, written out of name order; the images and labels in
  name order."""
  rng = np.random.default_rng(3)
  images = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
  labels = rng.integers(0, 10, 12)
  _write(str(tmp_path / 'data-00001-of-00002.gz'), images[7:], labels[7:])
  _write(str(tmp_path / 'data-00000-of-00002.gz'), images[:7], labels[:7])
  return str(tmp_path), images, labels


@pytest.mark.parametrize('count', [-1, 1, 3, 7, 9, 12, 50])
def test_the_first_count_digits_in_file_name_order(split, count):
  split_uri, images, labels = split
  read_images, read_labels = digits.read_heldout_digits(split_uri, count)
  expected = slice(None) if count < 0 else slice(count)
  np.testing.assert_array_equal(read_images, images[expected])
  np.testing.assert_array_equal(read_labels, labels[expected])


def test_the_records_are_those_tf_data_reads(split):
  split_uri = split[0]
  files = sorted(tf.io.gfile.glob(os.path.join(split_uri, '*')))
  expected = [record.numpy()
              for record in tf.data.TFRecordDataset(files, compression_type='GZIP').take(9)]
  assert digits.read_records(split_uri, 9) == expected


def test_a_damaged_file_is_an_error_naming_it(split):
  split_uri = split[0]
  path = os.path.join(split_uri, 'data-00001-of-00002.gz')
  with open(path, 'rb') as f:
    raw = bytearray(gzip.decompress(f.read()))
  raw[30] ^= 0xff  # inside the first record's data: its checksum no longer matches
  with open(path, 'wb') as f:
    f.write(gzip.compress(bytes(raw)))
  assert len(digits.read_records(split_uri, 7)) == 7  # the first file alone is whole
  with pytest.raises(tfrecords.CorruptRecordFile, match='data-00001-of-00002.gz'):
    digits.read_records(split_uri)


def test_an_empty_split_folder_says_so(tmp_path):
  with pytest.raises(FileNotFoundError, match='no example files'):
    digits.read_records(str(tmp_path))
