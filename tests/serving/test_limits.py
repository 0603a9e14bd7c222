"""Admission over real gRPC: each limit refuses with its exact status and message before any
work, and the server answers the next request; what a request sends is priced with what it
declares, surplus values are ignored as in TensorFlow, answers too big to send are refused
before the model runs, and the in-flight budget makes requests wait up to their deadline; big
requests run in slices with the same answer; an unexpected exception is INTERNAL, not a
crash."""
import threading
import time
from concurrent import futures

import grpc
import numpy as np
import pytest
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.serving.helpers import MODEL_NAME, running_server, varint
from vaetfx.models import hparams
from vaetfx.serving import client, defaults, limits, status, tensors
from vaetfx.serving import servable as servable_lib

EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _tensor(dtype, shape, **values) -> tensor_pb2.TensorProto:
  """A TensorProto declaring `shape` whatever its payload: one int_val may stand for all."""
  proto = tensor_pb2.TensorProto(
      dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(
          dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in shape]))
  for field, value in values.items():
    if field == 'tensor_content':
      proto.tensor_content = value
    else:
      getattr(proto, field).extend(value)
  return proto


def _request(signature, **inputs) -> predict_pb2.PredictRequest:
  request = predict_pb2.PredictRequest()
  request.model_spec.name = MODEL_NAME
  request.model_spec.signature_name = signature
  for alias, proto in inputs.items():
    request.inputs[alias].CopyFrom(proto)
  return request


def _images(rows) -> tensor_pb2.TensorProto:
  return _tensor(types_pb2.DT_UINT8, [rows, 28, 28], int_val=[7])


def _sample(count) -> predict_pb2.PredictRequest:
  return _request('sample', count=_tensor(types_pb2.DT_INT32, [], int_val=[count]),
                  seed=_tensor(types_pb2.DT_INT64, [], int64_val=[1]))


@pytest.fixture(scope='module')
def stub(model_server):
  with grpc.insecure_channel(model_server.address) as channel:
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


CASES = {
    '200,000 rows in one int_val (killed the server)': (
        _request('serving_default', images=_images(200_000)), EXHAUSTED,
        'input images declares 200000 rows; this server takes at most 10000 per request '
        '(--max-batch-rows): send them in smaller requests'),
    'a billion rows (was UNKNOWN "Unable to allocate 730 GiB")': (
        _request('serving_default', images=_images(1_000_000_000)), EXHAUSTED,
        'input images declares 1000000000 rows; this server takes at most 10000 per request '
        '(--max-batch-rows): send them in smaller requests'),
    'decoded bytes: 10,000 examples of 10 kB each in one string_val': (
        _request('from_examples', examples=_tensor(types_pb2.DT_STRING, [10_000],
                                                   string_val=[b'x' * 10_000])), EXHAUSTED,
        'the inputs take 100330140 bytes (10090 as sent, 100320050 once decoded); this server '
        'takes at most 67108864 (64 MiB) per request (--max-decoded-mb)'),
    'sample count over the limit (took the server to 4.3 GB)': (
        _sample(20_000), EXHAUSTED,
        'sample count 20000 is over this server\'s limit of 1000 (--max-sample-count): ask for '
        'fewer per request'),
    'sample count 0': (_sample(0), INVALID, 'sample count must be at least 1, got 0'),
    'negative sample count': (_sample(-3), INVALID, 'sample count must be at least 1, got -3'),
    'no rows (was a TF conv error)': (
        _request('serving_default', images=_images(0)), INVALID,
        'Input images has no rows (shape [0,28,28]): send at least one.'),
    'no examples': (
        _request('from_examples', examples=_tensor(types_pb2.DT_STRING, [0])), INVALID,
        'Input examples has no rows (shape [0]): send at least one.'),
    'huge declared shape of the wrong rank': (
        _request('serving_default', images=_tensor(types_pb2.DT_UINT8, [1 << 40, 1 << 40, 3],
                                                   int_val=[1])), INVALID,
        'Expected input images to have shape [?,28,28] but get [1099511627776,1099511627776,3].'),
    'tensor_content shorter than the declared shape': (
        _request('serving_default', images=_tensor(types_pb2.DT_UINT8, [5000, 28, 28],
                                                   tensor_content=b'\0' * 784)), INVALID,
        'tensor parsing error: images (tensor_content has 784 bytes, the shape [5000, 28, 28] '
        'of uint8 needs 3920000)'),
}


def test_a_message_quoting_a_huge_request_is_cut_to_fit(stub):
  request = _request('serving_default', images=_tensor(types_pb2.DT_UINT8, [1] * 100_000))
  with pytest.raises(grpc.RpcError) as raised:
    stub.Predict(request, timeout=30)
  assert raised.value.code() == INVALID
  details = raised.value.details()
  assert details.startswith('Expected input images to have shape [?,28,28] but get [1,1,1,')
  assert details.endswith('... (cut)') and len(details) == 1000


@pytest.mark.parametrize('case', sorted(CASES))
def test_limit_refuses_with_its_code_and_message(stub, serving, digits, case):
  request, code, message = CASES[case]
  with pytest.raises(grpc.RpcError) as raised:
    stub.Predict(request, timeout=30)
  assert (raised.value.code(), raised.value.details()) == (code, message)
  assert serving.score(digits).shape == (8,), 'the server answers the next request'


@pytest.fixture(scope='module')
def small_server(serving_dir):
  """A server with small limits, running requests 3 rows at a time."""
  with running_server(serving_dir, limits=limits.Limits(
      max_batch_rows=8, max_sample_count=5, slice_rows=3)) as model_server:
    yield model_server


def test_requests_at_a_limit_are_served_and_one_more_is_refused(small_server, digits):
  with client.ServingClient(small_server.address, timeout=30) as serving:
    assert serving.score(digits).shape == (8,)
    assert serving.sample(5, 3).shape == (5, 28, 28)
    with pytest.raises(status.ServingError, match=r'input images declares 9 rows; this server '
                       r'takes at most 8 per request \(--max-batch-rows\)') as raised:
      serving.score(np.concatenate([digits, digits[:1]]))
    assert raised.value.code == EXHAUSTED
    with pytest.raises(status.ServingError, match=r'sample count 6 is over this server\'s limit '
                       r'of 5 \(--max-sample-count\)') as raised:
      serving.sample(6)
    assert raised.value.code == EXHAUSTED


def test_slices_answer_as_one_call(small_server, reference, digits, examples, latent_dim):
  """Every batchable signature, run 3 rows at a time: bit for bit the model's answers to those
  slices in order, and the answer of one call up to float rounding (TensorFlow's kernels round
  a row differently with the batch's size: one call's rows differ in the last bit too)."""
  latent = np.linspace(-2, 2, 8 * latent_dim, dtype=np.float32).reshape(8, latent_dim)
  inputs = {'serving_default': {'images': digits}, 'encode': {'images': digits},
            'decode': {'latent': latent}, 'from_examples': {'examples': examples}}
  with client.ServingClient(small_server.address, timeout=30) as serving:
    for signature, arrays in inputs.items():
      served = serving.predict(signature, arrays).outputs
      model = reference.signatures[signature]
      one_call = model(**arrays)
      slices = [model(**{alias: array[start:start + 3] for alias, array in arrays.items()})
                for start in (0, 3, 6)]
      for name, value in one_call.items():
        np.testing.assert_array_equal(
            served[name], np.concatenate([part[name].numpy() for part in slices]),
            err_msg=f'{signature} {name}')
        np.testing.assert_allclose(served[name], value.numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=f'{signature} {name}')


def test_an_unexpected_exception_is_internal_and_the_server_carries_on(stub, serving, digits,
                                                                      monkeypatch):
  healthy = servable_lib.Signature.run

  def broken(self, inputs, outputs, slice_rows):
    if len(next(iter(inputs.values()))) == 3:
      raise ZeroDivisionError('a bug in the server')
    return healthy(self, inputs, outputs, slice_rows)

  monkeypatch.setattr(servable_lib.Signature, 'run', broken)
  with pytest.raises(grpc.RpcError) as raised:
    stub.Predict(_request('serving_default', images=tensors.to_proto(digits[:3])), timeout=30)
  assert raised.value.code() == grpc.StatusCode.INTERNAL
  assert raised.value.details() == ('Predict failed in the server: ZeroDivisionError: a bug in '
                                    'the server')
  assert serving.score(digits).shape == (8,)


@pytest.mark.parametrize('field', ['max_batch_rows', 'max_decoded_bytes', 'max_sample_count',
                                   'slice_rows'])
def test_limits_must_be_positive(field):
  with pytest.raises(ValueError, match=f'{field} must be at least 1, got 0'):
    limits.Limits(**{field: 0})


def test_values_beyond_the_shape_are_priced_as_sent_and_refused_over_the_limit(stub, serving,
                                                                             digits):
  """Was: 38 MiB of packed int_val for [1, 28, 28] priced at 784 bytes, then all converted
  (870 MiB, 15.9 s of a handler thread). Now what the parsed message holds counts."""
  request = _request('serving_default', images=_tensor(types_pb2.DT_UINT8, [1, 28, 28]))
  request.inputs['images'].int_val.extend(np.ones(14_000_000, np.int32))
  with pytest.raises(grpc.RpcError) as raised:
    stub.Predict(request, timeout=60)
  assert (raised.value.code(), raised.value.details()) == (
      EXHAUSTED, 'the inputs take 70000847 bytes (70000063 as sent, 784 once decoded); this '
                 'server takes at most 67108864 (64 MiB) per request (--max-decoded-mb)')
  assert serving.score(digits).shape == (8,), 'the server answers the next request'


def test_values_beyond_the_shape_within_the_limits_are_ignored_as_tensorflow_does(
    stub, reference, digits):
  """Tensor::FromProto fills the shape with the first values and ignores the rest."""
  pixels = digits[:2].reshape(-1).astype(np.int32)
  request = _request('serving_default', images=_tensor(
      types_pb2.DT_UINT8, [2, 28, 28], int_val=np.concatenate([pixels, pixels[::-1]])))
  response = stub.Predict(request, timeout=30)
  expected = reference.signatures['serving_default'](images=digits[:2])
  np.testing.assert_allclose(tensors.to_array(response.outputs['elbo']),
                             expected['elbo'].numpy(), rtol=1e-5, atol=1e-4)


def test_examples_in_string_tensor_content_are_read_as_tensorflow_reads_them(
    stub, reference, examples):
  """Was: read as empty strings, so the model failed to parse them."""
  content = b''.join(varint(len(e)) for e in examples) + b''.join(examples)
  request = _request('from_examples', examples=_tensor(
      types_pb2.DT_STRING, [len(examples)], tensor_content=content))
  response = stub.Predict(request, timeout=30)
  expected = reference.signatures['from_examples'](examples=examples)
  np.testing.assert_allclose(tensors.to_array(response.outputs['elbo']),
                             expected['elbo'].numpy(), rtol=1e-5, atol=1e-4)
  request.inputs['examples'].tensor_content = content[:-1]
  with pytest.raises(grpc.RpcError) as raised:
    stub.Predict(request, timeout=30)
  assert (raised.value.code(), raised.value.details()) == (
      INVALID, f'tensor parsing error: examples (tensor_content has {len(content) - 1} bytes, '
               f'but the 8 string lengths it starts with give {len(content)})')


def _recording_run(monkeypatch, release: threading.Event = None):
  """Replaces Signature.run with one that records its calls and waits for `release`."""
  calls = []
  healthy = servable_lib.Signature.run

  def run(self, inputs, outputs, slice_rows):
    calls.append(self.name)
    if release is not None:
      assert release.wait(60)
    return healthy(self, inputs, outputs, slice_rows)

  monkeypatch.setattr(servable_lib.Signature, 'run', run)
  return calls


def test_an_answer_too_big_to_send_is_refused_before_the_model_runs(serving_dir, digits,
                                                                   monkeypatch):
  """Was: the whole computation ran, then gRPC refused to send the answer."""
  calls = _recording_run(monkeypatch)
  images = np.resize(digits, (400, 28, 28))
  with running_server(serving_dir, max_message_bytes=1 << 20) as model_server:
    with client.ServingClient(model_server.address, timeout=30) as serving:
      with pytest.raises(status.ServingError) as raised:
        serving.predict('serving_default', {'images': images})
      assert raised.value.code == EXHAUSTED
      assert ('the answer would take 1266496 bytes; this server sends at most 1048576 (1 MiB) '
              'per message (--max-message-mb): ask for fewer rows or filter the outputs'
              ) in str(raised.value)
      assert not calls
      assert serving.score(images).shape == (400,), 'one output of the same rows fits'
  assert calls == ['serving_default']


def test_the_inflight_budget_makes_requests_wait_up_to_their_deadline(serving_dir, digits,
                                                                     monkeypatch):
  """A budget of 16 KiB holds one request of one image and every output (about 11 KB with its
  answer): a second waits for room until its deadline; one of 8 images never fits."""
  release = threading.Event()
  _recording_run(monkeypatch, release)

  def predict(serving, images):
    return serving.predict('serving_default', {'images': images}).outputs['elbo'].shape

  with running_server(serving_dir, max_inflight_bytes=16 << 10) as model_server:
    with client.ServingClient(model_server.address, timeout=60) as serving, \
        client.ServingClient(model_server.address, timeout=1) as hurried:
      with pytest.raises(status.ServingError, match=r'the request needs \d+ bytes in memory; '
                         r'this server holds at most 16384 \(0.015625 MiB\) for all requests in '
                         r'flight \(--max-inflight-mb\)') as raised:
        predict(serving, digits)
      assert raised.value.code == EXHAUSTED
      with futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(predict, serving, digits[:1])
        while not model_server.budget.held:
          time.sleep(0.01)
        with pytest.raises(status.ServingError, match=r'waited 0\.\d+ s \(until just before its '
                           r'deadline\) while others held \d+ of this server\'s 16384'
                           ) as raised:
          predict(hurried, digits[1:2])
        assert raised.value.code == EXHAUSTED
        waiting = pool.submit(predict, serving, digits[1:2])
        time.sleep(0.5)
        assert not waiting.done()
        release.set()
        assert first.result(timeout=60) == waiting.result(timeout=60) == (1,)
    deadline = time.monotonic() + 10
    while model_server.budget.held and time.monotonic() < deadline:
      time.sleep(0.01)
    assert model_server.budget.held == 0, 'every request gave its bytes back once answered'


def test_budget_wakes_a_waiting_request_and_releases_once():
  budget = limits.Budget(100)
  release = budget.hold(60, timeout=None)
  with futures.ThreadPoolExecutor(1) as pool:
    waiting = pool.submit(budget.hold, 50, 10)
    time.sleep(0.1)
    assert not waiting.done()
    release()
    release()
    second = waiting.result(timeout=10)
  assert budget.held == 50
  second()
  assert budget.held == 0
  with pytest.raises(ValueError, match='at least 1 byte, got 0'):
    limits.Budget(0)


def test_the_default_budget_holds_a_request_at_every_limit_for_the_model_run_trains():
  """A request every per-request limit admits must fit the default budget, or an idle server
  refuses it: serving_default (or from_examples) of --max-batch-rows rows with inputs at
  --max-decoded-mb, answered by a model of `vaetfx run`'s latent size. 160 MiB was too little."""
  latent = hparams.TrainingHparams().latent_dim
  outputs = [servable_lib.TensorSpec(types_pb2.DT_FLOAT, shape)
             for shape in ((None, 28, 28), (None, latent), (None, latent), (None,))]
  largest = limits.Price(sent=defaults.MAX_DECODED_BYTES // 2,
                         decoded=defaults.MAX_DECODED_BYTES // 2,
                         answer=sum(spec.answer_bytes(defaults.MAX_BATCH_ROWS) for spec in outputs))
  limits.Limits().check_inputs(largest)
  limits.Budget().hold(largest.in_memory, timeout=0)()
  assert largest.in_memory > 160 << 20
