"""The TensorProto codec agrees with TensorFlow's own, in both directions, and prices what a
TensorProto carries and declares before converting anything."""
import tracemalloc

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf.descriptor import FieldDescriptor
from tensorflow.core.framework import tensor_pb2, types_pb2

from tests.serving.helpers import varint
from vaetfx.serving import tensors

ARRAYS = [
    np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
    np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2),
    np.array([1, -2, 3], np.int64),
    np.array(7, np.int32),
    np.array([True, False]),
    np.array([0.5, 2.0], np.float16),
    np.array([2**63 + 5], np.uint64),
    np.array([b'a', b'\x00bc'], dtype=object),
    np.zeros((0, 28, 28), np.uint8),
]


@pytest.mark.parametrize('array', ARRAYS, ids=lambda a: f'{a.dtype}{list(a.shape)}')
def test_round_trip_and_tensorflow_reads_ours(array):
  proto = tensors.to_proto(array)
  decoded = tensors.to_array(proto)
  assert decoded.dtype == array.dtype and decoded.shape == array.shape
  np.testing.assert_array_equal(decoded, array)
  np.testing.assert_array_equal(tf.make_ndarray(proto), array)


@pytest.mark.parametrize('array', ARRAYS, ids=lambda a: f'{a.dtype}{list(a.shape)}')
def test_we_read_tensorflow_typed_fields(array):
  """tf.make_tensor_proto writes some dtypes as typed fields, not content (TF Serving replies)."""
  np.testing.assert_array_equal(tensors.to_array(tf.make_tensor_proto(array)), array)


def test_typed_fields_follow_from_proto_rules():
  """Fewer values than elements repeat the last one; none at all means zeros."""
  proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0, 2.0])
  proto.tensor_shape.dim.add().size = 4
  np.testing.assert_array_equal(tensors.to_array(proto), [1, 2, 2, 2])
  del proto.float_val[:]
  np.testing.assert_array_equal(tensors.to_array(proto), [0, 0, 0, 0])
  as_uint8 = tensor_pb2.TensorProto(dtype=types_pb2.DT_UINT8, int_val=[3, 255])
  as_uint8.tensor_shape.dim.add().size = 2
  assert tensors.to_array(as_uint8).dtype == np.uint8


def test_malformed_protos_are_errors():
  short = tensors.to_proto(np.zeros((2, 2), np.float32))
  short.tensor_content = short.tensor_content[:-1]
  unknown_rank = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
  unknown_rank.tensor_shape.unknown_rank = True
  for proto in (short, unknown_rank, tensor_pb2.TensorProto(dtype=types_pb2.DT_RESOURCE)):
    with pytest.raises(tensors.TensorError):
      tensors.to_array(proto)
  assert tensors.dtype_name(types_pb2.DT_FLOAT) == 'float'


def _string_content_proto(content: bytes, count: int) -> tensor_pb2.TensorProto:
  proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_content=content)
  proto.tensor_shape.dim.add().size = count
  return proto


STRINGS = [[b'example-1', b'example-22'], [b'', b'x' * 200, b'\xff\x00'], [b'y' * 20_000], []]


@pytest.mark.parametrize('strings', STRINGS, ids=lambda s: f'{len(s)} strings')
def test_string_tensor_content_decodes_as_tensorflow_decodes_it(strings):
  """TensorFlow's encoding: every length as a varint32, then the bytes (lengths of 200 and
  20,000 take two and three bytes)."""
  content = b''.join(varint(len(s)) for s in strings) + b''.join(strings)
  proto = _string_content_proto(content, len(strings))
  expected = tf.io.parse_tensor(proto.SerializeToString(), tf.string).numpy()
  decoded = tensors.to_array(proto)
  assert decoded.dtype == object and decoded.tolist() == expected.tolist() == strings


@pytest.mark.parametrize('content, count, message', [
    (b'\x02\x03abcd', 2, 'tensor_content has 6 bytes, but the 2 string lengths it starts '
                          'with give 7'),
    (b'\x01\x01a', 2, 'tensor_content has 3 bytes, but the 2 string lengths it starts with '
                       'give 4'),
    (b'\x01ab', 1, 'tensor_content has 3 bytes, but the 1 string lengths it starts with give 2'),
    (b'\x81', 1, 'tensor_content ends inside a string length at byte 1'),
    (b'\x80' * 6, 1, 'tensor_content has a string length of more than 5 bytes at byte 0'),
])
def test_string_tensor_content_that_tensorflow_refuses_is_an_error(content, count, message):
  proto = _string_content_proto(content, count)
  with pytest.raises(tf.errors.InvalidArgumentError):
    tf.io.parse_tensor(proto.SerializeToString(), tf.string)
  with pytest.raises(tensors.TensorError) as raised:
    tensors.to_array(proto)
  assert str(raised.value) == message


@pytest.mark.parametrize('dtype', [types_pb2.DT_STRING, types_pb2.DT_FLOAT])
def test_a_tensor_of_no_elements_ignores_its_content_as_in_tensorflow(dtype):
  proto = _string_content_proto(b'\x05', 0)
  proto.dtype = dtype
  expected = tf.io.parse_tensor(proto.SerializeToString(), tf.dtypes.as_dtype(dtype))
  assert tensors.to_array(proto).shape == expected.shape == (0,)


@pytest.mark.parametrize('field, values, dtype', [
    ('int_val', [9] * 5_000_000, types_pb2.DT_UINT8),
    ('float_val', [0.5] * 2_000_000, types_pb2.DT_FLOAT),
    ('string_val', [b'abc'] * 500_000, types_pb2.DT_STRING),
])
def test_surplus_values_are_ignored_as_in_tensorflow_and_never_converted(field, values, dtype):
  """Tensor::FromProto fills the shape with the first values and ignores the rest. Decoding
  784 elements must not turn millions of values into Python objects: its memory stays far
  below what converting them all took (40 MB for the ints, before this was fixed)."""
  proto = tensor_pb2.TensorProto(dtype=dtype)
  proto.tensor_shape.dim.add().size = 784
  getattr(proto, field).extend(values)
  tracemalloc.start()
  try:
    decoded = tensors.to_array(proto)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert peak < 4 << 20, f'decoding took {peak} bytes'
  np.testing.assert_array_equal(decoded, tf.make_ndarray(_first(proto, field, 784)))
  assert decoded.shape == (784,)


def _first(proto, field, count):
  """The same tensor with only the values TensorFlow reads."""
  cut = tensor_pb2.TensorProto()
  cut.CopyFrom(proto)
  del getattr(cut, field)[count:]
  return cut


_SAMPLE_VALUES = {
    FieldDescriptor.CPPTYPE_INT32: 7, FieldDescriptor.CPPTYPE_INT64: 7,
    FieldDescriptor.CPPTYPE_UINT32: 7, FieldDescriptor.CPPTYPE_UINT64: 7,
    FieldDescriptor.CPPTYPE_FLOAT: 0.5, FieldDescriptor.CPPTYPE_DOUBLE: 0.5,
    FieldDescriptor.CPPTYPE_BOOL: True, FieldDescriptor.CPPTYPE_STRING: b'',
}
REPEATED_FIELDS = [field for field in tensor_pb2.TensorProto.DESCRIPTOR.fields
                   if field.label == FieldDescriptor.LABEL_REPEATED]


@pytest.mark.parametrize('field', REPEATED_FIELDS, ids=lambda field: field.name)
def test_every_value_sent_is_priced_whatever_the_dtype_reads(field):
  """A [2] float tensor carrying 100,000 more values in any field costs at least 100,000
  values' memory as parsed; decoded, it is still 2 floats."""
  proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
  proto.tensor_shape.dim.add().size = 2
  values = getattr(proto, field.name)
  for _ in range(100_000):
    if field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
      values.add()
    else:
      values.append(_SAMPLE_VALUES[field.cpp_type])
  assert tensors.parsed_bytes(proto) >= 100_000, field.name
  assert tensors.decoded_bytes(proto, (2,), proto.ByteSize()) == 8


def test_strings_are_priced_by_their_bytes_and_repeats():
  strings = _string_content_proto(varint(1 << 20) + varint(0) + b'z' * (1 << 20), 2)
  assert tensors.decoded_bytes(strings, (2,), 1 << 20) == (1 << 20) + 2 * 32
  repeated = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b'q' * 1000])
  repeated.tensor_shape.dim.add().size = 5000
  assert tensors.decoded_bytes(repeated, (5000,), 1003) == 1003 + 4999 * 1000 + 5000 * 32
