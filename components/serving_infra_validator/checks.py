"""The requests the validator sends, and what every answer must be.

One Predict request per signature of models/export.py (the autoencoder has no
`sample`), with real held-out digits where the signature takes images or
tf.Examples. The expected answer is
the same request run in this process on the SavedModel the Trainer exported
(its `elbo` is the Trainer's computation, models/vae.fixed_noise_elbo), so a
served answer must have the same outputs, shapes and dtypes, finite values, and
the same numbers up to float rounding: a server that loads another version,
drops the Transform graph, mangles tensors or batches wrongly fails here.
"""
import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from vaetfx.serving import tensors

SAMPLE_SEED = 0
# Served and in-process answers come from one graph on one machine; they differ
# by float rounding at most (batch-size dependent kernels).
RTOL = 1e-4
ATOL = 1e-3


@dataclasses.dataclass(frozen=True)
class SignatureRequest:
  signature_name: str
  inputs: Mapping[str, np.ndarray]

  def to_proto(self, model_name: str) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = self.signature_name
    for alias, array in self.inputs.items():
      tensors.to_proto(array, request.inputs[alias])
    return request


def build_requests(images: np.ndarray, serialized_examples: List[bytes], latent_dim: int,
                   signature_names: Optional[Sequence[str]] = None) -> List[SignatureRequest]:
  """A request per signature: held-out uint8 digits [N, 28, 28], their tf.Examples as ExampleGen
  wrote them, N seeded prior draws for `decode`, and N seeded samples.

  signature_names: the model's signatures, when it lacks some of the VAE's (the
  plain autoencoder has no `sample`); only those get a request.
  """
  count = len(images)
  latent = np.random.default_rng(SAMPLE_SEED).standard_normal((count, latent_dim), np.float32)
  requests = [
      SignatureRequest('serving_default', {'images': images}),
      SignatureRequest('encode', {'images': images}),
      SignatureRequest('decode', {'latent': latent}),
      SignatureRequest('sample', {'count': np.array(count, np.int32),
                                  'seed': np.array(SAMPLE_SEED, np.int64)}),
      SignatureRequest('from_examples', {'examples': np.array(serialized_examples, dtype=object)}),
  ]
  if signature_names is None:
    return requests
  return [request for request in requests if request.signature_name in signature_names]


def warmup_records(requests: List[SignatureRequest],
                   model_name: str) -> List[prediction_log_pb2.PredictionLog]:
  """PredictionLogs, the records of TF Serving's assets.extra/tf_serving_warmup_requests."""
  return [prediction_log_pb2.PredictionLog(
      predict_log=prediction_log_pb2.PredictLog(request=request.to_proto(model_name)))
          for request in requests]


def run_in_process(saved_model, request: SignatureRequest) -> Dict[str, np.ndarray]:
  """The request on the loaded SavedModel in this process: the expected answer."""
  function = saved_model.signatures[request.signature_name]
  inputs = {alias: tf.constant(array) for alias, array in request.inputs.items()}
  return {alias: value.numpy() for alias, value in function(**inputs).items()}


def batch_size(request: SignatureRequest) -> int:
  """Rows every output must have: the images, examples or latents sent, or `count`."""
  if request.signature_name == 'sample':
    return int(request.inputs['count'])
  return len(next(iter(request.inputs.values())))


def answer_failures(request: SignatureRequest, served: Mapping[str, np.ndarray],
                    expected: Mapping[str, np.ndarray]) -> List[str]:
  """What is wrong with a served answer, one line each; empty when it is right."""
  name = request.signature_name
  if set(served) != set(expected):
    return [f'{name}: outputs {sorted(served)}, expected {sorted(expected)}']
  failures = []
  rows = batch_size(request)
  for alias in sorted(expected):
    got, want = served[alias], expected[alias]
    what = f'{name}.{alias}'
    if got.dtype != want.dtype:
      failures.append(f'{what}: dtype {got.dtype}, expected {want.dtype}')
    elif got.shape != want.shape or got.shape[:1] != (rows,):
      failures.append(f'{what}: shape {got.shape}, expected {want.shape} with {rows} rows')
    elif np.issubdtype(got.dtype, np.floating) and not np.all(np.isfinite(got)):
      failures.append(f'{what}: {int(np.sum(~np.isfinite(got)))} of {got.size} values are '
                      'not finite')
    elif not np.allclose(got, want, rtol=RTOL, atol=ATOL):
      difference = float(np.max(np.abs(got.astype(np.float64) - want)))
      failures.append(f'{what}: differs from the model run in process by up to {difference:.4g}')
  return failures
