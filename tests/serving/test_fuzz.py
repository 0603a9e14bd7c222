"""A seeded fuzz of `vaetfx serve` in its own process, so a crash shows as a dead process.

Concurrent clients send generated PredictRequests for a bounded time, valid ones mixed with
hostile ones: every dtype, random and huge declared shapes with tiny payloads, payloads that
lie about their size in every field kind (each typed value field, numeric tensor_content,
string tensor_content whose lengths do not add up; a few values, or up to LIE_VALUES beyond
the shape), string and numeric tensors swapped, missing, extra and misnamed inputs and
fields, unknown signatures and versions, huge counts. The server batches (TF Serving's deploy
parameters), so hostile requests share batches with valid ones. Every answer must be a
response or a gRPC error with a code TF Serving gives bad requests, and every valid request
must be answered whatever its batch neighbours sent; the server's resident memory, sampled
from /proc throughout, stays under RSS_LIMIT_BYTES; afterwards the process is alive and
answers as before.
"""
import os
import signal
import subprocess
import sys
import time
from typing import Tuple

import grpc
import numpy as np
import portpicker
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.serving.helpers import MODEL_NAME, clients_while_sampling_rss, varint, vm_bytes
from vaetfx.serving import client, tensors

SEED = 20240612
THREADS = 6
MAX_REQUESTS = 3000
FUZZ_SECONDS = 20.0
MAX_BATCH_ROWS = 2000  # Below the default, so requests at the limit cost little CPU here.
RSS_LIMIT_BYTES = 1536 << 20  # The memory target of a 10,000-row request on the real model.
ANSWERS = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT,
           grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.FAILED_PRECONDITION}
DTYPES = [value for value in types_pb2.DataType.values() if value] + [0, 99, 1000]
SIZES = [0, 1, 2, 3, 27, 28, 29, MAX_BATCH_ROWS, MAX_BATCH_ROWS + 1, 1 << 31, 1 << 40, 1 << 62]
VALUE_FIELDS = ['float_val', 'double_val', 'int_val', 'int64_val', 'bool_val', 'string_val',
                'half_val', 'uint32_val', 'uint64_val']
PAYLOAD_KINDS = VALUE_FIELDS + ['tensor_content', 'string tensor_content']
LIE_VALUES = 1 << 20  # At most this many values in a lying payload (4 to 8 MB of numbers).
LIE_STRINGS = 10_000  # At most this many string lengths in a lying string tensor_content.
BATCHING_FILE = os.path.join(os.path.dirname(tensors.__file__), 'deploy',
                             'batching_parameters.txt')


class _Generator:
  """PredictRequests from one seeded stream: a valid one, then 0-3 hostile edits of it."""

  def __init__(self, seed, latent_dim: int, examples: np.ndarray):
    self.rng = np.random.default_rng(seed)
    self.latent_dim = latent_dim
    self.examples = examples

  def valid(self) -> predict_pb2.PredictRequest:
    rng = self.rng
    signature = rng.choice(['serving_default', 'encode', 'decode', 'sample', 'from_examples'])
    rows = int(rng.integers(1, 5))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.model_spec.signature_name = str(signature)
    inputs = {
        'serving_default': lambda: {'images': rng.integers(0, 256, (rows, 28, 28), np.uint8)},
        'encode': lambda: {'images': rng.integers(0, 256, (rows, 28, 28), np.uint8)},
        'decode': lambda: {'latent': rng.normal(size=(rows, self.latent_dim)).astype(np.float32)},
        'sample': lambda: {'count': np.array(rows, np.int32),
                           'seed': np.array(rng.integers(-1, 1 << 40), np.int64)},
        'from_examples': lambda: {'examples': self.examples[:rows]},
    }[signature]()
    for alias, array in inputs.items():
      tensors.to_proto(array, request.inputs[alias])
    return request

  def request(self) -> Tuple[predict_pb2.PredictRequest, int]:
    """A request and the number of hostile edits made to it (0: it is valid)."""
    request = self.valid()
    edits = [self._dtype, self._shape, self._broadcast, self._content, self._strings,
             self._inputs, self._spec, self._outputs, self._count, self._fields, self._lie,
             self._swap_kind]
    count = int(self.rng.integers(0, 4))
    for _ in range(count):
      edits[int(self.rng.integers(len(edits)))](request)
    return request, count

  def _tensor(self, request) -> tensor_pb2.TensorProto:
    if not request.inputs:
      return request.inputs['images']
    return request.inputs[str(self.rng.choice(sorted(request.inputs)))]

  def _size(self) -> int:
    return int(self.rng.choice(SIZES)) if self.rng.random() < 0.7 else int(
        self.rng.integers(0, 1 << 20))

  def _dtype(self, request):
    self._tensor(request).dtype = int(self.rng.choice(DTYPES))

  def _shape(self, request):
    proto = self._tensor(request)
    proto.tensor_shape.Clear()
    if self.rng.random() < 0.1:
      proto.tensor_shape.unknown_rank = True
      return
    for _ in range(int(self.rng.integers(0, 5))):
      proto.tensor_shape.dim.add(size=self._size() if self.rng.random() < 0.9 else -1)

  def _broadcast(self, request):
    """One value for a declared shape of any size, the 40-byte request that killed the server."""
    proto = self._tensor(request)
    rows = self._size()
    proto.tensor_content = b''
    if proto.tensor_shape.dim:
      proto.tensor_shape.dim[0].size = rows
    field = str(self.rng.choice(VALUE_FIELDS))
    for name in VALUE_FIELDS:
      proto.ClearField(name)
    getattr(proto, field).append(b'x' * int(self.rng.integers(0, 64)) if field == 'string_val'
                                 else True if field == 'bool_val' else 1)

  def _content(self, request):
    proto = self._tensor(request)
    size = len(proto.tensor_content) + int(self.rng.integers(-8, 9))
    proto.tensor_content = self.rng.bytes(max(0, min(size, 1 << 16)))

  def _strings(self, request):
    proto = self._tensor(request)
    proto.tensor_content = b''
    proto.string_val.extend([b'not a number', b'\xff' * 3])

  def _inputs(self, request):
    choice = int(self.rng.integers(3))
    if choice == 0 and request.inputs:
      del request.inputs[str(self.rng.choice(sorted(request.inputs)))]
    elif choice == 1:
      tensors.to_proto(np.zeros((1, 3), np.float32), request.inputs['extra'])
    else:
      request.inputs[str(self.rng.choice(['images', 'latent', 'count', 'seed', 'examples']))
                     ].CopyFrom(self._tensor(request))

  def _spec(self, request):
    choice = int(self.rng.integers(5))
    if choice == 0:
      request.model_spec.signature_name = str(self.rng.choice(['classify', 'x' * 300, '']))
    elif choice == 1:
      request.model_spec.name = str(self.rng.choice(['', 'other', MODEL_NAME * 50]))
    elif choice == 2:
      request.model_spec.version.value = int(self.rng.integers(-(1 << 62), 1 << 62))
    elif choice == 3:
      request.model_spec.version_label = 'canary'
    else:
      request.ClearField('model_spec')

  def _outputs(self, request):
    request.output_filter.extend(
        self.rng.choice(['elbo', 'images', 'latent_mean', 'nope', 'elbo'],
                        int(self.rng.integers(1, 4))).tolist())

  def _count(self, request):
    if 'count' in request.inputs:
      count = request.inputs['count']
      count.ClearField('int_val')
      count.tensor_content = b''
      count.int_val.append(int(self.rng.choice([-(1 << 31), -1, 0, 1001, 20_000, (1 << 31) - 1])))

  def _lie(self, request):
    """A payload of one kind only, in a size that disagrees with the declared shape: none, one,
    one short of or one over a digit, or up to LIE_VALUES."""
    proto = self._tensor(request)
    kind = str(self.rng.choice(PAYLOAD_KINDS))
    count = int(self.rng.choice([0, 1, 783, 785, int(self.rng.integers(1, LIE_VALUES))]))
    for name in VALUE_FIELDS:
      proto.ClearField(name)
    proto.tensor_content = b''
    if kind == 'tensor_content':
      proto.tensor_content = self.rng.bytes(count)
    elif kind == 'string tensor_content':
      proto.dtype = types_pb2.DT_STRING
      proto.tensor_content = self._string_content(min(count, LIE_STRINGS))
    elif kind == 'string_val':
      proto.string_val.extend([b'x' * int(self.rng.integers(0, 100))] * count)
    elif kind == 'bool_val':
      proto.bool_val.extend([True] * count)
    else:
      getattr(proto, kind).extend(self.rng.integers(0, 100, count).tolist())

  def _string_content(self, count: int) -> bytes:
    """TensorFlow's string encoding of `count` strings, its bytes often off by a few or many."""
    lengths = self.rng.integers(0, 1 << int(self.rng.integers(1, 16)), count)
    off = int(self.rng.choice([0, 0, -1, 1, 1000, -int(lengths.sum())]))
    header = b''.join(varint(int(length)) for length in lengths)
    return header + self.rng.bytes(max(0, int(lengths.sum()) + off))

  def _swap_kind(self, request):
    """A numeric tensor declared a string one, or a string one numeric, its payload kept."""
    proto = self._tensor(request)
    proto.dtype = int(self.rng.choice([types_pb2.DT_UINT8, types_pb2.DT_FLOAT])
                      if proto.dtype == types_pb2.DT_STRING else types_pb2.DT_STRING)

  def _fields(self, request):
    """Typed values in a field the dtype does not read, or many more values than elements."""
    proto = self._tensor(request)
    field = str(self.rng.choice(VALUE_FIELDS))
    values = [b'7'] if field == 'string_val' else [True] if field == 'bool_val' else [7]
    getattr(proto, field).extend(values * int(self.rng.integers(1, 5000)))


@pytest.fixture(scope='module')
def server_process(serving_dir, tmp_path_factory):
  """`vaetfx serve` in its own process; yields (process, address), then stops it with SIGTERM."""
  port = portpicker.pick_unused_port()
  log_path = tmp_path_factory.mktemp('fuzz') / 'server.log'
  with open(log_path, 'w', encoding='utf-8') as log:
    process = subprocess.Popen(
        [sys.executable, '-m', 'vaetfx.cli', 'serve', '--model-dir',
         os.path.join(serving_dir, MODEL_NAME), '--port', str(port),
         '--max-batch-rows', str(MAX_BATCH_ROWS), '--batching-parameters-file', BATCHING_FILE],
        stdout=log, stderr=subprocess.STDOUT)
  address = f'127.0.0.1:{port}'
  try:
    with client.ServingClient(address) as serving:
      serving.wait_until_available(timeout=120)
    yield process, address
  finally:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)


def _answers(address, digits):
  """What the server answers to two valid requests: its fingerprint."""
  with client.ServingClient(address, timeout=60) as serving:
    return serving.reconstruct(digits), serving.sample(4, seed=5)


def test_fuzzed_requests_get_answers_and_the_server_survives(server_process, digits, examples,
                                                             latent_dim):
  process, address = server_process
  before = _answers(address, digits)
  def fuzz(index):
    generator = _Generator([SEED, index], latent_dim, examples)
    codes, deadline = {}, time.monotonic() + FUZZ_SECONDS
    with grpc.insecure_channel(address, options=[
        ('grpc.max_send_message_length', 64 << 20)]) as channel:
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
      for _ in range(MAX_REQUESTS // THREADS):
        if time.monotonic() > deadline:
          break
        request, edits = generator.request()
        try:
          response = stub.Predict(request, timeout=60)
          assert isinstance(response, predict_pb2.PredictResponse)
          code = grpc.StatusCode.OK
        except grpc.RpcError as e:
          code = e.code()
          assert code in ANSWERS, f'{code.name}: {e.details()}\nfor {request}'[:3000]
          assert edits, f'a valid request failed: {code.name}: {e.details()}'[:3000]
        codes[code] = codes.get(code, 0) + 1
    return codes

  counts, peak = clients_while_sampling_rss(process.pid, THREADS, fuzz)
  totals = {code.name: sum(c.get(code, 0) for c in counts) for code in ANSWERS}
  assert process.poll() is None, f'the server died: {totals}'
  assert sum(totals.values()) >= 200, f'too few requests to mean anything: {totals}'
  assert totals['OK'] and totals['INVALID_ARGUMENT'] and totals['RESOURCE_EXHAUSTED'], totals
  high_water = vm_bytes(process.pid, 'VmHWM')
  print(f'fuzz: {totals}; server RSS peak sampled {peak >> 20} MiB, VmHWM {high_water >> 20} '
        f'MiB')
  assert max(peak, high_water) < RSS_LIMIT_BYTES, (peak, high_water, totals)
  after = _answers(address, digits)
  for name, value in before[0].items():
    np.testing.assert_array_equal(after[0][name], value, err_msg=name)
  np.testing.assert_array_equal(after[1], before[1])
