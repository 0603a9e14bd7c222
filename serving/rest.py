"""TF Serving's REST API (its port 8501) for `vaetfx serve`, answered by the gRPC handlers.

Each HTTP request becomes the protobuf request the gRPC port takes (PredictRequest,
GetModelMetadataRequest, GetModelStatusRequest) and goes to the same servicer method with a
stand-in for gRPC's context, so version resolution, the signature checks, the admission
limits and batching are the gRPC port's, whatever changes in them. Paths, JSON forms, error
messages and the HTTP status of each gRPC code are TF Serving's (http_rest_api_handler.cc,
http_rest_api_util.cc, http_server.cc's status in status.py, the JSON in json_tensors.py).

A body is priced by its Content-Length before it is read, and by its lists and objects
before it is parsed, against the gRPC port's message limit, and the bodies being parsed at
once share that limit (parsed JSON takes many times its size); every connection has a deadline for reading each request (and a bounded wait for the
next), and there are at most `threads` connections at once, so slow or hostile clients cost
a bounded number of threads for a bounded time.
"""
import contextlib
import dataclasses
import http
import io
import json
import logging
import re
import socket
import socketserver
import ssl
import threading
import time
import urllib.parse
from http import server as http_server
from typing import Any, Callable, Dict, List, Optional, Tuple

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

from vaetfx.serving import json_tensors, status, tensors
from vaetfx.serving import servable as servable_lib

# The one metadata field TF Serving's REST API asks for (GetModelMetadataImpl::kSignatureDef).
SIGNATURE_DEF_FIELD = 'signature_def'
READ_TIMEOUT_SECONDS = 30.0
# What Python's JSON parser allocates for a list or an object beyond its bytes (67 to 75 bytes
# for `[],` or `{},`, measured): a body of 64 MiB of empty lists would take 1.5 GB parsed.
CONTAINER_BYTES = 64
# TF Serving's paths (http_rest_api_util.cc): model, then a version or a label, then the verb.
_PREDICTION_PATH = re.compile(
    r'/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)',
    re.IGNORECASE)
_STATUS_PATH = re.compile(
    r'/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?',
    re.IGNORECASE)
_API_PATH = re.compile(r'/v1/.*', re.IGNORECASE)  # Other paths are not the API's: 404.
_INT64_MAX = 2**63 - 1

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Services:
  """What the REST API calls: the gRPC servicers, and the ModelSpec -> Servable resolution that
  TF Serving's REST handler does itself to read a signature's input types."""
  prediction: Any  # server._PredictionService
  model: Any  # server._ModelService
  resolve: Callable[[Any], servable_lib.Servable]


class _HttpError(Exception):
  """A request refused by the HTTP layer before it reaches the API (no Content-Length, too big)."""

  def __init__(self, code: int, message: str):
    super().__init__(message)
    self.code = code


class _Context:
  """The part of grpc.ServicerContext the servicers use: abort raises the status, callbacks
  run once the answer is sent, and the deadline (REST has none from the client) is
  READ_TIMEOUT_SECONDS, how long the server waits for a client too."""

  def __init__(self):
    self.callbacks: List[Callable[[], None]] = []
    self._deadline = time.monotonic() + READ_TIMEOUT_SECONDS

  def time_remaining(self) -> float:
    return max(0.0, self._deadline - time.monotonic())

  def abort(self, code: grpc.StatusCode, details: str):
    raise status.ServingError(code, details)

  def add_callback(self, callback: Callable[[], None]) -> bool:
    self.callbacks.append(callback)
    return True


@dataclasses.dataclass(frozen=True)
class _Route:
  """What a path names: the model, a version or a label, and the method or subresource."""
  method: str  # predict, classify, regress, status or metadata
  model_name: str
  version: Optional[int] = None
  label: str = ''

  def fill(self, model_spec):
    model_spec.name = self.model_name
    if self.version is not None:
      model_spec.version.value = self.version
    elif self.label:
      model_spec.version_label = self.label


def route(http_method: str, path: str) -> _Route:
  """TF Serving's ParseModelInfo; a path of no API method is INVALID_ARGUMENT, as there."""
  pattern = {'POST': _PREDICTION_PATH, 'GET': _STATUS_PATH}.get(http_method)
  match = pattern.fullmatch(path) if pattern else None
  if not match:
    raise status.invalid_argument(f'Malformed request: {http_method} {path}')
  name, version, label, verb = match.groups()
  if version is not None and int(version) > _INT64_MAX:
    raise status.invalid_argument(f'Failed to convert version: {version} to numeric.')
  if not name:
    raise status.invalid_argument('Missing model name in request.')
  return _Route(method=(verb or 'status').lower(), model_name=urllib.parse.unquote(name),
                version=None if version is None else int(version),
                label=urllib.parse.unquote(label or ''))


class Api:
  """The REST API's methods over the services; each returns (HTTP status, JSON document) and
  the callbacks to run once the answer is sent."""

  def __init__(self, services: Services, parsing: '_ByteBudget'):
    self._services = services
    self._parsing = parsing

  def handle(self, http_method: str, path: str,
             body: bytes) -> Tuple[int, Dict[str, Any], List[Callable]]:
    context = _Context()
    try:
      target = route(http_method, path)
      if target.method == 'predict':
        document = self._predict(target, body, context)
      elif target.method in ('classify', 'regress'):
        raise status.ServingError(grpc.StatusCode.UNIMPLEMENTED,
                                  f'{target.method} is not implemented by this server (nor on '
                                  f'its gRPC port); use predict')
      elif target.method == 'metadata':
        document = self._metadata(target, context)
      else:
        document = self._status(target, context)
    except json_tensors.JsonError as e:
      return status.HTTP_STATUS[grpc.StatusCode.INVALID_ARGUMENT], {'error': str(e)}, []
    except status.ServingError as e:
      return status.HTTP_STATUS[e.code], {'error': e.message}, []
    return status.HTTP_STATUS[grpc.StatusCode.OK], document, context.callbacks

  def _predict(self, target: _Route, body: bytes, context: _Context) -> Dict[str, Any]:
    """TF Serving's ProcessPredictRequest: the signature's input types (from the version the
    path names) turn the JSON into a PredictRequest, which the gRPC handler answers."""
    with self._parsing.take(len(body)):
      request, rows = self._predict_request(target, body)
    response = self._services.prediction.predict_message(request, context)
    return json_tensors.answer(
        {alias: tensors.to_array(proto) for alias, proto in response.outputs.items()}, rows)

  def _predict_request(self, target: _Route, body: bytes) -> Tuple[predict_pb2.PredictRequest,
                                                                   bool]:
    """(the PredictRequest, whether the JSON was in row form); the parsed JSON, many times the
    body's size in Python objects, is freed on return, before the model runs."""
    document = json_tensors.parse(body)
    request = predict_pb2.PredictRequest()
    target.fill(request.model_spec)
    request.model_spec.signature_name = json_tensors.signature_name(document)
    rows = json_tensors.fill_inputs(document, self._input_types(request.model_spec),
                                    request.inputs)
    return request, rows

  def _input_types(self, model_spec) -> Dict[str, int]:
    """TF Serving's GetInfoMap, with its messages."""
    servable = self._services.resolve(model_spec)
    name = model_spec.signature_name or servable_lib.DEFAULT_SIGNATURE
    signature_def = servable.signature_defs.get(name)
    if signature_def is None:
      raise status.invalid_argument(f'Serving signature name: "{name}" not found in signature def')
    if not signature_def.inputs:
      raise status.invalid_argument(f'Failed to get input map for signature: {name}')
    return {alias: info.dtype for alias, info in signature_def.inputs.items()}

  def _metadata(self, target: _Route, context: _Context) -> Dict[str, Any]:
    """{"model_spec": ..., "metadata": {"signature_def": ...}}, snake_case as TF Serving writes."""
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=[SIGNATURE_DEF_FIELD])
    target.fill(request.model_spec)
    response = self._services.prediction.GetModelMetadata(request, context)
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_defs)
    return {'model_spec': _to_dict(response.model_spec),
            'metadata': {SIGNATURE_DEF_FIELD: _to_dict(signature_defs)}}

  def _status(self, target: _Route, context: _Context) -> Dict[str, Any]:
    request = get_model_status_pb2.GetModelStatusRequest()
    target.fill(request.model_spec)
    return _to_dict(self._services.model.GetModelStatus(request, context))


class _ByteBudget:
  """Bytes of JSON being parsed at once, at most `total`: a body of floats takes 16 times its
  size while it becomes a PredictRequest (measured: 1.0 GB for 63 MiB), so parsing is what
  bounds the REST port's memory. A body waits up to `wait_seconds` for its share, then is
  RESOURCE_EXHAUSTED."""

  def __init__(self, total: int, wait_seconds: float):
    self._free = total
    self._wait_seconds = wait_seconds
    self._freed = threading.Condition()

  @contextlib.contextmanager
  def take(self, size: int):
    with self._freed:
      if not self._freed.wait_for(lambda: self._free >= size, self._wait_seconds):
        raise status.ServingError(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f'the server is parsing other JSON bodies, and {size} more bytes would pass its '
            f'limit (--max-message-mb) for {self._wait_seconds:g} s: send smaller requests, '
            f'or try again')
      self._free -= size
    try:
      yield
    finally:
      with self._freed:
        self._free += size
        self._freed.notify_all()


def _to_dict(message) -> Dict[str, Any]:
  """JSON as TF Serving prints protos: field names as in the .proto, defaults included."""
  return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                   including_default_value_fields=True)


def price(body: bytes) -> int:
  """What a JSON body counts for against the message limit, before it is parsed: its bytes,
  plus CONTAINER_BYTES for each `[` or `{` (also those in strings; base64 has none)."""
  return len(body) + CONTAINER_BYTES * (body.count(b'[') + body.count(b'{'))


class _DeadlineReader(io.RawIOBase):
  """A socket's reads, failing with socket.timeout once the deadline passes: a per-read
  timeout alone lets a client sending one byte every few seconds hold its thread forever."""

  def __init__(self, sock: socket.socket):
    super().__init__()
    self._sock = sock
    self.deadline = time.monotonic()

  def readable(self) -> bool:
    return True

  def readinto(self, buffer) -> int:
    remaining = self.deadline - time.monotonic()
    if remaining <= 0:
      raise socket.timeout('the request was not read within its deadline')
    self._sock.settimeout(remaining)
    return self._sock.recv_into(buffer)


class _Handler(http_server.BaseHTTPRequestHandler):
  """One connection: reads each request within its deadline, answers it through the Api."""
  protocol_version = 'HTTP/1.1'  # Keep-alive, as curl and client libraries expect.
  # The head and the body go in two writes: with Nagle's algorithm the body waits for the
  # client's delayed ACK of the head, 40 ms on Linux.
  disable_nagle_algorithm = True
  server: '_HttpServer'

  def setup(self):
    super().setup()
    self.rfile.close()  # Else the socket stays open after the connection ends.
    self._reader = _DeadlineReader(self.connection)
    self.rfile = io.BufferedReader(self._reader)
    if isinstance(self.connection, ssl.SSLSocket):
      self.connection.settimeout(self.server.read_timeout)
      self.connection.do_handshake()

  def handle_one_request(self):
    """Each request (and the wait for it on a kept-alive connection) gets read_timeout."""
    self._reader.deadline = time.monotonic() + self.server.read_timeout
    if self.server.stopping.is_set():
      self.close_connection = True
      return
    super().handle_one_request()

  def do_GET(self):  # pylint: disable=invalid-name
    if self.headers.get('Content-Length', '0') != '0':
      self.close_connection = True  # Its body is not read, so nothing can follow it.
    self._answer(lambda: b'')

  def do_POST(self):  # pylint: disable=invalid-name
    self._answer(self._read_body)

  def _answer(self, read_body: Callable[[], bytes]):
    """Reads the body first, as TF Serving does, so a refused request leaves the connection
    ready for the next one."""
    path = urllib.parse.urlsplit(self.path).path
    with self.server.in_flight:
      try:
        body = read_body()
        if not _API_PATH.fullmatch(path):
          code, document, callbacks = 404, {'error': f'Not an API path: {path}'}, []
        else:
          code, document, callbacks = self.server.api.handle(self.command, path, body)
      except _HttpError as e:
        self.close_connection = True  # The body may be unread: the connection cannot go on.
        code, document, callbacks = e.code, {'error': str(e)}, []
      except (socket.timeout, ConnectionError):
        self.close_connection = True  # Too slow, or gone: no answer.
        return
      except Exception as e:  # pylint: disable=broad-except
        log.exception('%s %s failed', self.command, path)
        code, document, callbacks = 500, {'error': f'{type(e).__name__}: {e}'}, []
      self._send(code, document)
    for callback in callbacks:
      callback()

  def handle_expect_100(self) -> bool:
    """A client that asks first (curl does above 1 MiB) is refused before sending a body over
    the limit, instead of being told to go on."""
    if self.command == 'POST':
      try:
        self._declared_length()
      except _HttpError as e:
        self.close_connection = True
        self._send(e.code, {'error': str(e)})
        return False
    return super().handle_expect_100()

  def _read_body(self) -> bytes:
    """The body, once its declared length is known to be within the message limit."""
    length = self._declared_length()
    body = self.rfile.read(length)
    if len(body) < length:
      raise ConnectionAbortedError('the client closed the connection before sending its body')
    limit = self.server.max_body_bytes
    if price(body) > limit:
      raise _HttpError(413, f'the body is priced at {price(body)} bytes (its {len(body)} bytes '
                            f'and {CONTAINER_BYTES} for each list or object in it); this server '
                            f'takes at most {limit} ({limit >> 20} MiB, --max-message-mb) per '
                            f'request')
    return body

  def _declared_length(self) -> int:
    """The body's Content-Length, refused past the message limit."""
    if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
      raise _HttpError(411, 'chunked bodies are not taken: send a Content-Length')
    length = self.headers.get('Content-Length')
    if length is None:
      raise _HttpError(411, 'a request body needs a Content-Length header')
    if not length.isdigit():
      raise _HttpError(400, f'Content-Length {length!r} is not a byte count')
    limit = self.server.max_body_bytes
    if int(length) > limit:
      raise _HttpError(413, f'the body has {int(length)} bytes; this server takes at most '
                            f'{limit} ({limit >> 20} MiB, --max-message-mb) per request: '
                            f'send fewer rows per request')
    return int(length)

  def _send(self, code: int, document: Dict[str, Any]):
    payload = json.dumps(document).encode('utf-8')
    self.connection.settimeout(self.server.read_timeout)  # A client that never reads its answer.
    self.send_response(code)
    self.send_header('Content-Type', 'application/json')
    self.send_header('Content-Length', str(len(payload)))
    if self.close_connection:
      self.send_header('Connection', 'close')
    self.end_headers()
    self.wfile.write(payload)

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    log.debug('%s %s', self.address_string(), format % args)


class _InFlight:
  """Counts requests being answered, so stopping can wait for them (not for idle connections)."""

  def __init__(self):
    self._count = 0
    self._idle = threading.Condition()

  def __enter__(self):
    with self._idle:
      self._count += 1

  def __exit__(self, *exc_info):
    with self._idle:
      self._count -= 1
      self._idle.notify_all()

  def wait(self, timeout: Optional[float]) -> bool:
    with self._idle:
      return self._idle.wait_for(lambda: not self._count, timeout)


class _HttpServer(http_server.ThreadingHTTPServer):
  """A thread per connection, at most `max_connections` of them; more are refused with 503."""
  daemon_threads = True

  def __init__(self, address: Tuple[str, int], api: Api, *, max_body_bytes: int,
               max_connections: int, read_timeout: float,
               ssl_context: Optional[ssl.SSLContext]):
    self.address_family = socket.AF_INET6 if ':' in address[0] else socket.AF_INET
    self.api = api
    self.max_body_bytes = max_body_bytes
    self.read_timeout = read_timeout
    self.in_flight = _InFlight()
    self.stopping = threading.Event()
    self._slots = threading.BoundedSemaphore(max_connections)
    self._ssl_context = ssl_context
    super().__init__(address, _Handler)

  def server_bind(self):
    """HTTPServer's, without its reverse DNS lookup of the host (seconds where DNS is slow)."""
    socketserver.TCPServer.server_bind(self)  # pylint: disable=non-parent-method-called
    self.server_name, self.server_port = self.server_address[:2]

  def handle_error(self, request, client_address):
    """A client that went away, or broke TLS, is not the server's error."""
    log.debug('REST connection from %s failed', client_address, exc_info=True)

  def get_request(self):
    """TLS is set up in the connection's thread (on its first read), not in the accept loop."""
    sock, address = super().get_request()
    if self._ssl_context:
      sock = self._ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    return sock, address

  def process_request(self, request, client_address):
    if not self._slots.acquire(blocking=False):
      _refuse(request)
      self.shutdown_request(request)
      return
    super().process_request(request, client_address)

  def process_request_thread(self, request, client_address):
    """ThreadingMixIn's, with the slot freed before the client sees its connection close."""
    try:
      self.finish_request(request, client_address)
    except Exception:  # pylint: disable=broad-except
      self.handle_error(request, client_address)
    finally:
      self._slots.release()
      self.shutdown_request(request)


def _refuse(sock: socket.socket):
  """503 with TF Serving's error form, written without waiting on the client."""
  body = json.dumps({'error': 'too many connections to this server\'s REST port; try again'})
  head = (f'HTTP/1.1 {http.HTTPStatus.SERVICE_UNAVAILABLE.value} Service Unavailable\r\n'
          f'Content-Type: application/json\r\nContent-Length: {len(body)}\r\n'
          f'Connection: close\r\n\r\n')
  if isinstance(sock, ssl.SSLSocket):
    return  # No handshake yet: closing is all it gets.
  try:
    sock.setblocking(False)
    sock.send((head + body).encode('ascii'))
  except OSError:
    pass


class RestServer:
  """TF Serving's REST API on its own port, serving in a background thread."""

  def __init__(self, host: str, port: int, services: Services, *, max_body_bytes: int,
               max_connections: int, read_timeout: float,
               ssl_context: Optional[ssl.SSLContext] = None):
    api = Api(services, _ByteBudget(max_body_bytes, read_timeout))
    self._server = _HttpServer((host, port), api, max_body_bytes=max_body_bytes,
                               max_connections=max_connections, read_timeout=read_timeout,
                               ssl_context=ssl_context)
    self.port = self._server.server_address[1]
    self._thread = threading.Thread(target=self._server.serve_forever, name='rest', daemon=True)
    self._thread.start()

  def stop(self, grace: Optional[float]):
    """Stops accepting, lets requests being answered finish for up to `grace` seconds."""
    self._server.stopping.set()
    self._server.shutdown()
    self._server.in_flight.wait(grace)
    self._server.server_close()
