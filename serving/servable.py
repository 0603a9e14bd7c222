"""One loaded model version: its SignatureDefs, and Predict's checks and call as in TF Serving.

Every request tensor is checked against the SignatureDef's dtype and shape,
and the request's price (what it sent, its inputs decoded, its answer) against
the server's limits (limits.py), before any value is converted: TF Serving
leaves the checks to the TensorFlow runtime, but with TF 2.16 some wrong-rank
inputs to a convolution abort the process instead of raising, and a small
request may declare a huge tensor or carry far more values than its shape. The
model then runs in slices of rows, so a large request's memory stays that of a
slice.
"""
import dataclasses
import math
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from vaetfx.serving import limits as limits_lib
from vaetfx.serving import status, tensors

DEFAULT_SIGNATURE = 'serving_default'  # TF Serving's kDefaultServingSignatureDefKey.
SERVE_TAG = 'serve'


Shape = Optional[Tuple[Optional[int], ...]]  # None: unknown rank; a None size: unknown size.


def describe_shape(shape: Shape) -> str:
  """TensorShape's DebugString: [?,28,28], or <unknown>."""
  if shape is None:
    return '<unknown>'
  return '[' + ','.join('?' if size is None else str(size) for size in shape) + ']'


@dataclasses.dataclass(frozen=True)
class TensorSpec:
  """What a signature declares for one input or output: DataType enum and shape."""
  dtype: int
  shape: Shape

  @classmethod
  def from_tensor_info(cls, info: meta_graph_pb2.TensorInfo) -> 'TensorSpec':
    if info.tensor_shape.unknown_rank:
      return cls(info.dtype, None)
    return cls(info.dtype, tuple(None if dim.size < 0 else dim.size
                                 for dim in info.tensor_shape.dim))

  def accepts_shape(self, shape: Tuple[int, ...]) -> bool:
    if self.shape is None:
      return True
    return len(shape) == len(self.shape) and all(
        want is None or want == got for want, got in zip(self.shape, shape))

  @property
  def batched(self) -> bool:
    """Dimension 0 is a free batch dimension, so requests can be concatenated along it."""
    return bool(self.shape) and self.shape[0] is None

  def answer_bytes(self, rows: int) -> int:
    """Its size as an output of `rows` rows (an open batch dimension); other open dimensions
    are unknown until the model runs and count as 1."""
    sizes = [rows if index == 0 and size is None else 1 if size is None else size
             for index, size in enumerate(self.shape or ())]
    return math.prod(sizes) * tensors.element_bytes(self.dtype)


@dataclasses.dataclass(frozen=True)
class Signature:
  """A signature ready to run: checked and priced inputs in, numpy outputs out."""
  name: str
  inputs: Mapping[str, TensorSpec]
  outputs: Mapping[str, TensorSpec]
  function: Callable

  @property
  def batchable(self) -> bool:
    return all(spec.batched for spec in self.inputs.values())

  def admit(self, request_inputs: Mapping, output_filter: Sequence[str],
            limits: limits_lib.Limits,
            wire_bytes: int) -> Tuple[Tuple[str, ...], limits_lib.Price]:
    """(output names, price) of a request of `wire_bytes` serialized, in TF Serving's order of
    checks: aliases, dtypes and declared shapes against the signature, then the output filter;
    then its sizes against `limits`. Only a scalar sample count is converted: it sets the
    answer's rows."""
    self._check_aliases(request_inputs)
    shapes = {alias: self._declared_shape(alias, request_inputs[alias]) for alias in self.inputs}
    outputs = self.output_names(output_filter)
    limits.check_rows(
        {alias: shape[0] for alias, shape in shapes.items() if self.inputs[alias].batched})
    rows = self._answer_rows(request_inputs, shapes, limits)
    price = limits_lib.Price(
        wire_bytes + sum(tensors.parsed_bytes(request_inputs[alias]) for alias in shapes),
        sum(tensors.decoded_bytes(request_inputs[alias], shape, wire_bytes)
            for alias, shape in shapes.items()),
        sum(self.outputs[alias].answer_bytes(rows) for alias in outputs))
    limits.check_inputs(price)
    return outputs, price

  def _answer_rows(self, request_inputs: Mapping, shapes: Mapping[str, Tuple[int, ...]],
                   limits: limits_lib.Limits) -> int:
    """Rows of the answer: the inputs' (batchable signatures), or `sample`'s count."""
    if self.batchable:
      return max(shape[0] for shape in shapes.values())
    if self.name != limits_lib.SAMPLE_SIGNATURE or limits_lib.SAMPLE_COUNT_INPUT not in shapes:
      return 1
    count = int(tensors.to_array(request_inputs[limits_lib.SAMPLE_COUNT_INPUT]))
    limits.check_sample_count(count)
    return count

  def decode(self, request_inputs: Mapping) -> Dict[str, np.ndarray]:
    """The admitted request's inputs as arrays; a string tensor_content TensorFlow could not
    read is a tensor parsing error, as in TF Serving."""
    arrays = {}
    for alias in self.inputs:
      try:
        arrays[alias] = tensors.to_array(request_inputs[alias])
      except tensors.TensorError as e:
        raise status.invalid_argument(f'tensor parsing error: {alias} ({e})') from e
    return arrays

  def _declared_shape(self, alias: str, proto) -> Tuple[int, ...]:
    spec = self.inputs[alias]
    try:
      shape = tensors.declared_shape(proto)
    except tensors.TensorError as e:
      raise status.invalid_argument(f'tensor parsing error: {alias} ({e})') from e
    if proto.dtype != spec.dtype:
      raise status.invalid_argument(
          f'Expected input {alias} to be {tensors.dtype_name(spec.dtype)} but get '
          f'{tensors.dtype_name(proto.dtype)}.')
    if not spec.accepts_shape(shape):
      raise status.invalid_argument(
          f'Expected input {alias} to have shape {describe_shape(spec.shape)} but get '
          f'{describe_shape(shape)}.')
    if spec.batched and not shape[0]:
      raise status.invalid_argument(
          f'Input {alias} has no rows (shape {describe_shape(shape)}): send at least one.')
    return shape

  def _check_aliases(self, request_inputs: Mapping):
    """TF Serving's VerifyRequestInputsSize and GetInputValues, with their messages."""
    sent, expected = set(request_inputs), set(self.inputs)
    if sent == expected:
      return
    if len(sent) != len(expected):
      raise status.invalid_argument(
          f'input size does not match signature: {len(sent)}!={len(expected)} '
          f'len({{{_join(sent)}}}) != len({{{_join(expected)}}}). Sent extra: '
          f'{{{_join(sent - expected)}}}. Missing but required: {{{_join(expected - sent)}}}.')
    raise status.invalid_argument(
        f'input tensor alias not found in signature: {_join(sent - expected)}. '
        f'Inputs expected to be in the set {{{_join(expected)}}}.')

  def output_names(self, output_filter: Sequence[str]) -> Tuple[str, ...]:
    """The outputs a request asks for: all of them unless it filters."""
    for i, alias in enumerate(output_filter):
      if alias not in self.outputs:
        raise status.invalid_argument(
            f'output tensor alias not found in signature: {alias} Outputs expected to be in '
            f'the set {{{_join(self.outputs)}}}.')
      if alias in output_filter[:i]:
        raise status.invalid_argument(f'duplicate output tensor alias: {alias}')
    return tuple(output_filter) or tuple(self.outputs)

  def rows(self, inputs: Mapping[str, np.ndarray]) -> int:
    """Dimension 0 of the inputs of a batchable signature; 0 for others."""
    return len(next(iter(inputs.values()))) if self.batchable else 0

  def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str],
          slice_rows: int) -> Dict[str, np.ndarray]:
    """Calls the model `slice_rows` rows at a time (batchable signatures), so a big request
    costs the memory of one slice plus its answer; answers equal those of a single call."""
    rows = self.rows(inputs)
    if rows <= slice_rows:
      return self._call(inputs, outputs)
    results = {}
    for start in range(0, rows, slice_rows):
      stop = min(start + slice_rows, rows)
      part = self._call({alias: array[start:stop] for alias, array in inputs.items()}, outputs)
      for alias, array in part.items():
        if array.shape[:1] != (stop - start,):
          raise status.ServingError(
              grpc.StatusCode.INTERNAL,
              f'Output {alias} has shape {list(array.shape)} for a slice of {stop - start} '
              f'rows: its 0th dimension is not the batch, so it cannot run in slices')
        if alias not in results:
          results[alias] = np.empty((rows, *array.shape[1:]), array.dtype)
        results[alias][start:stop] = array
    return results

  def _call(self, inputs: Mapping[str, np.ndarray],
            outputs: Sequence[str]) -> Dict[str, np.ndarray]:
    """One model call; its runtime errors keep TensorFlow's status code."""
    try:
      results = self.function(**inputs)
    except tf.errors.OpError as e:
      raise status.ServingError(status.code_from_number(e.error_code), e.message) from e
    except UnicodeDecodeError as e:
      # TensorFlow could not raise its error: the message quotes input bytes that are not
      # UTF-8 ("Could not parse example input, value: '...'"), and only input checks quote
      # inputs, so it is the client's error.
      raise status.invalid_argument(e.object.decode('utf-8', 'backslashreplace')) from e
    return {alias: results[alias].numpy() for alias in outputs}


def _join(names) -> str:
  return ','.join(sorted(names))


def tensor_specs(tensor_infos: Mapping[str, meta_graph_pb2.TensorInfo]) -> Dict[str, TensorSpec]:
  """By alias, in sorted order: the order outputs are answered in."""
  return {alias: TensorSpec.from_tensor_info(tensor_infos[alias]) for alias in sorted(tensor_infos)}


def read_signature_defs(path: str) -> Dict[str, meta_graph_pb2.SignatureDef]:
  """The SignatureDefs of the `serve` MetaGraph, as TF Serving reads them from saved_model.pb."""
  with tf.io.gfile.GFile(tf.io.gfile.join(path, 'saved_model.pb'), 'rb') as f:
    saved_model = saved_model_pb2.SavedModel.FromString(f.read())
  for meta_graph in saved_model.meta_graphs:
    if SERVE_TAG in meta_graph.meta_info_def.tags:
      return dict(meta_graph.signature_def)
  raise ValueError(f'{path}: no MetaGraph is tagged {SERVE_TAG!r}')


class Servable:
  """A SavedModel version loaded for serving; requests share it across threads."""

  def __init__(self, name: str, version: int, path: str):
    self.name = name
    self.version = version
    self.path = path
    # All of them, as TF Serving's GetModelMetadata returns them (__saved_model_init_op too).
    self.signature_defs = read_signature_defs(path)
    self._model = tf.saved_model.load(path, tags=[SERVE_TAG])
    self._signatures = {
        key: Signature(key, tensor_specs(signature_def.inputs),
                       tensor_specs(signature_def.outputs), self._model.signatures[key])
        for key, signature_def in self.signature_defs.items() if key in self._model.signatures}

  def signature(self, name: str) -> Signature:
    """An empty name means serving_default; an unknown one is FAILED_PRECONDITION (TF Serving's)."""
    name = name or DEFAULT_SIGNATURE
    try:
      return self._signatures[name]
    except KeyError:
      raise status.ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                                f'Serving signature key "{name}" not found.') from None
