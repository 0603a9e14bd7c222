"""SavedModel warmup as TF Serving does it: replay the model's recorded requests while loading.

TF Serving reads `assets.extra/tf_serving_warmup_requests` (a TFRecord file of
PredictionLog protos; at most 1,000) from a version's folder and runs each
request before it marks the version AVAILABLE, so the first real request does
not pay for lazy initialization. A request that fails fails the load. TFX's
InfraValidator writes the file (RequestSpec(make_warmup=True)); so does this
project's ServingInfraValidator. Only Predict logs are replayed here: the local
server answers Predict only, and any other log type fails the load, as an
unsupported one does in TF Serving.
"""
import os
from typing import List, Optional

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from vaetfx.serving import limits as limits_lib
from vaetfx.serving import servable as servable_lib

WARMUP_FILE = os.path.join('assets.extra', 'tf_serving_warmup_requests')
MAX_RECORDS = 1000  # TF Serving's kMaxNumRecords (servables/tensorflow/saved_model_warmup_util.cc).


class WarmupError(ValueError):
  """The warmup file cannot be read or one of its requests failed: the version does not load."""


def warmup_path(saved_model_dir: str) -> str:
  return os.path.join(saved_model_dir, WARMUP_FILE)


def read_warmup_requests(saved_model_dir: str) -> List[predict_pb2.PredictRequest]:
  """The Predict requests recorded in the model's warmup file; none if it has no file."""
  path = warmup_path(saved_model_dir)
  if not tf.io.gfile.exists(path):
    return []
  requests = []
  for record in tf.data.TFRecordDataset(path):
    if len(requests) == MAX_RECORDS:
      raise WarmupError(f'Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}')
    log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
    log_type = log.WhichOneof('log_type')
    if log_type != 'predict_log':
      raise WarmupError(f'{path}: warmup record {len(requests)} is a {log_type}; '
                        'only predict_log is supported')
    requests.append(log.predict_log.request)
  return requests


def replay(servable: servable_lib.Servable, requests: List[predict_pb2.PredictRequest],
           limits: limits_lib.Limits, budget: limits_lib.Budget):
  """Runs every request on `servable`, admitted as Predict admits it: within the server's
  `limits`, holding its price in the server's `budget` (a version loading while others serve
  takes memory from the same pool); the first failure raises."""
  for index, request in enumerate(requests):
    try:
      signature = servable.signature(request.model_spec.signature_name)
      outputs, price = signature.admit(request.inputs, list(request.output_filter), limits,
                                       request.ByteSize())
      release = budget.hold(price.in_memory, timeout=None)
      try:
        signature.run(signature.decode(request.inputs), outputs, limits.slice_rows)
      finally:
        release()
    except Exception as e:  # pylint: disable=broad-except
      name = request.model_spec.signature_name or servable_lib.DEFAULT_SIGNATURE
      raise WarmupError(f'warmup request {index} ({name}) failed on {servable.path}: {e}') from e


def load_warmed_up(name: str, version: int, path: str,
                   limits: limits_lib.Limits = limits_lib.Limits(),
                   budget: Optional[limits_lib.Budget] = None) -> servable_lib.Servable:
  """Loads a version and replays its warmup requests: what TF Serving's loader does. The
  server passes its own limits and budget; without them, the defaults' and a budget of its own."""
  servable = servable_lib.Servable(name, version, path)
  replay(servable, read_warmup_requests(path), limits, budget or limits_lib.Budget())
  return servable
