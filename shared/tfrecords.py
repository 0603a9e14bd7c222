"""The records of a TFRecord file (gzipped or not), read in Python, their checksums verified.

The pipeline's scorer and the components that read held-out digits back
(components/digits.py: the report, the drift check, the infra validator) read
ExampleGen's files through this rather than tf.data: beside the model's calls, a
TFRecordDataset's read (mostly its end of file) held a fresh process 0.5 to 4.4 s
at random, against 2 to 9 s of model work on MNIST's 10,000 held-out examples
(docs/measurements.md, "Batch scoring"); decompressing and splitting the file
here takes 0.06-0.07 s. (TF Serving's warmup file, read by serving/warmup.py,
stays with tf.data, so a damaged one keeps TensorFlow's DATA_LOSS status.) The format is
TensorFlow's (tensorflow/core/lib/io/record_writer.h): per record an 8-byte
little-endian length, its masked CRC-32C, the data, the data's masked CRC-32C.
A file cut short or with a wrong checksum is an error naming the file, as it
is for TensorFlow's own reader.
"""
import gzip
import struct
from typing import IO, Iterator

import google_crc32c

from vaetfx.shared import storage

_LENGTH = struct.Struct('<Q')
_CRC = struct.Struct('<I')
_MASK_DELTA = 0xa282ead8
_PIECE_BYTES = 1 << 24


class CorruptRecordFile(ValueError):
  """A TFRecord file cut short or with a record whose checksum does not match."""


def masked_crc(data: bytes) -> int:
  """TFRecord's checksum: CRC-32C rotated and offset, so CRCs of CRCs do not repeat."""
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xffffffff


def _read_exactly(stream: IO[bytes], count: int, path: str) -> bytes:
  """`count` bytes, read at most _PIECE_BYTES at a time: a length field claiming terabytes
  (damage its checksum missed, or a hostile file) ends as "cut short", not a MemoryError."""
  pieces = []
  remaining = count
  while remaining:
    piece = stream.read(min(remaining, _PIECE_BYTES))
    if not piece:
      raise CorruptRecordFile(f'{path}: cut short ({count - remaining} of {count} bytes of a '
                              'record)')
    pieces.append(piece)
    remaining -= len(piece)
  return pieces[0] if len(pieces) == 1 else b''.join(pieces)


def _checked(data: bytes, crc: bytes, path: str, what: str) -> bytes:
  if masked_crc(data) != _CRC.unpack(crc)[0]:
    raise CorruptRecordFile(f'{path}: a record\'s {what} does not match its checksum')
  return data


def _records(stream: IO[bytes], path: str) -> Iterator[bytes]:
  while True:
    header = stream.read(_LENGTH.size)
    if not header:
      return
    if len(header) != _LENGTH.size:
      raise CorruptRecordFile(f'{path}: cut short ({len(header)} bytes of a record\'s length)')
    _checked(header, _read_exactly(stream, _CRC.size, path), path, 'length')
    (length,) = _LENGTH.unpack(header)
    data = _read_exactly(stream, length, path)
    yield _checked(data, _read_exactly(stream, _CRC.size, path), path, 'data')


def read_records(path: str) -> Iterator[bytes]:
  """Each record of the file at `path` (local or a URI), gunzipped if its name ends in .gz."""
  with storage.open_file(path, 'rb') as raw:
    if path.endswith('.gz'):
      with gzip.GzipFile(fileobj=raw, mode='rb') as stream:
        yield from _records(stream, path)
    else:
      yield from _records(raw, path)
