"""test_fuzz.py's seeded fuzz, on `vaetfx serve --rest-port`'s REST API.

Threads send test_fuzz's generated requests as TF Serving's JSON (row or columnar form) for a
bounded time, valid ones mixed with hostile edits of their JSON (wrong types, ragged and
over-nested lists, missing, extra and misnamed keys, too many rows), their path (unknown
models, versions, labels and methods), their bytes (cut, garbled, not UTF-8, nested deep) and
their headers (no Content-Length, a huge one). Every answer must be JSON with a status TF
Serving gives bad requests; the server's resident memory stays under test_fuzz's limit; and
afterwards the process is alive and answers as over gRPC.
"""
import http.client
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import portpicker
import pytest

from tests.serving.helpers import MODEL_NAME, clients_while_sampling_rss, vm_bytes
from tests.serving.test_fuzz import MAX_BATCH_ROWS, RSS_LIMIT_BYTES, SEED, THREADS, _Generator
from vaetfx.serving import client, json_tensors, tensors

MAX_REQUESTS = 2000
FUZZ_SECONDS = 10.0
ANSWERS = {200, 400, 404, 411, 413, 429, 501}
LEAVES = ['x', 1.5, True, None, {}, {'b64': '!!'}, {'b64': 'AA=='}, 2**70, 1e39, -1, 256, [],
          [[1]], float('nan')]
PATHS = ['/v1/models/other:predict', f'/v1/models/{MODEL_NAME}/versions/2:predict',
         f'/v1/models/{MODEL_NAME}/versions/1:predict', f'/v1/models/{MODEL_NAME}/labels/x:predict',
         f'/v1/models/{MODEL_NAME}:classify', f'/v1/models/{MODEL_NAME}:explain',
         f'/v1/models/{MODEL_NAME}/versions/{10**20}:predict', '/v2/x', f'/v1/models/{MODEL_NAME}',
         f'/v1/models/{MODEL_NAME}/metadata']


class _JsonGenerator:
  """REST requests from one seeded stream: test_fuzz's valid request as JSON, then 0-3 edits."""

  def __init__(self, seed, latent_dim: int, examples: np.ndarray):
    self.protos = _Generator(seed, latent_dim, examples)
    self.rng = self.protos.rng

  def request(self):
    """(method, path, body, headers)."""
    proto = self.protos.valid()
    values = {alias: json_tensors.to_json(tensors.to_array(tensor), True)
              for alias, tensor in proto.inputs.items()}
    document = {'signature_name': proto.model_spec.signature_name}
    if len(values) == 1 and self.rng.random() < 0.5:
      document['instances'] = next(iter(values.values()))
    else:
      document['inputs'] = values
    request = ['POST', f'/v1/models/{MODEL_NAME}:predict', document, {}]
    edits = [self._leaf, self._shape, self._keys, self._rows, self._path, self._bytes,
             self._headers]
    for _ in range(int(self.rng.integers(0, 4))):
      edits[int(self.rng.integers(len(edits)))](request)
    if not isinstance(request[2], bytes):
      request[2] = json.dumps(request[2]).encode()
    request[3].setdefault('Content-Length', str(len(request[2])))
    return request

  def _pick(self, values):
    return values[int(self.rng.integers(len(values)))]

  def _tensor_values(self, document):
    """A list that holds a tensor's values (or the document itself), to edit in place."""
    holder = document.get('inputs', document.get('instances'))
    if isinstance(holder, dict) and holder and 'b64' not in holder:
      holder = holder[self._pick(sorted(holder))]
    return holder if isinstance(holder, list) else None

  def _leaf(self, request):
    if isinstance(request[2], dict):
      values = self._tensor_values(request[2])
      while isinstance(values, list) and values and isinstance(values[-1], list):
        values = values[int(self.rng.integers(len(values)))]
      if values:
        values[int(self.rng.integers(len(values)))] = self._pick(LEAVES)

  def _shape(self, request):
    if isinstance(request[2], dict):
      values = self._tensor_values(request[2])
      if values:
        choice = int(self.rng.integers(3))
        if choice == 0:
          values.pop()
        elif choice == 1:
          values[0] = [values[0]]
        else:
          values.append(values[-1] if self.rng.random() < 0.5 else [])

  def _keys(self, request):
    if isinstance(request[2], dict):
      document = request[2]
      choice = int(self.rng.integers(5))
      if choice == 0:
        document['signature_name'] = self._pick([3, 'nope', '', None])
      elif choice == 1:
        document['inputs' if 'instances' in document else 'instances'] = [1]
      elif choice == 2:
        document.pop('inputs', None)
        document.pop('instances', None)
      elif choice == 3 and isinstance(document.get('inputs'), dict):
        document['inputs'][self._pick(['extra', 'images', 'latent', 'count'])] = [[1.0]]
      else:
        document[self._pick(['inputs', 'instances'])] = self._pick([{}, [], 'x', {'b64': ''}])

  def _rows(self, request):
    """Over the admission limits: too many rows, or too big a sample."""
    if self.rng.random() < 0.5:
      request[2] = {'signature_name': 'decode', 'instances': [[0.5, 0.5]] * (MAX_BATCH_ROWS + 1)}
    else:
      request[2] = {'signature_name': 'sample', 'inputs': {'count': 20_000, 'seed': 1}}

  def _path(self, request):
    request[1] = self._pick(PATHS)
    request[0] = 'GET' if ':' not in request[1] else 'POST'

  def _bytes(self, request):
    body = request[2] if isinstance(request[2], bytes) else json.dumps(request[2]).encode()
    choice = int(self.rng.integers(4))
    if choice == 0:
      body = body[:int(self.rng.integers(len(body) + 1))]
    elif choice == 1:
      at = int(self.rng.integers(len(body) + 1))
      body = body[:at] + self.rng.bytes(int(self.rng.integers(1, 8))) + body[at:]
    elif choice == 2:
      body = b'[' * int(self.rng.integers(1, 5000))
    else:
      body = b'\xff' + body
    request[2] = body

  def _headers(self, request):
    request[3]['Content-Length'] = self._pick([None, str(1 << 40), '-1', 'x'])


def _send(port: int, method: str, path: str, body: bytes, headers) -> int:
  """One request on a fresh connection (edited headers can desynchronise a kept-alive one)."""
  connection = http.client.HTTPConnection('127.0.0.1', port, timeout=60)
  try:
    connection.putrequest(method, path, skip_accept_encoding=True)
    for name, value in headers.items():
      if value is not None:
        connection.putheader(name, value)
    connection.endheaders()
    if method == 'POST':
      connection.send(body)
    response = connection.getresponse()
    answer = json.loads(response.read())
    assert response.status == 200 or list(answer) == ['error'], (response.status, answer)
    return response.status
  finally:
    connection.close()


@pytest.fixture(scope='module')
def rest_process(serving_dir, tmp_path_factory):
  """`vaetfx serve --rest-port` in its own process; yields (process, gRPC address, REST port)."""
  port, rest_port = portpicker.pick_unused_port(), portpicker.pick_unused_port()
  log_path = tmp_path_factory.mktemp('rest_fuzz') / 'server.log'
  with open(log_path, 'w', encoding='utf-8') as log:
    process = subprocess.Popen(
        [sys.executable, '-m', 'vaetfx.cli', 'serve', '--model-dir',
         os.path.join(serving_dir, MODEL_NAME), '--port', str(port), '--rest-port',
         str(rest_port), '--max-batch-rows', str(MAX_BATCH_ROWS)],
        stdout=log, stderr=subprocess.STDOUT)
  address = f'127.0.0.1:{port}'
  try:
    with client.ServingClient(address) as serving:
      serving.wait_until_available(timeout=120)
    yield process, address, rest_port
  finally:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)


def _answers(address, rest_port, digits):
  """The server's answers to valid requests over gRPC and over REST: its fingerprint."""
  with client.ServingClient(address, timeout=60) as serving:
    grpc_answers = serving.reconstruct(digits), serving.sample(4, seed=5)
  with client.RestClient(f'127.0.0.1:{rest_port}', timeout=60) as serving:
    rest_answers = serving.reconstruct(digits), serving.sample(4, seed=5)
  for name, value in grpc_answers[0].items():
    np.testing.assert_array_equal(rest_answers[0][name], value, err_msg=name)
  np.testing.assert_array_equal(rest_answers[1], grpc_answers[1])
  return grpc_answers


def test_fuzzed_rest_requests_get_answers_and_the_server_survives(rest_process, digits,
                                                                  examples, latent_dim):
  process, address, rest_port = rest_process
  before = _answers(address, rest_port, digits)
  def fuzz(index):
    generator = _JsonGenerator([SEED, index, 1], latent_dim, examples)
    codes, deadline = {}, time.monotonic() + FUZZ_SECONDS
    for _ in range(MAX_REQUESTS // THREADS):
      if time.monotonic() > deadline:
        break
      method, path, body, headers = generator.request()
      code = _send(rest_port, method, path, body, headers)
      assert code in ANSWERS, (code, method, path, body[:300], headers)
      codes[code] = codes.get(code, 0) + 1
    return codes

  counts, peak = clients_while_sampling_rss(process.pid, THREADS, fuzz)
  totals = {code: sum(c.get(code, 0) for c in counts) for code in sorted(ANSWERS)}
  assert process.poll() is None, f'the server died: {totals}'
  assert sum(totals.values()) >= 200, f'too few requests to mean anything: {totals}'
  assert all(totals[code] for code in (200, 400, 404, 413, 429)), totals
  high_water = vm_bytes(process.pid, 'VmHWM')
  print(f'REST fuzz: {totals}; server RSS peak sampled {peak >> 20} MiB, VmHWM '
        f'{high_water >> 20} MiB')
  assert max(peak, high_water) < RSS_LIMIT_BYTES, (peak, high_water, totals)
  after = _answers(address, rest_port, digits)
  for name, value in before[0].items():
    np.testing.assert_array_equal(after[0][name], value, err_msg=name)
  np.testing.assert_array_equal(after[1], before[1])
