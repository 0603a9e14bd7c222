"""ServingInfraValidator's executor: serve the candidate in a child process, query every signature.

What TFX's InfraValidator does with TF Serving in Docker or Kubernetes, done
with `vaetfx serve` (serving/), which speaks TF Serving's gRPC API:
1. build one request per signature from held-out digits (checks.py) and write
   them as TF Serving warmup requests into a copy of the model, the blessing's
   `stamped_model/` (TFX's RequestSpec(make_warmup=True) layout);
2. serve that copy in a separate process, which replays the warmup at load,
   and wait until GetModelStatus says the version is AVAILABLE (the process
   starts before step 1 and imports meanwhile; it loads once the copy is whole);
3. send every request over gRPC and compare each answer with the same request
   run in this process on the SavedModel (checks.answer_failures);
4. bless (INFRA_BLESSED file, `blessed` = 1, `has_model` = 1) or not
   (INFRA_NOT_BLESSED file listing the failures, `blessed` = 0, no model).
Conventions are InfraValidator's (tfx/components/infra_validator/executor.py),
so TFX's Pusher, given this blessing and no model, pushes the warmed-up copy.
The failures are also the custom property `failures` (a JSON list of strings;
a failure may span lines, e.g. the server's output), for the run summary.

A blessing is a verdict on the model, and TFX's cache reuses it for the same
model, so only the model's own failures make one. Steps 2 and 3 are a try,
repeated up to `num_tries` times (TFX's ValidationSpec.num_tries) when the
server, not the model, failed (server_process.ServerFailure): the server could
not start, exited or was killed (SIGKILL, the OOM killer, a crash), its port was
taken, it stopped answering (UNAVAILABLE, DEADLINE_EXCEEDED), or the version was
not AVAILABLE within `max_loading_seconds`. When every try failed so, Do raises
InfraValidationError: the execution fails, the run fails naming the cause, and
a failed execution is never cached, so the next run validates again. A verdict
(NOT blessed) is what the model alone decides: it does not load here, the
server reports that its load or warmup failed (ModelLoadFailure: the copy is
whole on disk and loads are not retried), or a signature answers with an error
or with wrong outputs. A model that crashes the server process every time thus
fails the run instead of being NOT blessed: from outside, that crash cannot be
told from the machine's, and a wrongly cached verdict costs a retrain
(--no-cache) where a failed run costs a re-run.
"""
import json
import os
import tempfile
from typing import Any, Dict, List

import tensorflow as tf
from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import io_utils
from tfx.utils import path_utils

from vaetfx.components.serving_infra_validator import checks
from vaetfx.components.serving_infra_validator import server_process
from vaetfx.components import digits
from vaetfx.serving import status
from vaetfx.shared import features

MODEL_NAME_KEY = 'model_name'
NUM_EXAMPLES_KEY = 'num_examples'
MAX_LOADING_SECONDS_KEY = 'max_loading_seconds'
NUM_TRIES_KEY = 'num_tries'

# InfraValidator's artifact conventions (tfx/components/infra_validator/executor.py).
BLESSED_KEY = 'blessed'
MODEL_FLAG_KEY = 'has_model'
FAILURES_KEY = 'failures'
BLESSED_FILE = 'INFRA_BLESSED'
NOT_BLESSED_FILE = 'INFRA_NOT_BLESSED'

SERVED_VERSION = 1
REQUEST_TIMEOUT_SECONDS = 60.0


class InfraValidationError(RuntimeError):
  """Every try failed for reasons outside the model: no verdict, so no blessing is written."""


def query_every_signature(server: server_process.ServerProcess, saved_model,
                          requests: List[checks.SignatureRequest]) -> List[str]:
  """Each request through gRPC, its answer checked against the in-process one."""
  failures = []
  with server.client(timeout=REQUEST_TIMEOUT_SECONDS) as serving:
    for request in requests:
      try:
        served = serving.predict(request.signature_name, request.inputs).outputs
      except status.ServingError as e:
        server.check_answering(e)
        failures.append(f'{request.signature_name}: {e}')
        continue
      try:
        expected = checks.run_in_process(saved_model, request)
      except tf.errors.OpError as e:
        failures.append(f'{request.signature_name}: fails in process too: {e.message}')
        continue
      failures += checks.answer_failures(request, served, expected)
  return failures


def serve_and_check(server: server_process.ServerProcess, saved_model,
                    requests: List[checks.SignatureRequest],
                    max_loading_seconds: float) -> List[str]:
  """One try: `server`, started over the model's local copy (version SERVED_VERSION), serves it
  and is queried; returns the model's failures. Raises server_process.ServerFailure when the
  server failed instead. The server is stopped either way."""
  with server:
    server.serve()
    try:
      server.wait_until_available(SERVED_VERSION, max_loading_seconds)
    except server_process.ModelLoadFailure as e:
      return [str(e)]
    logging.info('Version %d of %s is AVAILABLE on %s; querying every signature.',
                 SERVED_VERSION, server.model_name, server.address)
    return query_every_signature(server, saved_model, requests)


def serve_and_check_with_retries(num_tries: int, first_server: server_process.ServerProcess,
                                 *args) -> List[str]:
  """serve_and_check(server, *args) until a try ends in a verdict, the first try on
  `first_server`, each later one on a new server over the same folder; InfraValidationError,
  naming the last try's cause in one line, when all `num_tries` failed because of the server."""
  server = first_server
  for attempt in range(1, num_tries + 1):
    try:
      return serve_and_check(server, *args)
    except server_process.ServerFailure as e:
      logging.warning('Infra validation try %d of %d failed for a reason outside the model: %s',
                      attempt, num_tries, e)
      reason = e.reason
    if attempt < num_tries:
      server = server_process.ServerProcess(first_server.model_dir, first_server.model_name)
  raise InfraValidationError(
      f'the validation server failed in all {num_tries} tries for reasons outside the model, '
      f'so there is no verdict and nothing is cached; the last try: {reason}')


def write_warmup_model(model_path: str, stamped_path: str,
                       requests: List[checks.SignatureRequest], model_name: str):
  """A copy of the model with the requests as TF Serving warmup records."""
  io_utils.copy_dir(model_path, stamped_path)
  records = checks.warmup_records(requests, model_name)
  io_utils.write_tfrecord_file(path_utils.warmup_file_path(stamped_path), *records)


def mark_blessed(blessing: types.Artifact):
  logging.info('Model passed infra validation.')
  io_utils.write_string_file(os.path.join(blessing.uri, BLESSED_FILE), '')
  blessing.set_int_custom_property(BLESSED_KEY, 1)
  blessing.set_int_custom_property(MODEL_FLAG_KEY, 1)


def mark_not_blessed(blessing: types.Artifact, failures: List[str]):
  logging.warning('Model failed infra validation:\n%s', '\n'.join(failures))
  io_utils.write_string_file(os.path.join(blessing.uri, NOT_BLESSED_FILE),
                             '\n\n'.join(failures) + '\n')
  blessing.set_int_custom_property(BLESSED_KEY, 0)
  blessing.set_string_custom_property(FAILURES_KEY, json.dumps(failures))


def read_failures(blessing_failures: str) -> List[str]:
  """The failures a not-blessed InfraBlessing's `failures` property lists (a JSON list)."""
  return json.loads(blessing_failures) if blessing_failures else []


class Executor(base_executor.BaseExecutor):
  """Blesses a model that `vaetfx serve` loads, warms up and answers right on every signature."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    model = artifact_utils.get_single_instance(input_dict[standard_component_specs.MODEL_KEY])
    model_path = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
    split_uri = artifact_utils.get_split_uri(
        input_dict[standard_component_specs.EXAMPLES_KEY], features.EVAL_SPLIT)
    blessing = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.BLESSING_KEY])
    model_name = exec_properties[MODEL_NAME_KEY]
    # The server's folder is a local copy in TF Serving's `<base>/<name>/<version>/` layout,
    # wherever the model lives (gs:// included), as in InfraValidator. The first try's server
    # starts now: its start-up (TensorFlow's import, most of it) overlaps the work below, and
    # it serves once the copy is complete.
    with tempfile.TemporaryDirectory(prefix='infra-validation-') as base, \
        server_process.ServerProcess(os.path.join(base, model_name), model_name) as first_server:
      self._validate(model_path, split_uri, blessing, first_server, exec_properties)

  @staticmethod
  def _validate(model_path: str, split_uri: str, blessing: types.Artifact,
                first_server: server_process.ServerProcess, exec_properties: Dict[str, Any]):
    """Loads the model here, builds the requests, writes the warmed-up copy, serves and checks
    it, and marks the blessing."""
    count = exec_properties[NUM_EXAMPLES_KEY]
    records = digits.read_records(split_uri, count)
    images, _ = digits.digits_of(records)
    try:
      saved_model = tf.saved_model.load(model_path)
      latent_dim = int(
          saved_model.signatures['decode'].structured_input_signature[1]['latent'].shape[1])
    except (KeyError, ValueError, OSError, tf.errors.OpError) as e:
      mark_not_blessed(blessing, [f'the model does not load with a decode signature: {e}'])
      return
    requests = checks.build_requests(images, records, latent_dim,
                                     list(saved_model.signatures))
    stamped_path = path_utils.stamped_model_path(blessing.uri)
    write_warmup_model(model_path, stamped_path, requests, first_server.model_name)
    io_utils.copy_dir(stamped_path, os.path.join(first_server.model_dir, str(SERVED_VERSION)))
    try:
      failures = serve_and_check_with_retries(
          exec_properties[NUM_TRIES_KEY], first_server, saved_model, requests,
          exec_properties[MAX_LOADING_SECONDS_KEY])
    except InfraValidationError:
      fileio.rmtree(stamped_path)
      raise
    if failures:
      fileio.rmtree(stamped_path)
      mark_not_blessed(blessing, failures)
    else:
      mark_blessed(blessing)
