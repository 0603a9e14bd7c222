"""TF Serving's REST API on `vaetfx serve --rest-port`: every signature answers as over gRPC, in
both JSON forms; bad requests get TF Serving's HTTP statuses; bodies are priced before they are
read, and slow clients are cut off while others are served."""
import base64
import http.client
import json
import socket
import time
from concurrent import futures

import numpy as np
import pytest
from google.protobuf import json_format

from tests.serving.helpers import MODEL_NAME, running_server
from tests.serving.test_server import signature_inputs
from vaetfx.serving import batching, client, json_tensors, limits, rest, status

MAX_MESSAGE_BYTES = 1 << 20
MAX_BATCH_ROWS = 100
SIGNATURES = ['serving_default', 'encode', 'decode', 'sample', 'from_examples']


@pytest.fixture(scope='module')
def rest_server(serving_dir):
  """A server with both ports over version 1, labelled `stable`, with small limits."""
  with running_server(serving_dir, version_labels={'stable': 1}, rest_port=0,
                      max_message_bytes=MAX_MESSAGE_BYTES,
                      limits=limits.Limits(max_batch_rows=MAX_BATCH_ROWS)) as model_server:
    yield model_server


@pytest.fixture
def grpc_client(rest_server):
  with client.ServingClient(rest_server.address, MODEL_NAME, timeout=30) as serving:
    yield serving


def call(server, method, path, document=None, body=None, headers=None):
  """(HTTP status, the answer's JSON) of one request."""
  connection = http.client.HTTPConnection('127.0.0.1', server.rest_port, timeout=30)
  try:
    if document is not None:
      body = json.dumps(document).encode()
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    assert response.getheader('Content-Type') == 'application/json'
    return response.status, json.loads(response.read())
  finally:
    connection.close()


def _json_inputs(signature, inputs, rows):
  """The signature's inputs as a REST request in row or columnar form (strings in base64)."""
  def value(array):
    if array.dtype == object:
      return [{'b64': base64.b64encode(item).decode()} for item in array]
    return array.tolist()
  if not rows:
    return {'signature_name': signature, 'inputs': {a: value(x) for a, x in inputs.items()}}
  (alias, array), = inputs.items()
  return {'signature_name': signature, 'instances': value(array)}


@pytest.mark.parametrize('rows', [True, False], ids=['instances', 'inputs'])
@pytest.mark.parametrize('signature', SIGNATURES)
def test_every_signature_answers_as_over_grpc(rest_server, grpc_client, signature, rows, digits,
                                              examples, latent_dim):
  inputs = signature_inputs(signature, digits, examples, latent_dim)
  if rows and signature == 'sample':
    pytest.skip('sample\'s inputs are scalars: they have no rows (columnar form only)')
  expected = grpc_client.predict(signature, inputs).outputs
  code, answer = call(rest_server, 'POST', f'/v1/models/{MODEL_NAME}:predict',
                      _json_inputs(signature, inputs, rows))
  assert code == 200, answer
  (key, value), = answer.items()
  assert key == ('predictions' if rows else 'outputs')
  if len(expected) == 1:  # A lone output is the bare value.
    served = {next(iter(expected)): value}
  else:
    served = {alias: [row[alias] for row in value] for alias in expected} if rows else value
  assert sorted(served) == sorted(expected)
  for alias, array in expected.items():
    np.testing.assert_array_equal(np.array(served[alias], array.dtype), array, err_msg=alias)


def test_version_and_label_paths_choose_the_version(rest_server, digits):
  document = {'instances': digits[:1].tolist()}
  for path in ('versions/1', 'labels/stable', 'VERSIONS/1'):
    code, answer = call(rest_server, 'POST', f'/v1/models/{MODEL_NAME}/{path}:predict', document)
    assert code == 200, (path, answer)


def test_status_and_metadata_are_the_grpc_answers_in_tf_servings_json(rest_server, grpc_client):
  code, answer = call(rest_server, 'GET', f'/v1/models/{MODEL_NAME}')
  assert (code, answer) == (200, {'model_version_status': [{
      'version': '1', 'state': 'AVAILABLE', 'status': {'error_code': 'OK', 'error_message': ''}}]})
  assert call(rest_server, 'GET', f'/v1/models/{MODEL_NAME}/versions/1') == (code, answer)
  code, answer = call(rest_server, 'GET', f'/v1/models/{MODEL_NAME}/labels/stable/metadata')
  assert code == 200, answer
  assert answer['model_spec'] == {'name': MODEL_NAME, 'signature_name': '', 'version': '1'}
  _, signature_defs = grpc_client.signature_defs()
  served = answer['metadata']['signature_def']['signature_def']
  assert served == {name: json_format.MessageToDict(signature_def, preserving_proto_field_name=True,
                                                    including_default_value_fields=True)
                    for name, signature_def in signature_defs.items()}
  assert served['serving_default']['inputs']['images']['dtype'] == 'DT_UINT8'


PREDICT = f'/v1/models/{MODEL_NAME}:predict'
IMAGE = [[0] * 28] * 28


@pytest.mark.parametrize('method, path, body, code, message', [
    ('POST', PREDICT, b'{"instances": [1,', 400, 'JSON Parse error: Expecting value at offset: '),
    ('POST', PREDICT, b'', 400, 'JSON Parse error: The document is empty'),
    ('POST', PREDICT, b'\xff\xfe', 400, 'JSON Parse error'),
    ('POST', PREDICT, b'[' * 10_000, 400, 'JSON Parse error: the document nests too deeply'),
    ('POST', PREDICT, b'[1]', 400, 'JSON Value: [1] Is not object'),
    ('POST', PREDICT, {}, 400, "Missing 'inputs' or 'instances' key"),
    ('POST', PREDICT, {'instances': [IMAGE], 'inputs': [IMAGE]}, 400, 'expecting only one of'),
    ('POST', PREDICT, {'instances': []}, 400, "No values in 'instances' array"),
    ('POST', PREDICT, {'signature_name': 3, 'instances': [IMAGE]}, 400,
     "'signature_name' key must be a string value"),
    ('POST', PREDICT, {'instances': [[['x'] * 28] * 28]}, 400,
     'JSON Value: "x" Type: String is not of expected type: uint8'),
    ('POST', PREDICT, {'instances': [[[0.5] * 28] * 28]}, 400, 'is not of expected type: uint8'),
    ('POST', PREDICT, {'instances': [[[2**40] * 28] * 28]}, 400, 'is not of expected type: uint8'),
    ('POST', PREDICT, {'instances': [[[True] * 28] * 28]}, 400, 'is not of expected type: uint8'),
    ('POST', PREDICT, {'instances': [[[0] * 27] * 28]}, 400,
     'Expected input images to have shape [?,28,28] but get [1,28,27].'),
    ('POST', PREDICT, {'instances': [IMAGE, IMAGE[:27]]}, 400,
     'Encountered list at unexpected size: 27 at level: 1 expected size: 28'),
    ('POST', PREDICT, {'instances': [[[[0]] * 28] * 28]}, 400,
     'Expected input images to have shape [?,28,28] but get [1,28,28,1].'),
    ('POST', PREDICT, {'instances': [[[0] * 28] * 27 + [[[0]] * 28]]}, 400,
     'Encountered list at unexpected level'),
    ('POST', PREDICT, {'instances': [{'images': IMAGE, 'extra': 1}]}, 400,
     'keys must be equal to: images'),
    ('POST', PREDICT, {'signature_name': 'decode', 'instances': [[1e39, 0]]}, 400,
     'Cannot convert JSON value: 1e+39 to float without loss of precision.'),
    ('POST', PREDICT, {'signature_name': 'sample', 'inputs': [1]}, 400,
     'inputs is a plain value/list, but expecting an object'),
    ('POST', PREDICT, {'signature_name': 'sample', 'inputs': {'count': 1}}, 400,
     "Missing named input: seed in 'inputs' object."),
    ('POST', PREDICT, {'signature_name': 'from_examples', 'inputs': [{'b64': '!!'}]}, 400,
     'Unable to base64 decode'),
    ('POST', PREDICT, {'signature_name': 'nope', 'instances': [IMAGE]}, 400,
     'Serving signature name: "nope" not found in signature def'),
    ('POST', '/v1/models/nope:predict', {'instances': [IMAGE]}, 404,
     'Servable not found for request: Latest(nope)'),
    ('POST', f'/v1/models/{MODEL_NAME}/versions/7:predict', {'instances': [IMAGE]}, 404,
     f'Servable not found for request: Specific({MODEL_NAME}, 7)'),
    ('POST', f'/v1/models/{MODEL_NAME}/versions/99999999999999999999:predict',
     {'instances': [IMAGE]}, 400, 'Failed to convert version: 99999999999999999999 to numeric.'),
    ('POST', f'/v1/models/{MODEL_NAME}/labels/canary:predict', {'instances': [IMAGE]}, 400,
     'Unrecognized servable version label: canary'),
    ('POST', PREDICT, {'instances': [IMAGE] * (MAX_BATCH_ROWS + 1)}, 429, '--max-batch-rows'),
    ('POST', PREDICT, {'signature_name': 'sample', 'inputs': {'count': 5000, 'seed': 1}}, 429,
     '--max-sample-count'),
    ('POST', f'/v1/models/{MODEL_NAME}:classify', {'examples': [{}]}, 501, 'not implemented'),
    ('POST', f'/v1/models/{MODEL_NAME}:regress', {'examples': [{}]}, 501, 'not implemented'),
    ('POST', f'/v1/models/{MODEL_NAME}:explain', {}, 400,
     f'Malformed request: POST /v1/models/{MODEL_NAME}:explain'),
    ('GET', '/v1/models/nope', None, 404, 'Could not find any versions of model nope'),
    ('GET', f'/v1/models/{MODEL_NAME}/versions/7', None, 404,
     f'Could not find version 7 of model {MODEL_NAME}'),
    ('GET', f'/v1/models/{MODEL_NAME}/versions/7/metadata', None, 404,
     f'Servable not found for request: Specific({MODEL_NAME}, 7)'),
    ('GET', '/v1/models', None, 400, 'Missing model name in request.'),
    ('GET', '/v1/models/a/b/c', None, 400, 'Malformed request: GET /v1/models/a/b/c'),
    ('GET', '/healthz', None, 404, 'Not an API path: /healthz'),
])
def test_bad_requests_get_tf_servings_status(rest_server, method, path, body, code, message):
  if isinstance(body, (dict, list)):
    answer = call(rest_server, method, path, document=body)
  else:
    answer = call(rest_server, method, path, body=body)
  assert answer[0] == code, answer
  assert list(answer[1]) == ['error'] and message in answer[1]['error'], answer


def _raw(server, head: bytes, timeout=10.0) -> bytes:
  """Sends `head` on a new connection and reads until the server closes it."""
  with socket.create_connection(('127.0.0.1', server.rest_port), timeout=timeout) as sock:
    sock.sendall(head)
    chunks = []
    while True:
      chunk = sock.recv(65536)
      if not chunk:
        return b''.join(chunks)
      chunks.append(chunk)


def test_a_body_over_the_message_limit_is_refused_before_it_is_read(rest_server):
  started = time.monotonic()
  answer = _raw(rest_server, f'POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: '
                             f'{10**12}\r\n\r\n{{"instances": ['.encode())
  assert time.monotonic() - started < 5
  head, _, body = answer.partition(b'\r\n\r\n')
  assert head.startswith(b'HTTP/1.1 413 ') and b'Connection: close' in head, answer
  assert f'this server takes at most {MAX_MESSAGE_BYTES}'.encode() in body, body


def test_a_client_that_asks_first_is_told_before_sending(rest_server):
  """`Expect: 100-continue`, which curl sends for bodies over 1 MiB."""
  head = f'POST {PREDICT} HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {{}}\r\n\r\n'
  refused = _raw(rest_server, head.format(MAX_MESSAGE_BYTES + 1).encode())
  assert refused.startswith(b'HTTP/1.1 413 '), refused
  with socket.create_connection(('127.0.0.1', rest_server.rest_port), timeout=10) as sock:
    sock.sendall(head.format(2).encode())
    assert sock.recv(65536).startswith(b'HTTP/1.1 100 Continue')
    sock.sendall(b'{}')
    answer = http.client.HTTPResponse(sock)
    answer.begin()
    assert answer.status == 400 and b"Missing 'inputs' or 'instances' key" in answer.read()


def test_a_body_without_content_length_is_refused(rest_server):
  answer = _raw(rest_server, f'POST {PREDICT} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: '
                             f'chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n'.encode())
  assert answer.startswith(b'HTTP/1.1 411 '), answer


def test_one_connection_carries_many_requests(rest_server, digits):
  connection = http.client.HTTPConnection('127.0.0.1', rest_server.rest_port, timeout=30)
  try:
    for body in (b'{', json.dumps({'instances': digits[:2].tolist()}).encode(), b'[]'):
      connection.request('POST', PREDICT, body=body)
      response = connection.getresponse()
      response.read()
      assert response.status in (200, 400)
    connection.request('GET', f'/v1/models/{MODEL_NAME}')
    assert connection.getresponse().status == 200
  finally:
    connection.close()


def _open_after_a_byte(sock) -> bool:
  """Sends a byte; False once the server has closed the connection."""
  try:
    sock.sendall(b' ')
    return bool(sock.recv(1))
  except socket.timeout:
    return True
  except OSError:
    return False


def test_slow_and_surplus_connections_are_cut_off_while_the_server_answers(
    serving_dir, monkeypatch, digits):
  monkeypatch.setattr(rest, 'READ_TIMEOUT_SECONDS', 1.0)
  with running_server(serving_dir, rest_port=0, threads=2) as model_server:
    address = ('127.0.0.1', model_server.rest_port)
    slow = socket.create_connection(address, timeout=10)
    slow.sendall(f'POST {PREDICT} HTTP/1.1\r\nContent-Length: 100\r\n\r\n{{'.encode())
    idle = socket.create_connection(address, timeout=10)
    time.sleep(0.2)
    with socket.create_connection(address, timeout=10) as surplus:
      assert surplus.recv(65536).startswith(b'HTTP/1.1 503 ')
    started = time.monotonic()
    slow.settimeout(0.3)
    while _open_after_a_byte(slow):  # A byte every 0.3 s does not keep it open.
      pass
    while idle.recv(1):
      pass
    assert time.monotonic() - started < 5
    for sock in (slow, idle):
      sock.close()
    code, answer = call(model_server, 'POST', PREDICT, {'instances': digits[:1].tolist()})
    assert code == 200, answer


def test_json_tensors_round_trip_every_value_kind():
  from tensorflow.core.framework import types_pb2  # pylint: disable=g-import-not-at-top
  from vaetfx.serving import tensors  # pylint: disable=g-import-not-at-top
  cases = [
      (np.array([[0.1, 1 / 3], [np.nan, -np.inf]], np.float32), types_pb2.DT_FLOAT),
      (np.array([2**53 - 1, -1], np.int64), types_pb2.DT_INT64),
      (np.array([2**64 - 1], np.uint64), types_pb2.DT_UINT64),
      (np.array([True, False]), types_pb2.DT_BOOL),
      (np.array(7, np.int32), types_pb2.DT_INT32),
  ]
  for array, dtype in cases:
    value = json.loads(json.dumps(json_tensors.to_json(array, False)))
    np.testing.assert_array_equal(tensors.to_array(json_tensors.to_proto(value, dtype)), array)
  assert json.dumps(json_tensors.to_json(np.array([0.1], np.float32), False)) == '[0.1]'
  binary = np.array([b'\x00\xff'], object)
  assert json_tensors.to_json(binary, True) == [{'b64': 'AP8='}]
  assert tensors.to_array(json_tensors.to_proto([{'b64': 'AP8'}], types_pb2.DT_STRING))[0] == (
      b'\x00\xff')
  with pytest.raises(status.ServingError) as raised:
    json_tensors.to_proto([1.0], types_pb2.DT_HALF)
  assert raised.value.code.name == 'UNIMPLEMENTED'  # TF Serving's AddValueToTensor takes no half.
def test_rest_client_answers_as_the_grpc_client(rest_server, grpc_client, digits):
  with client.RestClient(f'http://127.0.0.1:{rest_server.rest_port}', MODEL_NAME,
                         rows_per_request=3) as serving:
    expected = grpc_client.reconstruct(digits)
    for alias, array in serving.reconstruct(digits).items():
      np.testing.assert_array_equal(array, expected[alias], err_msg=alias)
    np.testing.assert_array_equal(serving.encode(digits)[0], grpc_client.encode(digits)[0])
    latent = grpc_client.encode(digits)[0]
    np.testing.assert_array_equal(serving.decode(latent), grpc_client.decode(latent))
    np.testing.assert_array_equal(serving.sample(3, 5), grpc_client.sample(3, 5))
    np.testing.assert_array_equal(serving.score(digits), grpc_client.score(digits))
    assert [s.version for s in serving.version_states()] == [1]
  with client.RestClient(f'http://127.0.0.1:{rest_server.rest_port}', 'nope') as serving:
    with pytest.raises(status.ServingError) as raised:
      serving.reconstruct(digits)
  assert raised.value.code.name == 'NOT_FOUND' and 'not loaded' in str(raised.value)


def test_vaetfx_query_over_rest_writes_what_it_does_over_grpc(rest_server, tmp_path, capsys):
  from vaetfx import cli  # pylint: disable=g-import-not-at-top
  outputs = {}
  for server in (rest_server.rest_address, rest_server.address):
    path = str(tmp_path / f'{len(outputs)}.png')
    assert cli.main(['query', 'sample', '--count', '4', '--seed', '3', '-o', path,
                     '--server', server]) == 0
    with open(path, 'rb') as f:
      outputs[server] = f.read()
  assert len(set(outputs.values())) == 1
  assert cli.main(['query', 'sample', '--rest', '--server',
                   f'127.0.0.1:{rest_server.rest_port}', '--model-name', 'nope']) == 1
  assert 'model nope is not loaded' in capsys.readouterr().err


def test_lists_and_objects_are_priced_before_parsing(rest_server):
  nested = b'{"instances": [' + b'[],' * (MAX_MESSAGE_BYTES // 10) + b'[]]}'
  assert len(nested) < MAX_MESSAGE_BYTES < rest.price(nested)
  code, answer = call(rest_server, 'POST', PREDICT, body=nested)
  assert code == 413 and 'for each list or object' in answer['error'], answer


def test_rest_serves_tls_with_the_grpc_certificate(serving_dir, certificate, digits):  # pylint: disable=redefined-outer-name
  cert, key = certificate
  with running_server(serving_dir, tls_cert_file=cert, tls_key_file=key,
                      rest_port=0) as model_server:
    assert model_server.rest_address.startswith('https://')
    with client.RestClient(model_server.rest_address, MODEL_NAME, tls_ca_file=cert) as serving:
      assert serving.score(digits).shape == (8,)
    with client.RestClient(f'http://127.0.0.1:{model_server.rest_port}', MODEL_NAME,
                           timeout=5) as plaintext:
      with pytest.raises(status.ServingError) as raised:
        plaintext.score(digits)
      assert raised.value.code.name == 'UNAVAILABLE'


def test_bodies_being_parsed_share_the_message_limit():
  budget = rest._ByteBudget(10, wait_seconds=0.1)  # pylint: disable=protected-access
  with budget.take(8):
    with pytest.raises(status.ServingError) as raised:
      with budget.take(3):
        pass
    with budget.take(2):
      pass
  with budget.take(10):
    pass
  assert raised.value.code.name == 'RESOURCE_EXHAUSTED' and '--max-message-mb' in str(raised.value)


def test_batched_rest_and_grpc_requests_are_answered_alike(serving_dir, digits):
  """With --enable-batching, concurrent REST and gRPC requests share the batcher."""
  with running_server(serving_dir, rest_port=0, batching_parameters=batching.BatchingParameters(
      batch_timeout_micros=20_000)) as model_server:
    with client.ServingClient(model_server.address, MODEL_NAME, timeout=30) as serving:
      expected = serving.predict('serving_default', {'images': digits}).outputs
      with futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(
            lambda i: call(model_server, 'POST', PREDICT, {'inputs': digits[i:i + 2].tolist()}),
            range(0, 8, 2)))
  for i, (code, answer) in zip(range(0, 8, 2), answers):
    assert code == 200, answer
    for alias, array in expected.items():
      np.testing.assert_array_equal(np.array(answer['outputs'][alias], array.dtype),
                                    array[i:i + 2], err_msg=alias)
