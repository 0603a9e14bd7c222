"""Server-side batching: TF Serving's parameters file, merging, padding, limits; and over gRPC."""
import os
import threading
import time
from concurrent import futures

import grpc
import numpy as np
import pytest

from tests.serving.helpers import MODEL_NAME, running_server
from vaetfx.serving import batching, client, status

DEPLOY_FILE = os.path.join(os.path.dirname(batching.__file__), 'deploy', 'batching_parameters.txt')


def test_reads_tf_serving_parameters_file():
  with open(DEPLOY_FILE, encoding='utf-8') as f:
    parameters = batching.BatchingParameters.from_text(f.read())
  assert parameters == batching.BatchingParameters(
      max_batch_size=256, batch_timeout_micros=2000, max_enqueued_batches=64,
      num_batch_threads=2)
  text = ('max_batch_size { value: 8 }\nallowed_batch_sizes: 2\nallowed_batch_sizes: 8\n'
          'thread_pool_name { value: "x" }  # ignored\npad_variable_length_inputs: true\n')
  assert batching.BatchingParameters.from_text(text).allowed_batch_sizes == (2, 8)
  with pytest.raises(ValueError, match='must increase and end with max_batch_size'):
    batching.BatchingParameters(max_batch_size=8, allowed_batch_sizes=(2, 4))


class _Recorder:
  """A model that doubles `x` and records the batch sizes it was called with."""

  def __init__(self, release: threading.Event = None):
    self.sizes = []
    self.started = threading.Event()
    self._release = release

  def __call__(self, inputs):
    self.started.set()
    if self._release:
      self._release.wait()
    self.sizes.append(len(inputs['x']))
    return {'y': inputs['x'] * 2}


def _run_concurrently(scheduler, model, sizes):
  with futures.ThreadPoolExecutor(len(sizes)) as pool:
    calls = [pool.submit(scheduler.run, 'key', model, {'x': np.full((size, 3), i, np.float32)})
             for i, size in enumerate(sizes)]
    return [call.result() for call in calls]


def test_concurrent_requests_share_a_batch_and_get_their_own_rows():
  scheduler = batching.BatchScheduler(batching.BatchingParameters(
      max_batch_size=16, batch_timeout_micros=300_000, num_batch_threads=1,
      allowed_batch_sizes=(4, 16)))
  model = _Recorder()
  try:
    results = _run_concurrently(scheduler, model, [1, 2, 3, 1])
  finally:
    scheduler.stop()
  for i, (result, size) in enumerate(zip(results, [1, 2, 3, 1])):
    np.testing.assert_array_equal(result['y'], np.full((size, 3), 2 * i))
  assert model.sizes == [16], 'one batch of 7 rows padded to the allowed size 16'


def test_full_batch_runs_without_waiting_for_the_timeout():
  scheduler = batching.BatchScheduler(batching.BatchingParameters(
      max_batch_size=4, batch_timeout_micros=60_000_000, num_batch_threads=1))
  model = _Recorder()
  try:
    _run_concurrently(scheduler, model, [2, 2, 4])
  finally:
    scheduler.stop()
  assert sorted(model.sizes) == [4, 4]


def test_limits_give_tf_serving_codes():
  release = threading.Event()
  scheduler = batching.BatchScheduler(batching.BatchingParameters(
      max_batch_size=2, max_enqueued_batches=1, num_batch_threads=1))
  model = _Recorder(release)
  try:
    with pytest.raises(status.ServingError, match='Task size 3 is larger than maximum input '
                                                  'batch size 2') as raised:
      scheduler.run('key', model, {'x': np.zeros((3, 1))})
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with futures.ThreadPoolExecutor(2) as pool:
      running = pool.submit(scheduler.run, 'key', model, {'x': np.zeros((2, 1))})
      assert model.started.wait(10)
      queued = pool.submit(scheduler.run, 'key', model, {'x': np.zeros((2, 1))})
      while scheduler.queued_batches < 1:
        time.sleep(0.01)
      with pytest.raises(status.ServingError, match='queue .* is full') as raised:
        scheduler.run('key', model, {'x': np.zeros((2, 1))})
      assert raised.value.code == grpc.StatusCode.UNAVAILABLE
      release.set()
      assert len(running.result()['y']) == len(queued.result()['y']) == 2
  finally:
    release.set()
    scheduler.stop()


def test_batching_server_answers_concurrent_clients_like_the_model(serving_dir, reference,
                                                                   digits):
  """Batch shapes differ from the request's, so equality is up to float rounding."""
  parameters = batching.BatchingParameters(
      max_batch_size=16, batch_timeout_micros=20_000, num_batch_threads=2)
  expected = reference.signatures['serving_default'](images=digits)
  with running_server(serving_dir, batching_parameters=parameters) as model_server:
    with client.ServingClient(model_server.address, MODEL_NAME, timeout=30) as serving:
      with futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: serving.reconstruct(digits[i:i + 1]), range(8)))
      assert serving.sample(3, 1).shape == (3, 28, 28), 'scalar inputs run unbatched'
  for name in ('reconstruction', 'latent_mean', 'elbo'):
    np.testing.assert_allclose(np.concatenate([a[name] for a in answers]),
                               expected[name].numpy(), rtol=1e-4, atol=1e-3, err_msg=name)
