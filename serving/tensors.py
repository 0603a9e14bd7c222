"""TensorProto <-> numpy, with TensorFlow's own decoding rules and without calling TensorFlow.

tf.make_ndarray and tf.make_tensor_proto cost tens of microseconds per call
and a TF import; the server decodes every request and the client every
response, so this codec works on the bytes directly. Decoding follows
tensorflow::Tensor::FromProto: a shape without elements is empty whatever the
proto holds; otherwise `tensor_content` when present (for strings,
TensorFlow's encoding: every length as a varint32, then the bytes back to
back), otherwise the typed value field, where fewer values than elements
repeat the last one and none at all means zeros. More values than elements
are not an error, as in TensorFlow: the first ones fill the shape and the
rest are ignored, never converted, so decoding costs what the declared shape
costs whatever the request carries (the server prices the surplus before
decoding, with `parsed_bytes`). Encoding writes `tensor_content` (strings go in
`string_val`), which TF Serving's clients and tf.make_ndarray read alike.
"""
import math
from typing import Tuple

import numpy as np
from google.protobuf import descriptor
from tensorflow.core.framework import tensor_pb2, types_pb2

# DataType -> (numpy dtype, the TensorProto field holding its values when there is no content).
_FORMATS = {
    types_pb2.DT_FLOAT: (np.dtype(np.float32), 'float_val'),
    types_pb2.DT_DOUBLE: (np.dtype(np.float64), 'double_val'),
    types_pb2.DT_HALF: (np.dtype(np.float16), 'half_val'),
    types_pb2.DT_INT8: (np.dtype(np.int8), 'int_val'),
    types_pb2.DT_INT16: (np.dtype(np.int16), 'int_val'),
    types_pb2.DT_INT32: (np.dtype(np.int32), 'int_val'),
    types_pb2.DT_INT64: (np.dtype(np.int64), 'int64_val'),
    types_pb2.DT_UINT8: (np.dtype(np.uint8), 'int_val'),
    types_pb2.DT_UINT16: (np.dtype(np.uint16), 'int_val'),
    types_pb2.DT_UINT32: (np.dtype(np.uint32), 'uint32_val'),
    types_pb2.DT_UINT64: (np.dtype(np.uint64), 'uint64_val'),
    types_pb2.DT_BOOL: (np.dtype(np.bool_), 'bool_val'),
    types_pb2.DT_STRING: (np.dtype(object), 'string_val'),
}
_DATA_TYPES = {dtype: data_type for data_type, (dtype, _) in _FORMATS.items()}
# A string element's cost beyond its bytes: a numpy object pointer and TensorFlow's 24-byte tstring.
STRING_ELEMENT_BYTES = 32
# Repeated values are converted this many at a time: a chunk's Python objects are all that
# exist at once, so decoding memory is the output array's.
CHUNK_VALUES = 1 << 16
# What one repeated value of each C++ type takes in a parsed message beyond its serialized
# bytes (protobuf's RepeatedField, or a pointer and a std::string or message object).
_PARSED_BYTES_BY_CPP_TYPE = {
    descriptor.FieldDescriptor.CPPTYPE_INT32: 4, descriptor.FieldDescriptor.CPPTYPE_UINT32: 4,
    descriptor.FieldDescriptor.CPPTYPE_FLOAT: 4, descriptor.FieldDescriptor.CPPTYPE_INT64: 8,
    descriptor.FieldDescriptor.CPPTYPE_UINT64: 8, descriptor.FieldDescriptor.CPPTYPE_DOUBLE: 8,
    descriptor.FieldDescriptor.CPPTYPE_BOOL: 1, descriptor.FieldDescriptor.CPPTYPE_ENUM: 4,
    descriptor.FieldDescriptor.CPPTYPE_STRING: 40, descriptor.FieldDescriptor.CPPTYPE_MESSAGE: 64,
}
# Every repeated field of TensorProto, whether or not its dtype reads it: each may be sent.
_REPEATED_FIELDS = {field.name: _PARSED_BYTES_BY_CPP_TYPE[field.cpp_type]
                    for field in tensor_pb2.TensorProto.DESCRIPTOR.fields
                    if field.label == descriptor.FieldDescriptor.LABEL_REPEATED}


class TensorError(ValueError):
  """A TensorProto that does not describe a tensor, or an array with no TensorProto dtype."""


def dtype_name(data_type: int) -> str:
  """TensorFlow's spelling (DataTypeString): 'float', 'uint8', 'string'."""
  try:
    return types_pb2.DataType.Name(data_type)[len('DT_'):].lower()
  except ValueError:
    return f'DataType({data_type})'


def declared_shape(proto: tensor_pb2.TensorProto) -> Tuple[int, ...]:
  """The shape a TensorProto declares, checked against its dtype and tensor_content (not its
  typed values, which TensorFlow repeats or cuts to fit); nothing is decoded."""
  return _checked_shape(proto, proto.tensor_content)


def _checked_shape(proto: tensor_pb2.TensorProto, content: bytes) -> Tuple[int, ...]:
  if proto.dtype not in _FORMATS:
    raise TensorError(f'dtype {dtype_name(proto.dtype)} is not supported')
  if proto.tensor_shape.unknown_rank:
    raise TensorError('the shape has unknown rank')
  shape = tuple(dim.size for dim in proto.tensor_shape.dim)
  if any(size < 0 for size in shape):
    raise TensorError(f'the shape {list(shape)} has a negative size')
  needed = math.prod(shape) * element_bytes(proto.dtype)
  if needed and content and proto.dtype != types_pb2.DT_STRING and len(content) != needed:
    raise TensorError(f'tensor_content has {len(content)} bytes, the shape '
                      f'{list(shape)} of {dtype_name(proto.dtype)} needs {needed}')
  return shape


def element_bytes(data_type: int) -> int:
  """What one element of a tensor of `data_type` takes decoded (a string: beyond its bytes)."""
  if data_type not in _FORMATS:
    raise TensorError(f'dtype {dtype_name(data_type)} is not supported')
  if data_type == types_pb2.DT_STRING:
    return STRING_ELEMENT_BYTES
  return _FORMATS[data_type][0].itemsize


def parsed_bytes(proto: tensor_pb2.TensorProto) -> int:
  """What a TensorProto's repeated values take in the parsed message beyond their serialized
  bytes, in every field, read by its dtype or not: values beyond the shape cost memory too,
  though decoding ignores them. Read from the fields' lengths alone, nothing converted."""
  return sum(len(getattr(proto, field)) * value_bytes
             for field, value_bytes in _REPEATED_FIELDS.items())


def decoded_bytes(proto: tensor_pb2.TensorProto, shape: Tuple[int, ...],
                  string_bytes: int) -> int:
  """What a TensorProto of `shape` (from declared_shape) takes decoded, before any value is
  converted: one repeated value declaring a billion elements costs a billion elements. A
  string costs STRING_ELEMENT_BYTES and its bytes: `string_bytes`, what the caller knows the
  strings sent take at most (the message's size), plus the last string_val value again for
  each element it fills."""
  count = math.prod(shape)
  decoded = count * element_bytes(proto.dtype)
  if proto.dtype != types_pb2.DT_STRING:
    return decoded
  values = proto.string_val
  repeated = (count - len(values)) * len(values[-1]) if values and count > len(values) else 0
  return decoded + string_bytes + repeated


def to_array(proto: tensor_pb2.TensorProto) -> np.ndarray:
  """The tensor as a numpy array (read-only when it views the request's bytes); converts at
  most the declared shape's values."""
  content = proto.tensor_content
  shape = _checked_shape(proto, content)
  count = math.prod(shape)
  dtype, field = _FORMATS[proto.dtype]
  if count and content and dtype == object:
    return _strings_from_content(content, count).reshape(shape)
  if count and content:
    return np.frombuffer(content, dtype).reshape(shape)
  return _repeat_last(_field_values(proto, dtype, field, count), count).reshape(shape)


def _field_values(proto, dtype: np.dtype, field: str, count: int) -> np.ndarray:
  """The typed field's first `count` values (all of them if fewer), CHUNK_VALUES at a time."""
  values = getattr(proto, field)
  given = min(len(values), count)
  array = np.empty(given, dtype)
  for start in range(0, given, CHUNK_VALUES):
    stop = min(start + CHUNK_VALUES, given)
    array[start:stop] = _converted(proto.dtype, dtype, values[start:stop])
  return array


def _converted(data_type: int, dtype: np.dtype, values: list):
  if dtype == object:
    return values
  if data_type == types_pb2.DT_HALF:  # half_val holds each half's 16 bits in an int32.
    return np.array(values, np.int64).astype(np.uint16).view(np.float16)
  if dtype.kind not in 'iu' or dtype == np.uint64:
    return np.array(values, dtype)
  # A C++ cast, as FromProto's: int_val holds int32, narrowed here to uint8, int16...
  return np.array(values, np.int64).astype(dtype)


def _repeat_last(values: np.ndarray, count: int) -> np.ndarray:
  if len(values) >= count:
    return values
  if not len(values):
    return np.full(count, b'', object) if values.dtype == object else np.zeros(count, values.dtype)
  return np.concatenate([values, np.full(count - len(values), values[-1], values.dtype)])


def _strings_from_content(content: bytes, count: int) -> np.ndarray:
  """TensorFlow's string tensor_content (DecodeStringList, tensorflow/core/platform/
  tensor_coding.cc): `count` lengths as varint32, then the strings back to back, nothing after."""
  lengths, offset = [], 0
  for _ in range(count):
    length, offset = _varint32(content, offset)
    lengths.append(length)
  if offset + sum(lengths) != len(content):
    raise TensorError(f'tensor_content has {len(content)} bytes, but the {count} string lengths '
                      f'it starts with give {offset + sum(lengths)}')
  strings = np.empty(count, object)
  for index, length in enumerate(lengths):
    strings[index] = content[offset:offset + length]
    offset += length
  return strings


def _varint32(content: bytes, offset: int) -> Tuple[int, int]:
  """(value, offset after it) of the varint32 at `offset`, as protobuf's GetVarint32 reads it."""
  value = 0
  for shift in range(0, 35, 7):
    if offset == len(content):
      raise TensorError(f'tensor_content ends inside a string length at byte {offset}')
    byte = content[offset]
    offset += 1
    value |= (byte & 0x7f) << shift
    if byte < 0x80:
      return value & 0xFFFFFFFF, offset
  raise TensorError(f'tensor_content has a string length of more than 5 bytes at byte '
                    f'{offset - 5}')


def to_proto(array, proto: tensor_pb2.TensorProto = None) -> tensor_pb2.TensorProto:
  """Fills `proto` (a fresh one when None, else e.g. response.outputs[name]) and returns it."""
  array = np.asarray(array)
  if array.dtype.kind in 'SU':
    array = array.astype(object)
  if array.dtype not in _DATA_TYPES:
    raise TensorError(f'numpy dtype {array.dtype} has no TensorFlow DataType here')
  proto = tensor_pb2.TensorProto() if proto is None else proto
  proto.dtype = _DATA_TYPES[array.dtype]
  for size in array.shape:
    proto.tensor_shape.dim.add().size = size
  if array.dtype == object:
    proto.string_val.extend(_as_bytes(value) for value in array.reshape(-1))
  else:
    proto.tensor_content = np.ascontiguousarray(array).tobytes()
  return proto


def _as_bytes(value) -> bytes:
  return value.encode('utf-8') if isinstance(value, str) else bytes(value)
