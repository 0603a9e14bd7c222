"""TensorProto <-> numpy, with TensorFlow's own decoding rules and without calling TensorFlow.

tf.make_ndarray and tf.make_tensor_proto cost tens of microseconds per call
and a TF import; the server decodes every request and the client every
response, so this codec works on the bytes directly. Decoding follows
tensorflow::Tensor::FromProto: `tensor_content` when present, otherwise the
typed value field, where fewer values than elements repeat the last one and
none at all means zeros. Encoding writes `tensor_content` (strings go in
`string_val`), which TF Serving's clients and tf.make_ndarray read alike.
"""
import math
from typing import Tuple

import numpy as np
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
  if proto.dtype not in _FORMATS:
    raise TensorError(f'dtype {dtype_name(proto.dtype)} is not supported')
  if proto.tensor_shape.unknown_rank:
    raise TensorError('the shape has unknown rank')
  shape = tuple(dim.size for dim in proto.tensor_shape.dim)
  if any(size < 0 for size in shape):
    raise TensorError(f'the shape {list(shape)} has a negative size')
  dtype = _FORMATS[proto.dtype][0]
  needed = math.prod(shape) * dtype.itemsize
  if proto.tensor_content and proto.dtype != types_pb2.DT_STRING and (
      len(proto.tensor_content) != needed):
    raise TensorError(f'tensor_content has {len(proto.tensor_content)} bytes, the shape '
                      f'{list(shape)} of {dtype_name(proto.dtype)} needs {needed}')
  return shape


def decoded_bytes(proto: tensor_pb2.TensorProto, shape: Tuple[int, ...]) -> int:
  """What decoding the tensor of `shape` (from declared_shape) would allocate, priced before
  doing it: a single repeated value declaring a billion elements costs a billion elements."""
  count = math.prod(shape)
  if proto.dtype != types_pb2.DT_STRING:
    return count * _FORMATS[proto.dtype][0].itemsize
  values = proto.string_val
  given = sum(len(value) for value in values[:count])
  repeated = (count - len(values)) * len(values[-1]) if values and count > len(values) else 0
  return given + repeated + count * STRING_ELEMENT_BYTES


def to_array(proto: tensor_pb2.TensorProto) -> np.ndarray:
  """The tensor as a numpy array (read-only when it views the request's bytes)."""
  shape = declared_shape(proto)
  dtype, field = _FORMATS[proto.dtype]
  if proto.tensor_content and proto.dtype != types_pb2.DT_STRING:
    return np.frombuffer(proto.tensor_content, dtype).reshape(shape)
  return _repeat_last(_field_values(proto, dtype, field), math.prod(shape)).reshape(shape)


def _field_values(proto, dtype: np.dtype, field: str) -> np.ndarray:
  values = getattr(proto, field)
  if dtype == object:
    return np.array(list(values), dtype=object)
  if proto.dtype == types_pb2.DT_HALF:
    return np.array(values, np.uint16).view(np.float16)
  if dtype.kind not in 'iu' or dtype == np.uint64:
    return np.array(values, dtype)
  # A C++ cast, as FromProto's: int_val holds int32, narrowed here to uint8, int16...
  return np.array(values, np.int64).astype(dtype)


def _repeat_last(values: np.ndarray, count: int) -> np.ndarray:
  if len(values) >= count:
    return values[:count]
  if not len(values):
    return np.full(count, b'', object) if values.dtype == object else np.zeros(count, values.dtype)
  return np.concatenate([values, np.full(count - len(values), values[-1], values.dtype)])


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
