"""JSON <-> tensors as TF Serving's REST API writes them (tensorflow_serving/util/json_tensor.cc).

A request holds its tensors in row form (`"instances"`: one item per row, an object per row
when there are several inputs) or in columnar form (`"inputs"`: one value per input, or the
bare value when there is one); the answer comes in the matching form (`"predictions"` or
`"outputs"`). Values are nested lists that must be dense; binary strings are `{"b64": ...}`.
The value rules and error messages are TF Serving's: a JSON number goes into an integer
tensor only if it is an integer in range, into a float tensor only if no precision is lost,
and floats come back in their shortest form, NaN and Infinity included.

The server and the REST client share this module; it imports no TensorFlow runtime.
"""
import base64
import binascii
import json
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple

import grpc
import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2

from vaetfx.serving import status, tensors

SIGNATURE_KEY = 'signature_name'
ROWS_KEY = 'instances'
COLUMNS_KEY = 'inputs'
ROWS_ANSWER_KEY = 'predictions'
COLUMNS_ANSWER_KEY = 'outputs'
BASE64_KEY = 'b64'
BYTES_SUFFIX = '_bytes'  # A string output so named is written as base64 (TF Serving's rule).
QUOTE_CHARS = 200  # A quoted JSON value in an error message is cut here.
SHORTEST_BLOCK = 1 << 16

# TF Serving's AddValueToTensor: the TensorProto field each DataType's JSON values go in (the
# request's decoding then narrows int_val as TensorFlow does), the JSON integers each integer
# type takes (rapidjson's IsInt, IsInt64, IsUint, IsUint64), and for float types their numpy
# type and the largest integer they hold exactly: they take any number they hold without loss.
_INT32 = (-2**31, 2**31 - 1)
_INTEGERS = {
    types_pb2.DT_INT8: _INT32, types_pb2.DT_INT16: _INT32, types_pb2.DT_INT32: _INT32,
    types_pb2.DT_UINT8: _INT32, types_pb2.DT_INT64: (-2**63, 2**63 - 1),
    types_pb2.DT_UINT32: (0, 2**32 - 1), types_pb2.DT_UINT64: (0, 2**64 - 1),
}
_FLOATS = {types_pb2.DT_FLOAT: (np.float32, 2**24 - 1), types_pb2.DT_DOUBLE: (np.float64, 2**53 - 1)}
_FIELDS = {
    types_pb2.DT_FLOAT: 'float_val', types_pb2.DT_DOUBLE: 'double_val',
    types_pb2.DT_INT8: 'int_val', types_pb2.DT_INT16: 'int_val', types_pb2.DT_INT32: 'int_val',
    types_pb2.DT_UINT8: 'int_val', types_pb2.DT_INT64: 'int64_val',
    types_pb2.DT_UINT32: 'uint32_val', types_pb2.DT_UINT64: 'uint64_val',
    types_pb2.DT_BOOL: 'bool_val', types_pb2.DT_STRING: 'string_val',
}
_JSON_TYPES = {type(None): 'Null', bool: 'Boolean', dict: 'Object', list: 'Array', str: 'String',
               int: 'Number', float: 'Number'}


class JsonError(ValueError):
  """A request whose JSON is malformed or does not fit the signature (INVALID_ARGUMENT)."""


def parse(body: bytes) -> Dict[str, Any]:
  """The request's top-level JSON object."""
  if not body:
    raise JsonError('JSON Parse error: The document is empty')
  try:
    document = json.loads(body)
  except UnicodeDecodeError as e:
    raise JsonError(f'JSON Parse error: Invalid encoding in string at offset: {e.start}') from e
  except json.JSONDecodeError as e:
    raise JsonError(f'JSON Parse error: {e.msg} at offset: {e.pos}') from e
  except RecursionError as e:  # Python's parser recurses once per nested list or object.
    raise JsonError('JSON Parse error: the document nests too deeply') from e
  if not isinstance(document, dict):
    raise JsonError(f'JSON Value: {quote(document)} Is not object')
  return document


def quote(value) -> str:
  """A JSON value as an error message shows it, cut to QUOTE_CHARS."""
  text = json.dumps(value, separators=(',', ':'))
  return text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + '...'


def signature_name(document: Mapping[str, Any]) -> str:
  name = document.get(SIGNATURE_KEY, '')
  if not isinstance(name, str):
    raise JsonError(f'JSON Value: {quote(document)} not formatted correctly. '
                    f"'{SIGNATURE_KEY}' key must be a string value.")
  return name


def fill_inputs(document: Mapping[str, Any], dtypes: Mapping[str, int], inputs) -> bool:
  """Fills `inputs` (a PredictRequest's) from the request's tensors, of the signature's `dtypes`;
  returns whether the request is in row form, which its answer takes."""
  if ROWS_KEY in document and COLUMNS_KEY in document:
    raise JsonError(f"JSON Value: {quote(document)} Not formatted correctly expecting only one "
                    f"of '{COLUMNS_KEY}' or '{ROWS_KEY}' keys to exist")
  if ROWS_KEY in document:
    values = _rows(document[ROWS_KEY], dtypes)
  elif COLUMNS_KEY in document:
    values = _columns(document[COLUMNS_KEY], dtypes)
  else:
    raise JsonError(f"Missing '{COLUMNS_KEY}' or '{ROWS_KEY}' key")
  for alias, value in values.items():
    to_proto(value, dtypes[alias], inputs[alias])
  return ROWS_KEY in document


def _is_base64(value) -> bool:
  return (isinstance(value, dict) and len(value) == 1
          and isinstance(value.get(BASE64_KEY), str))


def _is_named(value) -> bool:
  """An object of named tensors, as opposed to a value (a base64 object is a value)."""
  return isinstance(value, dict) and not _is_base64(value)


def _rows(items, dtypes: Mapping[str, int]) -> Dict[str, list]:
  """`instances`: each item is one row of every input, so each input's value is the list of
  its rows (which must all have one shape)."""
  if not isinstance(items, list):
    raise JsonError(f"Excepting '{ROWS_KEY}' to be an list/array")
  if not items:
    raise JsonError(f"No values in '{ROWS_KEY}' array")
  named = _is_named(items[0])
  if not named and len(dtypes) > 1:
    raise JsonError('instances is a plain list, but expecting list of objects as multiple '
                    'input tensors required as per tensorinfo_map')
  for index, item in enumerate(items):
    if named and not _is_named(item):
      raise JsonError(f'Expecting object but got list at item {index} of input list')
    if not named and _is_named(item):
      raise JsonError(f'Expecting value/list but got object at item {index} of input list')
    if named and set(item) != set(dtypes):
      raise JsonError(f"Failed to process element: {index} of '{ROWS_KEY}' list. JSON object: "
                      f"{quote(item)} keys must be equal to: {','.join(sorted(dtypes))}")
  if not named:
    return {alias: items for alias in dtypes}
  return {alias: [item[alias] for item in items] for alias in dtypes}


def _columns(value, dtypes: Mapping[str, int]) -> Dict[str, Any]:
  """`inputs`: the value of the only input, or an object with a value per input."""
  if not _is_named(value):
    if len(dtypes) > 1:
      raise JsonError('inputs is a plain value/list, but expecting an object as multiple input '
                      'tensors required as per tensorinfo_map')
    return {alias: value for alias in dtypes}
  for alias in dtypes:
    if alias not in value:
      raise JsonError(f"Missing named input: {alias} in '{COLUMNS_KEY}' object.")
  return {alias: value[alias] for alias in dtypes}


def to_proto(value, dtype: int,
             proto: Optional[tensor_pb2.TensorProto] = None) -> tensor_pb2.TensorProto:
  """A dense JSON value (nested lists, or a scalar) as a TensorProto of DataType `dtype`, its
  values in the typed field, as TF Serving fills it (a fresh proto when `proto` is None)."""
  shape, values = _dense(value)
  proto = tensor_pb2.TensorProto() if proto is None else proto
  proto.dtype = dtype
  for size in shape:
    proto.tensor_shape.dim.add().size = size
  if dtype in _FLOATS:
    _check_floats(values, dtype)
  elif dtype in _INTEGERS:
    _check_integers(values, dtype)
  elif dtype == types_pb2.DT_BOOL:
    _check_types(values, (bool,), dtype)
  elif dtype == types_pb2.DT_STRING:
    values = [_string(value) for value in values]
  else:
    raise status.ServingError(grpc.StatusCode.UNIMPLEMENTED,
                              f'Conversion of JSON values to type: {tensors.dtype_name(dtype)}')
  getattr(proto, _FIELDS[dtype]).extend(values)
  return proto


def _dense(value) -> Tuple[Tuple[int, ...], List[Any]]:
  """(shape, values in row-major order): the shape is read down the first items; every list
  at a level must have that level's size, and values may only sit at the last level."""
  shape = []
  probe = value
  while isinstance(probe, list):
    shape.append(len(probe))
    probe = probe[0] if probe else None
  level = [value]
  for depth, size in enumerate(shape):
    below = []
    for item in level:
      if not isinstance(item, list):
        raise JsonError(f'JSON Value: {quote(item)} found at incorrect level: {depth + 1} in the '
                        f'JSON DOM. Expected at level: {len(shape)}')
      if len(item) != size:
        raise JsonError(f'Encountered list at unexpected size: {len(item)} at level: {depth} '
                        f'expected size: {size}')
      below.extend(item)
    level = below
  return tuple(shape), level


def _check_types(values: List[Any], allowed: Tuple[type, ...], dtype: int) -> Set[type]:
  """The values' types, which must be `allowed` exactly: JSON true is not the number 1 (bool
  is an int in Python)."""
  kinds = set(map(type, values))
  if kinds <= set(allowed):
    return kinds
  wrong = next(value for value in values if type(value) not in allowed)  # pylint: disable=unidiomatic-typecheck
  if isinstance(wrong, list):
    raise _below_last_level(wrong)
  raise type_error(wrong, dtype)


def _below_last_level(value) -> JsonError:
  return JsonError(f'Encountered list at unexpected level: {quote(value)} is below the last '
                   f'level of its tensor')


def type_error(value, dtype: int) -> JsonError:
  return JsonError(f'JSON Value: {quote(value)} Type: {_JSON_TYPES.get(type(value), "?")} is '
                   f'not of expected type: {tensors.dtype_name(dtype)}')


def _check_floats(values: List[Any], dtype: int):
  """Numbers the float type holds without loss: integers up to its exact limit, others in its
  range (NaN and the infinities too); one float64 copy of the values, no more."""
  kinds = _check_types(values, (int, float), dtype)
  numpy_type, exact = _FLOATS[dtype]
  worst = None
  if int in kinds:
    worst = next((v for v in values if type(v) is int and abs(v) > exact), None)  # pylint: disable=unidiomatic-typecheck
  if worst is None and values:
    magnitudes = np.array(values, np.float64)
    np.abs(magnitudes, out=magnitudes)
    magnitudes[~np.isfinite(magnitudes)] = 0
    if magnitudes.max() > np.finfo(numpy_type).max:
      worst = values[int(magnitudes.argmax())]
  if worst is not None:
    raise JsonError(f'Cannot convert JSON value: {quote(worst)} to '
                    f'{tensors.dtype_name(dtype)} without loss of precision.')


def _check_integers(values: List[Any], dtype: int):
  _check_types(values, (int,), dtype)
  low, high = _INTEGERS[dtype]
  if values and not low <= min(values) <= max(values) <= high:
    raise type_error(next(value for value in values if not low <= value <= high), dtype)


def _string(value) -> bytes:
  if isinstance(value, str):
    return value.encode('utf-8')
  if isinstance(value, dict):
    if not _is_base64(value):
      raise JsonError(f'JSON Value: {quote(value)} not formatted correctly for base64 data')
    text = value[BASE64_KEY]
    try:  # absl::Base64Unescape: the standard alphabet, padding optional.
      return base64.b64decode(text + '=' * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
      raise JsonError('Unable to base64 decode') from e
  if isinstance(value, list):
    raise _below_last_level(value)
  raise type_error(value, types_pb2.DT_STRING)


def answer(outputs: Mapping[str, np.ndarray], rows: bool) -> Dict[str, Any]:
  """The JSON answer to a Predict: row form for a row request, columnar for a columnar one."""
  values = {alias: to_json(array, alias.endswith(BYTES_SUFFIX))
            for alias, array in sorted(outputs.items())}
  if not rows:
    return {COLUMNS_ANSWER_KEY: values if len(values) > 1 else next(iter(values.values()))}
  for alias, array in sorted(outputs.items()):
    if not array.ndim:
      raise JsonError(f'Tensor name: {alias} has no shape information ')
  batch = outputs[min(outputs)].shape[0]
  for alias, array in sorted(outputs.items()):
    if array.shape[0] != batch:
      raise JsonError(f'Tensor name: {alias} has inconsistent batch size: {array.shape[0]} '
                      f'expecting: {batch}')
  if len(values) == 1:
    return {ROWS_ANSWER_KEY: next(iter(values.values()))}
  return {ROWS_ANSWER_KEY: [dict(zip(values, row)) for row in zip(*values.values())]}


def to_json(array: np.ndarray, base64_strings: bool):
  """An array as nested lists of JSON values: floats in their shortest form that reads back to
  the same float32, strings as text, or as base64 objects if `base64_strings` (TF Serving's
  answers: for outputs whose name ends in `_bytes`)."""
  if array.dtype.kind == 'f' and array.dtype != np.float64:
    return _shortest(array.reshape(-1)).reshape(array.shape).tolist()
  if array.dtype == object:
    if base64_strings:
      encode = lambda value: {BASE64_KEY: base64.b64encode(value).decode('ascii')}
    else:
      encode = lambda value: value.decode('utf-8', 'replace')
    return np.frompyfunc(encode, 1, 1)(array).tolist() if array.ndim else encode(array.item())
  return array.tolist()


def _shortest(values: np.ndarray) -> np.ndarray:
  """float32 (or float16) values as the float64s of their shortest decimals, which JSON
  writes in as few digits. A block at a time: numpy's decimal strings take 128 bytes a value."""
  if not values.size:
    return values.astype(np.float64)
  return np.concatenate([values[start:start + SHORTEST_BLOCK].astype(str).astype(np.float64)
                         for start in range(0, values.size, SHORTEST_BLOCK)])
