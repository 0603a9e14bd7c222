"""A client for the VAE (or the plain autoencoder) behind TF Serving's gRPC API: real TF Serving
or `vaetfx serve` alike.

It uses only tensorflow-serving-api's generated stubs (PredictionService,
ModelService), so nothing here depends on which server answers. Every call has
a deadline, and every failure becomes a ServingError whose message says what to
do about it: server down, model or version missing, input rejected.
"""
import dataclasses
import http.client
import json
import pathlib
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from vaetfx.serving import defaults, json_tensors, status, tensors
from vaetfx.shared import features

RANDOM_SEED = -1  # The `sample` signature draws a fresh seed for negative values.
State = get_model_status_pb2.ModelVersionStatus.State
AVAILABLE = State.AVAILABLE
# Restarts of a many-request Predict whose version was replaced mid-way, before giving up.
MAX_VERSION_CHANGES = 2


@dataclasses.dataclass(frozen=True)
class Prediction:
  """A Predict answer: the output arrays, and which version and signature produced them."""
  outputs: Dict[str, np.ndarray]
  version: int
  signature_name: str


class ServingClient:
  """One channel to a model server, with the model (and optionally its version) fixed.

  Thread-safe: a gRPC channel multiplexes concurrent calls.
  """

  def __init__(self, address: str = defaults.ADDRESS, model_name: str = defaults.MODEL_NAME, *,
               version: Optional[int] = None, version_label: str = '',
               timeout: float = defaults.TIMEOUT_SECONDS, tls: bool = False,
               tls_ca_file: str = '', max_message_bytes: int = defaults.MAX_MESSAGE_BYTES,
               rows_per_request: int = defaults.ROWS_PER_REQUEST):
    """version / version_label: ask for that version (or label) instead of the latest.

    tls: connect with TLS, trusting `tls_ca_file` (PEM) or else the system's roots.
    rows_per_request: images (or latents) sent per Predict; more go in several requests.
    """
    if version is not None and version_label:
      raise ValueError('give a version or a version label, not both')
    if rows_per_request < 1:
      raise ValueError(f'rows_per_request must be at least 1, got {rows_per_request}')
    self.rows_per_request = rows_per_request
    self.address = address
    self.model_name = model_name
    self.version = version
    self.version_label = version_label
    self.timeout = timeout
    self._score_key = ''
    self._connect(tls or bool(tls_ca_file), tls_ca_file, max_message_bytes)

  def _connect(self, tls: bool, tls_ca_file: str, max_message_bytes: int):
    options = [('grpc.max_receive_message_length', max_message_bytes),
               ('grpc.max_send_message_length', max_message_bytes)]
    if tls:
      credentials = grpc.ssl_channel_credentials(
          pathlib.Path(tls_ca_file).read_bytes() if tls_ca_file else None)
      self._channel = grpc.secure_channel(self.address, credentials, options=options)
    else:
      self._channel = grpc.insecure_channel(self.address, options=options)
    self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
    self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

  def close(self):
    self._channel.close()

  def __enter__(self) -> 'ServingClient':
    return self

  def __exit__(self, *exc_info):
    self.close()

  @property
  def target(self) -> str:
    """The model as a person would name it: 'vae', 'vae version 3', 'vae version label stable'."""
    if self.version is not None:
      return f'{self.model_name} version {self.version}'
    if self.version_label:
      return f'{self.model_name} version label {self.version_label}'
    return self.model_name

  def _fill_model_spec(self, model_spec, signature_name: str = '', version: Optional[int] = None):
    model_spec.name = self.model_name
    if version is not None or self.version is not None:
      model_spec.version.value = self.version if version is None else version
    elif self.version_label:
      model_spec.version_label = self.version_label
    if signature_name:
      model_spec.signature_name = signature_name

  def _call(self, method, request, what: str):
    try:
      return method(request, timeout=self.timeout)
    except grpc.RpcError as e:
      raise self._explain(e.code(), e.details(), what) from None

  def _explain(self, code: grpc.StatusCode, details: str, what: str) -> status.ServingError:
    messages = {
        grpc.StatusCode.UNAVAILABLE:
            f'cannot reach a model server at {self.address}: is it running, and are the '
            f'address, port and TLS setting right?',
        grpc.StatusCode.DEADLINE_EXCEEDED:
            f'{self.address} did not answer {what} within {self.timeout:g} s; '
            f'raise the timeout for big batches',
        grpc.StatusCode.NOT_FOUND:
            f'model {self.target} is not loaded on {self.address}: check the model name '
            f'and version, or wait for the server to load it',
        grpc.StatusCode.INVALID_ARGUMENT: f'the server rejected the {what} request as bad input',
        grpc.StatusCode.FAILED_PRECONDITION:
            f'model {self.target} cannot answer {what}: is it a model exported with the '
            f'VAE\'s signatures?',
        grpc.StatusCode.RESOURCE_EXHAUSTED:
            f'{what}: a message exceeded the size limit, or the server is overloaded; '
            f'send fewer images per request',
        grpc.StatusCode.UNIMPLEMENTED: f'{self.address} does not implement {what}',
    }
    summary = messages.get(code, f'{what} on {self.address} failed')
    return status.ServingError(code, f'{summary} ({code.name}: {details})')

  def predict(self, signature_name: str, inputs: Mapping[str, np.ndarray],
              output_filter: Sequence[str] = (), version: Optional[int] = None) -> Prediction:
    """Runs one signature in one request; arrays go out as they are, so their dtypes must be
    the signature's. `version` overrides the client's version for this call."""
    request = predict_pb2.PredictRequest()
    self._fill_model_spec(request.model_spec, signature_name, version)
    for alias, array in inputs.items():
      tensors.to_proto(array, request.inputs[alias])
    request.output_filter.extend(output_filter)
    response = self._call(self._predictions.Predict, request, f'Predict {signature_name!r}')
    return Prediction({alias: tensors.to_array(proto) for alias, proto in response.outputs.items()},
                      response.model_spec.version.value, response.model_spec.signature_name)

  def predict_rows(self, signature_name: str, inputs: Mapping[str, np.ndarray],
                   output_filter: Sequence[str] = ()) -> Prediction:
    """Runs a batched signature `rows_per_request` rows at a time and joins the answers.

    A big input in one message would make the server hold all of it and its answer at
    once. Every request after the first asks for the version that answered the first, so
    one answer never mixes two models; if that version is unloaded mid-way (a newer one
    replaced it), the whole input is sent again, to the new one.
    """
    for _ in range(MAX_VERSION_CHANGES + 1):
      prediction = self._predict_rows_of_one_version(signature_name, inputs, output_filter)
      if prediction is not None:
        return prediction
    raise status.ServingError(
        grpc.StatusCode.UNAVAILABLE,
        f'the served version of {self.target} changed {MAX_VERSION_CHANGES + 1} times while '
        f'Predict {signature_name!r} sent its rows; try again once pushes have settled')

  def _predict_rows_of_one_version(self, signature_name: str, inputs: Mapping[str, np.ndarray],
                                   output_filter: Sequence[str]) -> Optional[Prediction]:
    """predict_rows' answer from a single version, or None if that version went away."""
    rows = len(next(iter(inputs.values())))
    step = self.rows_per_request
    parts = [self.predict(signature_name, {a: x[:step] for a, x in inputs.items()}, output_filter)]
    for start in range(step, rows, step):
      try:
        parts.append(self.predict(signature_name,
                                  {a: x[start:start + step] for a, x in inputs.items()},
                                  output_filter, version=parts[0].version))
      except status.ServingError as e:
        if e.code == grpc.StatusCode.NOT_FOUND and self.version is None:
          return None
        raise
    if len(parts) == 1:
      return parts[0]
    return Prediction({alias: np.concatenate([part.outputs[alias] for part in parts])
                       for alias in parts[0].outputs}, parts[0].version, parts[0].signature_name)

  def reconstruct(self, images: np.ndarray) -> Dict[str, np.ndarray]:
    """uint8 [N, 28, 28] -> reconstruction, latent_mean, latent_logvar and elbo (an
    autoencoder's: reconstruction, latent and reconstruction_log_likelihood)."""
    return self.predict_rows('serving_default', {'images': _images(images)}).outputs

  def encode(self, images: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """uint8 [N, 28, 28] -> (latent_mean, latent_logvar), each float32 [N, L]; an autoencoder's
    (latent, None): its code is a point, with no variance."""
    outputs = self.predict_rows('encode', {'images': _images(images)}).outputs
    if 'latent' in outputs:
      return outputs['latent'], None
    return outputs['latent_mean'], outputs['latent_logvar']

  def decode(self, latent: np.ndarray) -> np.ndarray:
    """float32 [N, L] -> images float32 [N, 28, 28] in [0, 1]."""
    latent = np.asarray(latent, np.float32)
    return self.predict_rows('decode', {'latent': latent}).outputs['images']

  def sample(self, count: int, seed: int = RANDOM_SEED) -> np.ndarray:
    """`count` digits from the prior, float32 [count, 28, 28]; a seed >= 0 makes them repeatable."""
    inputs = {'count': np.array(count, np.int32), 'seed': np.array(seed, np.int64)}
    try:
      return self.predict('sample', inputs).outputs['images']
    except status.ServingError as e:
      if e.code != grpc.StatusCode.FAILED_PRECONDITION:
        raise
      raise status.ServingError(
          e.code, f'model {self.target} has no `sample` signature: a plain autoencoder '
                  f'(vaetfx run --model ae) has no prior over its codes to sample from; decode '
                  f'chosen codes instead (vaetfx query decode --latent ...) ({e})') from None

  def score_key(self) -> str:
    """The name of serving_default's per-image score, `elbo` or `reconstruction_log_likelihood`,
    from GetModelMetadata on first use."""
    if not self._score_key:
      _, signature_defs = self.signature_defs()
      default = signature_defs.get('serving_default')
      outputs = default.outputs if default is not None else {}
      self._score_key = features.score_key(outputs) or features.ELBO_KEY
    return self._score_key

  def score(self, images: np.ndarray) -> np.ndarray:
    """Per-image score, float32 [N]: the ELBO (the autoencoder's reconstruction
    log-likelihood); low values are images the model finds unlikely."""
    key = self.score_key()
    return self.predict_rows('serving_default', {'images': _images(images)},
                             output_filter=[key]).outputs[key]

  def signature_defs(self) -> Tuple[int, Dict[str, meta_graph_pb2.SignatureDef]]:
    """(version, SignatureDefs by name) from GetModelMetadata."""
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=['signature_def'])
    self._fill_model_spec(request.model_spec)
    response = self._call(self._predictions.GetModelMetadata, request, 'GetModelMetadata')
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    response.metadata['signature_def'].Unpack(signature_defs)
    return response.model_spec.version.value, dict(signature_defs.signature_def)

  def version_states(self) -> List[get_model_status_pb2.ModelVersionStatus]:
    """GetModelStatus for the chosen version, or for every version the server knows."""
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = self.model_name
    if self.version is not None:
      request.model_spec.version.value = self.version
    response = self._call(self._models.GetModelStatus, request, 'GetModelStatus')
    return list(response.model_version_status)

  def wait_until_available(self, timeout: float) -> List[int]:
    """Polls GetModelStatus until a version is AVAILABLE; returns the available versions."""
    deadline = time.monotonic() + timeout
    while True:
      try:
        available = [s.version for s in self.version_states() if s.state == AVAILABLE]
        if available:
          return available
        error = status.ServingError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f'no version of {self.target} became available on {self.address} within {timeout:g} s')
      except status.ServingError as e:
        if e.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
          raise
        error = e
      if time.monotonic() >= deadline:
        raise error
      time.sleep(0.1)


def _images(images: np.ndarray) -> np.ndarray:
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise ValueError(f'images must be uint8 (pixels 0..255), got {images.dtype}')
  return images


class RestClient(ServingClient):
  """The same client over TF Serving's REST API: `http://host:port` (`https://` or tls for TLS).

  A REST Predict answer names no version and REST has no output filter, so each Predict first
  reads the metadata of the version it will ask for: its number (asked for by number, so the
  requests of one many-row call stay on one version) and its signatures' outputs and dtypes.
  Each call is one HTTP request with `timeout` on each socket operation.
  """

  def _connect(self, tls: bool, tls_ca_file: str, max_message_bytes: int):
    if '://' not in self.address:
      self.address = f'{"https" if tls else "http"}://{self.address}'
    scheme = urllib.parse.urlsplit(self.address).scheme
    if scheme not in ('http', 'https'):
      raise ValueError(f'{self.address}: a REST server is http://host:port or https://host:port')
    self._ssl = (ssl.create_default_context(cafile=tls_ca_file or None) if scheme == 'https'
                 else None)
    self._max_message_bytes = max_message_bytes
    self._signature_defs_by_version: Dict[int, Dict[str, meta_graph_pb2.SignatureDef]] = {}

  def close(self):
    """Nothing stays open between calls."""

  def _model_url(self, version: Optional[int] = None) -> str:
    """TF Serving's /v1/models/<name>[/versions/<v>|/labels/<l>]."""
    url = f'{self.address.rstrip("/")}/v1/models/{urllib.parse.quote(self.model_name, safe="")}'
    version = self.version if version is None else version
    if version is not None:
      return f'{url}/versions/{version}'
    if self.version_label:
      return f'{url}/labels/{urllib.parse.quote(self.version_label, safe="")}'
    return url

  def _request(self, url: str, what: str, document: Optional[dict] = None) -> dict:
    """One GET (or POST of `document`); HTTP errors become the gRPC code behind their status."""
    data = None if document is None else json.dumps(document).encode('utf-8')
    request = urllib.request.Request(url, data, {'Content-Type': 'application/json'})
    try:
      with urllib.request.urlopen(request, timeout=self.timeout, context=self._ssl) as response:
        return self._read(response, what)
    except urllib.error.HTTPError as e:
      code = status.code_from_http(e.code)
      try:
        details = self._read(e, what).get('error', '')
      except (status.ServingError, ValueError):
        details = f'HTTP {e.code} {e.reason}'
      raise self._explain(code, details, what) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
      reason = getattr(e, 'reason', e)  # urllib wraps connection errors and timeouts.
      code = (grpc.StatusCode.DEADLINE_EXCEEDED if isinstance(reason, TimeoutError)
              else grpc.StatusCode.UNAVAILABLE)
      raise self._explain(code, str(reason), what) from None

  def _read(self, response, what: str) -> dict:
    """The answer's JSON, refused past the message limit as gRPC refuses a big message."""
    body = response.read(self._max_message_bytes + 1)
    if len(body) > self._max_message_bytes:
      raise self._explain(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f'the answer is over {self._max_message_bytes} bytes', what)
    return json.loads(body)

  def predict(self, signature_name: str, inputs: Mapping[str, np.ndarray],
              output_filter: Sequence[str] = (), version: Optional[int] = None) -> Prediction:
    """As ServingClient.predict, in TF Serving's columnar JSON (strings in base64)."""
    version, signature_defs = self._signature_defs(version)
    name = signature_name or 'serving_default'
    if name not in signature_defs:  # What the gRPC port answers.
      raise self._explain(grpc.StatusCode.FAILED_PRECONDITION,
                          f'Serving signature key "{name}" not found.', f'Predict {name!r}')
    document = {json_tensors.SIGNATURE_KEY: name, json_tensors.COLUMNS_KEY: {
        alias: json_tensors.to_json(np.asarray(array), True) for alias, array in inputs.items()}}
    answer = self._request(f'{self._model_url(version)}:predict', f'Predict {name!r}', document)
    outputs = signature_defs[name].outputs
    values = answer[json_tensors.COLUMNS_ANSWER_KEY]
    if len(outputs) == 1:
      values = {next(iter(outputs)): values}
    return Prediction({alias: tensors.to_array(json_tensors.to_proto(value, outputs[alias].dtype))
                       for alias, value in values.items()
                       if not output_filter or alias in output_filter}, version, name)

  def signature_defs(self) -> Tuple[int, Dict[str, meta_graph_pb2.SignatureDef]]:
    return self._signature_defs(None)

  def _signature_defs(self, version: Optional[int]):
    """(version, SignatureDefs) from GET .../metadata; a version's are read once."""
    if version is not None and version in self._signature_defs_by_version:
      return version, self._signature_defs_by_version[version]
    answer = self._request(f'{self._model_url(version)}/metadata', 'GetModelMetadata')
    signature_defs = json_format.ParseDict(answer['metadata']['signature_def'],
                                           get_model_metadata_pb2.SignatureDefMap())
    version = int(answer['model_spec']['version'])
    self._signature_defs_by_version[version] = dict(signature_defs.signature_def)
    return version, self._signature_defs_by_version[version]

  def version_states(self) -> List[get_model_status_pb2.ModelVersionStatus]:
    response = json_format.ParseDict(self._request(self._model_url(), 'GetModelStatus'),
                                     get_model_status_pb2.GetModelStatusResponse())
    return list(response.model_version_status)
