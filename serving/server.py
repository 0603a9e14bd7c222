"""A local model server that speaks TF Serving's gRPC API, for development and tests.

It implements PredictionService.Predict and GetModelMetadata and
ModelService.GetModelStatus from tensorflow-serving-api's protos, with TF
Serving's version resolution, status codes and messages; the other RPCs answer
UNIMPLEMENTED. Clients written for TF Serving (vaetfx query included) work
against it unchanged, so everything but the binary is tested here. With a
REST port, rest.py answers TF Serving's REST API through the same handlers.
"""
import ctypes
import dataclasses
import functools
import logging
import os
import pathlib
import signal
import ssl
import threading
from concurrent import futures
from typing import Callable, Dict, Mapping, NamedTuple, Optional, Sequence

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from vaetfx.serving import batching, defaults
from vaetfx.serving import limits as limits_lib
from vaetfx.serving import rest, status, tensors, versions, warmup
from vaetfx.serving import servable as servable_lib

SIGNATURE_DEF_FIELD = rest.SIGNATURE_DEF_FIELD  # GetModelMetadataImpl::kSignatureDef
PREDICTION_SERVICE = 'tensorflow.serving.PredictionService'  # The gRPC service's full name.
ENTRIES_PACKAGE = 'vaetfx.serving.entries'  # Of PredictRequest read with input entries.
MAX_ERROR_CHARS = 1000  # An exception's text can quote a whole tensor.
TRUNCATED = '... (cut)'
NO_DEADLINE_SECONDS = 365 * 24 * 3600.0
# A request waiting for room gives up this much before its deadline: the answer must travel.
DEADLINE_MARGIN_FRACTION = 0.2
MAX_DEADLINE_MARGIN_SECONDS = 0.5
M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h).
MALLOC_ARENAS = 2

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ServerConfig:
  """Everything `vaetfx serve` sets; the model name defaults to the model folder's name."""
  model_dir: str
  model_name: str = ''
  host: str = defaults.HOST
  port: int = defaults.PORT
  poll_seconds: float = defaults.POLL_SECONDS
  version_policy: versions.VersionPolicy = versions.VersionPolicy()
  version_labels: Mapping[str, int] = dataclasses.field(default_factory=dict)
  max_load_retries: int = defaults.MAX_LOAD_RETRIES
  load_retry_seconds: float = defaults.LOAD_RETRY_SECONDS
  limits: limits_lib.Limits = limits_lib.Limits()
  max_inflight_bytes: int = defaults.MAX_INFLIGHT_BYTES
  threads: int = defaults.SERVER_THREADS
  max_message_bytes: int = defaults.MAX_MESSAGE_BYTES
  batching_parameters: Optional[batching.BatchingParameters] = None
  tls_cert_file: str = ''
  tls_key_file: str = ''
  rest_port: Optional[int] = None  # TF Serving's REST API on this port too (0: any free one).
  # TensorFlow's intra-op and inter-op thread pools (0: TensorFlow's choice, and left alone).
  intra_op_threads: int = 0
  inter_op_threads: int = 0

  @property
  def name(self) -> str:
    return self.model_name or os.path.basename(os.path.normpath(self.model_dir))


def _answers_errors(method):
  """A ServingError raised while handling becomes the RPC's status code and message; any other
  exception becomes INTERNAL with its message (and a traceback in the log), never a crash."""
  @functools.wraps(method)
  def handler(self, request, context):
    try:
      return method(self, request, context)
    except status.ServingError as e:
      context.abort(e.code, _shortened(e.message))
    except Exception as e:  # pylint: disable=broad-except
      log.exception('%s failed', method.__name__)
      context.abort(grpc.StatusCode.INTERNAL, _shortened(
          f'{method.__name__} failed in the server: {type(e).__name__}: {e}'))
  return handler


def _shortened(message: str) -> str:
  """A message quoting a request (a shape of 100,000 dimensions, say) cut to fit gRPC's
  trailing metadata, which clients refuse above 8 KiB."""
  if len(message) <= MAX_ERROR_CHARS:
    return message
  return message[:MAX_ERROR_CHARS - len(TRUNCATED)] + TRUNCATED


@functools.lru_cache(maxsize=None)
def _libc_function(name: str) -> Optional[Callable[..., int]]:
  """A glibc function, or None where the C library has none (musl, macOS)."""
  return getattr(ctypes.CDLL(None), name, None)


def _return_free_memory():
  """Once a request bigger than a slice is answered and sent, hands the heap its activations,
  arrays and messages took back to the OS: glibc keeps freed heap for reuse, and the server's
  resident memory would stay at its largest request's peak."""
  trim = _libc_function('malloc_trim')
  if trim:
    trim(0)


def _limit_malloc_arenas():
  """glibc gives threads that contend for the heap heaps of their own (up to 8 per core), and
  memory freed in one is reused by no other: with 32 handler threads and TensorFlow's, the
  server's peak under 32 large requests was 290 MiB higher than with MALLOC_ARENAS."""
  mallopt = _libc_function('mallopt')
  if mallopt:
    mallopt(M_ARENA_MAX, MALLOC_ARENAS)


def _set_tensorflow_threads(intra_op: int, inter_op: int):
  """Sizes TensorFlow's thread pools (0 leaves one as it is), before the first model loads:
  TensorFlow fixes them when its runtime starts and refuses a change after (RuntimeError)."""
  if intra_op:
    tf.config.threading.set_intra_op_parallelism_threads(intra_op)
  if inter_op:
    tf.config.threading.set_inter_op_parallelism_threads(inter_op)


def _seconds_left(context) -> Optional[float]:
  """How long the call may wait: until shortly before its deadline, so the client still gets
  the server's answer and not its own DEADLINE_EXCEEDED; None when the client set no deadline
  (gRPC reports years)."""
  left = context.time_remaining()
  if left is None or left > NO_DEADLINE_SECONDS:
    return None
  return left - min(DEADLINE_MARGIN_FRACTION * left, MAX_DEADLINE_MARGIN_SECONDS)


def _require_model_spec(request):
  if not request.HasField('model_spec'):
    raise status.invalid_argument('Missing ModelSpec')


class _Models:
  """The served models by name, and TF Serving's ModelSpec -> loaded version resolution."""

  def __init__(self, managers: Sequence[versions.ModelManager]):
    self._managers: Dict[str, versions.ModelManager] = {m.name: m for m in managers}

  def resolve(self, model_spec) -> servable_lib.Servable:
    manager = self._managers.get(model_spec.name)
    version = versions.requested_version(model_spec, manager.labels if manager else {})
    servable = manager.servable(version) if manager else None
    if servable is None:
      raise status.not_found(
          f'Servable not found for request: {versions.describe_request(model_spec.name, version)}')
    return servable

  def statuses(self, name: str, version: Optional[int]) -> Dict[int, versions.VersionStatus]:
    manager = self._managers.get(name)
    return manager.statuses(version) if manager else {}


def _request_class_with_input_entries():
  """PredictRequest, but with `inputs` read as the repeated InputsEntry messages a map is on
  the wire. The C++ protobuf builds a map's view on its first access by copying every value:
  each request's tensors twice in memory while it waits for room in the budget, and 1.3 to
  2 s for one tensor of 40 million int_val values; repeated entries are read in place."""
  file_proto = descriptor_pb2.FileDescriptorProto()
  predict_pb2.DESCRIPTOR.CopyToProto(file_proto)
  file_proto.name, file_proto.package = 'vaetfx/serving/predict_entries.proto', ENTRIES_PACKAGE
  for message in file_proto.message_type:
    for nested in message.nested_type:
      nested.options.map_entry = False
    for field in message.field:
      if field.type_name.startswith(f'.{predict_pb2.DESCRIPTOR.package}.Predict'):
        field.type_name = field.type_name.replace(predict_pb2.DESCRIPTOR.package,
                                                  ENTRIES_PACKAGE, 1)
  pool = descriptor_pool.DescriptorPool()  # Its own: TensorFlow's classes stay untouched.
  _add_with_dependencies(pool, predict_pb2.DESCRIPTOR, set())
  pool.AddSerializedFile(file_proto.SerializeToString())
  return message_factory.MessageFactory(pool).GetPrototype(
      pool.FindMessageTypeByName(f'{ENTRIES_PACKAGE}.PredictRequest'))


def _add_with_dependencies(pool: descriptor_pool.DescriptorPool, file_descriptor, added: set):
  for dependency in file_descriptor.dependencies:
    if dependency.name not in added:
      added.add(dependency.name)
      _add_with_dependencies(pool, dependency, added)
      file_proto = descriptor_pb2.FileDescriptorProto()
      dependency.CopyToProto(file_proto)
      pool.AddSerializedFile(file_proto.SerializeToString())


_PredictRequestWithEntries = _request_class_with_input_entries()


class _SizedRequest(NamedTuple):
  """A PredictRequest (its inputs as entries) and its size on the wire, which only the
  deserializer sees: what the request carries, priced without walking its values (protobuf's
  ByteSize takes seconds on 40 million packed int_val values)."""
  message: _PredictRequestWithEntries
  wire_bytes: int

  @classmethod
  def parse(cls, data: bytes) -> '_SizedRequest':
    return cls(_PredictRequestWithEntries.FromString(data), len(data))

  @property
  def inputs(self) -> Dict[str, tensor_pb2.TensorProto]:
    """By alias; of an alias sent twice, the last, as a map keeps it."""
    return {entry.key: entry.value for entry in self.message.inputs}


def _predict_handler(service) -> grpc.GenericRpcHandler:
  """Predict with _SizedRequest.parse as its deserializer; added before the generated handlers
  (which answer PredictionService's other methods), so it is the one gRPC finds."""
  return grpc.method_handlers_generic_handler(PREDICTION_SERVICE, {
      'Predict': grpc.unary_unary_rpc_method_handler(
          service.Predict, request_deserializer=_SizedRequest.parse,
          response_serializer=predict_pb2.PredictResponse.SerializeToString)})


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
  """Predict and GetModelMetadata; Classify, Regress and MultiInference stay UNIMPLEMENTED."""

  def __init__(self, models: _Models, batcher: Optional[batching.BatchScheduler],
               limits: limits_lib.Limits, budget: limits_lib.Budget, max_message_bytes: int):
    self._models = models
    self._batcher = batcher
    self._limits = limits
    self._budget = budget
    self._max_message_bytes = max_message_bytes

  @_answers_errors
  def Predict(self, sized: _SizedRequest, context):
    """Registered with _SizedRequest.parse as its deserializer (_predict_handler)."""
    request, request_inputs = sized.message, sized.inputs
    _require_model_spec(request)
    servable = self._models.resolve(request.model_spec)
    signature = servable.signature(request.model_spec.signature_name)
    outputs, price = signature.admit(request_inputs, list(request.output_filter), self._limits,
                                     sized.wire_bytes)
    limits_lib.check_answer(price, self._max_message_bytes)
    self._hold(price, context)
    inputs = signature.decode(request_inputs)
    if signature.rows(inputs) > self._limits.slice_rows:
      context.add_callback(_return_free_memory)
    results = self._run(servable, signature, inputs, outputs)
    response = predict_pb2.PredictResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.model_spec.signature_name = signature.name
    for alias in outputs:
      tensors.to_proto(results[alias], response.outputs[alias])
    return response

  def predict_message(self, request: predict_pb2.PredictRequest, context):
    """Predict of a PredictRequest built in process (the REST API's): priced by its size on
    the wire, as if gRPC had received it."""
    return self.Predict(_SizedRequest.parse(request.SerializeToString()), context)

  def _hold(self, price: limits_lib.Price, context):
    """Takes the request's price from the budget, waiting up to its deadline, until gRPC has
    sent its answer (or the call ended otherwise)."""
    release = self._budget.hold(price.in_memory, _seconds_left(context))
    if not context.add_callback(release):
      release()

  def _run(self, servable, signature, inputs, outputs) -> Dict[str, np.ndarray]:
    """Batchable signatures go through the batcher when there is one; others run inline, as in
    TF Serving for requests that match no batching signature.

    So does a request of more rows than a slice (up to the batcher's max_batch_size, whose
    refusal of bigger ones is TF Serving's): it is several model calls already and gains
    nothing from a batch, while on the batch thread its slices, seconds of them at 10,000
    rows, would hold up every small request queued behind it."""
    run = functools.partial(signature.run, outputs=outputs, slice_rows=self._limits.slice_rows)
    if (self._batcher is None or not signature.batchable or self._limits.slice_rows
        < signature.rows(inputs) <= self._batcher.parameters.max_batch_size):
      return run(inputs)
    key = (servable.name, servable.version, signature.name, outputs)
    return self._batcher.run(key, run, inputs)

  @_answers_errors
  def GetModelMetadata(self, request, context):
    _require_model_spec(request)
    if not request.metadata_field:
      raise status.invalid_argument(
          'GetModelMetadataRequest must specify at least one metadata_field')
    for field in request.metadata_field:
      if field != SIGNATURE_DEF_FIELD:
        raise status.invalid_argument(f'Metadata field {field} is not supported')
    servable = self._models.resolve(request.model_spec)
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    for key, signature_def in servable.signature_defs.items():
      signature_defs.signature_def[key].CopyFrom(signature_def)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_defs)
    return response


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
  """GetModelStatus; HandleReloadConfigRequest stays UNIMPLEMENTED."""

  def __init__(self, models: _Models):
    self._models = models

  @_answers_errors
  def GetModelStatus(self, request, context):
    _require_model_spec(request)
    name = request.model_spec.name
    version = request.model_spec.version.value if request.model_spec.HasField('version') else None
    records = self._models.statuses(name, version)
    if not records:
      raise status.not_found(f'Could not find any versions of model {name}' if version is None
                             else f'Could not find version {version} of model {name}')
    response = get_model_status_pb2.GetModelStatusResponse()
    for number, record in records.items():
      entry = response.model_version_status.add(version=number, state=record.state)
      entry.status.SetInParent()  # OK with no message, as TF Serving's (its REST JSON shows it).
      if record.error:
        entry.status.error_code = record.error.code.value[0]
        entry.status.error_message = record.error.message
    return response


def _host_port(host: str, port: int) -> str:
  """IPv6 hosts need brackets before the port."""
  return f'[{host}]:{port}' if ':' in host else f'{host}:{port}'


class ModelServer:
  """The model's versions, the optional batcher and the gRPC server, started and stopped as one."""

  def __init__(self, config: ServerConfig):
    self.config = config
    # Shared by Predict and the warmup of versions loaded while serving.
    self.budget = limits_lib.Budget(config.max_inflight_bytes)
    self.manager = versions.ModelManager(
        config.name, config.model_dir, config.version_policy, config.version_labels,
        config.poll_seconds, versions.RetryPolicy(config.max_load_retries,
                                                  config.load_retry_seconds),
        functools.partial(warmup.load_warmed_up, limits=config.limits, budget=self.budget))
    self._batcher = (batching.BatchScheduler(config.batching_parameters)
                     if config.batching_parameters else None)
    self._server: Optional[grpc.Server] = None
    self._rest: Optional[rest.RestServer] = None
    self.port = 0
    self.rest_port = 0

  def start(self) -> int:
    """Loads the versions on disk, then listens; returns the port (useful with port 0)."""
    _limit_malloc_arenas()  # Before TensorFlow's and gRPC's threads first allocate.
    _set_tensorflow_threads(self.config.intra_op_threads, self.config.inter_op_threads)
    self.manager.start()
    if not self.manager.available_versions:
      log.warning('No version of %s is loaded from %s yet: requests get NOT_FOUND until one '
                  'is (version folders are named by integers, e.g. %s/1/)', self.config.name,
                  self.config.model_dir, self.config.model_dir)
    limit = self.config.max_message_bytes
    self._server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=self.config.threads, thread_name_prefix='rpc'),
        options=[('grpc.max_receive_message_length', limit),
                 ('grpc.max_send_message_length', limit),
                 ('grpc.so_reuseport', 0)])  # A port in use must fail, not be shared.
    models = _Models([self.manager])
    services = rest.Services(
        _PredictionService(models, self._batcher, self.config.limits, self.budget,
                           self.config.max_message_bytes),
        _ModelService(models), models.resolve)
    self._server.add_generic_rpc_handlers((_predict_handler(services.prediction),))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(services.prediction,
                                                                        self._server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(services.model, self._server)
    self.port = self._bind()
    self._server.start()
    log.info('Serving %s versions %s on %s', self.config.name, self.manager.available_versions,
             self.address)
    if self.config.rest_port is not None:
      self._start_rest(services)
    return self.port

  def _start_rest(self, services: rest.Services):
    """The REST API over the same services, with the gRPC port's message limit and TLS."""
    context = None
    if self.config.tls_cert_file:
      context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
      context.load_cert_chain(self.config.tls_cert_file, self.config.tls_key_file)
    try:
      self._rest = rest.RestServer(
          self.config.host, self.config.rest_port, services,
          max_body_bytes=self.config.max_message_bytes, max_connections=self.config.threads,
          read_timeout=rest.READ_TIMEOUT_SECONDS, ssl_context=context)
    except OSError as e:
      self.stop(0)
      raise OSError(f'cannot listen on {_host_port(self.config.host, self.config.rest_port)} '
                    f'(REST): {e.strerror or e}') from e
    self.rest_port = self._rest.port
    log.info('Serving the REST API on %s', self.rest_address)

  def _bind(self) -> int:
    address = _host_port(self.config.host, self.config.port)
    try:
      if self.config.tls_cert_file:
        key = pathlib.Path(self.config.tls_key_file).read_bytes()
        chain = pathlib.Path(self.config.tls_cert_file).read_bytes()
        port = self._server.add_secure_port(address, grpc.ssl_server_credentials([(key, chain)]))
      else:
        port = self._server.add_insecure_port(address)
    except RuntimeError as e:
      port = 0
      log.debug('Binding %s failed: %s', address, e)
    if not port:
      self.stop(0)
      raise OSError(f'cannot listen on {address}: the port is in use or the address is not local')
    return port

  @property
  def address(self) -> str:
    """host:port as clients dial it once started."""
    return _host_port(self.config.host, self.port)

  @property
  def rest_address(self) -> str:
    """http(s)://host:port of the REST API once started."""
    scheme = 'https' if self.config.tls_cert_file else 'http'
    return f'{scheme}://{_host_port(self.config.host, self.rest_port)}'

  def stop(self, grace: Optional[float] = defaults.GRACE_SECONDS):
    """Refuses new RPCs and REST requests, lets running ones finish for up to `grace` seconds,
    then stops polling."""
    stopped = self._server.stop(grace) if self._server is not None else None
    if self._rest is not None:  # Meanwhile, gRPC's requests in flight finish.
      self._rest.stop(grace)
    if stopped is not None:
      stopped.wait()
    if self._batcher is not None:
      self._batcher.stop()
    self.manager.stop()

  def __enter__(self) -> 'ModelServer':
    self.start()
    return self

  def __exit__(self, *exc_info):
    self.stop()


def serve_until_signalled(config: ServerConfig, grace_seconds: float = defaults.GRACE_SECONDS):
  """Serves until SIGTERM or SIGINT, then lets requests in flight finish for `grace_seconds`:
  `vaetfx serve`, and the infra validator's child, which must stop as TF Serving does.

  The handlers are installed before loading, so a SIGTERM during a long load
  still stops gracefully. Raises OSError when the server cannot start (a port
  taken, unreadable TLS files).
  """
  stop = threading.Event()
  previous = {sig: signal.signal(sig, lambda *_: stop.set())
              for sig in (signal.SIGTERM, signal.SIGINT)}
  try:
    model_server = ModelServer(config)
    model_server.start()
    rest_line = (f' and REST on {model_server.rest_address}'
                 if config.rest_port is not None else '')
    print(f'Serving model {config.name!r} (versions {model_server.manager.available_versions}) '
          f'from {config.model_dir} on {model_server.address}{rest_line}; SIGTERM or Ctrl-C '
          'stops.', flush=True)
    stop.wait()
    print(f'Stopping: letting requests in flight finish (up to {grace_seconds:g} s).',
          flush=True)
    model_server.stop(grace_seconds)
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)
