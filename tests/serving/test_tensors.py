"""The TensorProto codec agrees with TensorFlow's own, in both directions."""
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

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
