"""The Python TFRecord reader against files TensorFlow's own writer wrote, whole and damaged."""
import gzip
import os
import struct

import pytest
import tensorflow as tf

from vaetfx.shared import tfrecords

# An empty record, one byte, one of 2-byte varint length, one longer than a gzip read buffer.
RECORDS = [b'', b'x', bytes(range(256)) * 3, os.urandom(200_000)]


def _write(path: str, records, compression: str = ''):
  with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type=compression)) as writer:
    for record in records:
      writer.write(record)
  return path


@pytest.mark.parametrize('name,compression', [('data.gz', 'GZIP'), ('data.tfrecord', '')])
def test_reads_back_what_tensorflows_writer_wrote(tmp_path, name, compression):
  path = _write(str(tmp_path / name), RECORDS, compression)
  assert list(tfrecords.read_records(path)) == RECORDS


def test_reads_a_uri_through_tensorflows_filesystems():
  path = _write('ram://tfrecords-test/data.gz', RECORDS, 'GZIP')
  assert list(tfrecords.read_records(path)) == RECORDS


def test_an_empty_file_has_no_records(tmp_path):
  assert not list(tfrecords.read_records(_write(str(tmp_path / 'empty.gz'), [], 'GZIP')))


def test_the_masked_crc_is_tensorflows():
  # tensorflow/core/lib/hash/crc32c.h: Mask(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8;
  # the CRC-32C of b'123456789' is the standard check value 0xe3069283.
  crc = 0xe3069283
  assert tfrecords.masked_crc(b'123456789') == (
      ((crc >> 15) | (crc << 17)) + 0xa282ead8) & 0xffffffff


def _damaged(tmp_path, change) -> str:
  """An uncompressed file of RECORDS[1:3] with `change` applied to its bytes, gzipped."""
  with open(_write(str(tmp_path / 'plain'), RECORDS[1:3]), 'rb') as f:
    data = bytearray(f.read())
  path = str(tmp_path / 'damaged.gz')
  with gzip.open(path, 'wb') as f:
    f.write(bytes(change(data)))
  return path


def _flip(offset):
  def change(data):
    data[offset] ^= 0x01
    return data
  return change


@pytest.mark.parametrize('change,message', [
    (_flip(0), "length does not match"),  # the first record's length
    (_flip(12), "data does not match"),  # its one byte of data
    (_flip(14), "data does not match"),  # its data's checksum
    (_flip(17 + 20), "data does not match"),  # inside the second record's data
    (lambda data: data[:-1], 'cut short'),  # the last checksum's last byte missing
    (lambda data: data[:17 + 5], 'cut short'),  # the second record's length half there
    (lambda data: data[:17 + 12 + 100], 'cut short'),  # its data cut
])
def test_a_damaged_file_is_an_error_naming_it(tmp_path, change, message):
  path = _damaged(tmp_path, change)
  with pytest.raises(tfrecords.CorruptRecordFile, match=message) as error:
    list(tfrecords.read_records(path))
  assert path in str(error.value)


def test_a_length_of_terabytes_with_a_valid_checksum_is_cut_short_not_allocated(tmp_path):
  header = struct.pack('<Q', 1 << 42)
  path = str(tmp_path / 'hostile.gz')
  with gzip.open(path, 'wb') as f:
    f.write(header + struct.pack('<I', tfrecords.masked_crc(header)) + b'x' * 100)
  with pytest.raises(tfrecords.CorruptRecordFile, match='cut short'):
    list(tfrecords.read_records(path))


def test_tensorflow_rejects_the_same_damage(tmp_path):
  """The reader is no laxer than TensorFlow's: a flipped data byte fails there too."""
  path = _damaged(tmp_path, _flip(17 + 20))
  with pytest.raises(tf.errors.DataLossError):
    list(tf.data.TFRecordDataset(path, compression_type='GZIP'))
