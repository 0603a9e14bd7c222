"""Server-side batching: TF Serving's parameters file, merging, padding, limits; and over gRPC."""
import os
import threading
import time
from concurrent import futures

import grpc
import numpy as np
import pytest

from tests.serving.helpers import MODEL_NAME, running_server
from vaetfx.serving import batching, client, limits, status
from vaetfx.serving import servable as servable_lib

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
  """A model that doubles `x` and records the batches it was called with, and their sizes."""

  def __init__(self, release: threading.Event = None):
    self.sizes = []
    self.inputs = []
    self.started = threading.Event()
    self._release = release

  def __call__(self, inputs):
    self.started.set()
    if self._release:
      self._release.wait()
    self.sizes.append(len(inputs['x']))
    self.inputs.append(inputs['x'].copy())
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


class _Picky(_Recorder):
  """A model that refuses any batch holding a negative value, as TensorFlow refuses a batch
  holding one example it cannot parse."""

  def __call__(self, inputs):
    if (inputs['x'] < 0).any():
      raise status.invalid_argument(f'bad rows {inputs["x"][:, 0].tolist()}')
    return super().__call__(inputs)


def test_a_request_that_fails_a_merged_batch_fails_alone():
  """Three requests share a batch; the bad one breaks it; each is run again alone, so the two
  good ones get their own rows and the bad one gets an error quoting only its own rows."""
  scheduler = batching.BatchScheduler(batching.BatchingParameters(
      max_batch_size=4, batch_timeout_micros=10_000_000, num_batch_threads=1))
  model = _Picky()
  rows = [np.full((1, 3), 1.0, np.float32), np.full((2, 3), -1.0, np.float32),
          np.full((1, 3), 3.0, np.float32)]
  try:
    with futures.ThreadPoolExecutor(3) as pool:
      calls = [pool.submit(scheduler.run, 'key', model, {'x': x}) for x in rows]
      first, bad, last = (call.exception(timeout=30) or call.result() for call in calls)
  finally:
    scheduler.stop()
  np.testing.assert_array_equal(first['y'], np.full((1, 3), 2.0))
  np.testing.assert_array_equal(last['y'], np.full((1, 3), 6.0))
  assert isinstance(bad, status.ServingError) and str(bad) == 'bad rows [-1.0, -1.0]'
  assert model.sizes == [1, 1], 'the merged batch failed; the good requests ran alone'


def test_full_batch_runs_without_waiting_for_the_timeout():
  scheduler = batching.BatchScheduler(batching.BatchingParameters(
      max_batch_size=4, batch_timeout_micros=60_000_000, num_batch_threads=1))
  model = _Recorder()
  try:
    _run_concurrently(scheduler, model, [2, 2, 4])
  finally:
    scheduler.stop()
  assert sorted(model.sizes) == [4, 4]


class _Concurrency(_Recorder):
  """Takes `seconds` per batch and records the most batches running at once."""

  def __init__(self, seconds: float):
    super().__init__()
    self.most_at_once = 0
    self._running = 0
    self._lock = threading.Lock()
    self._seconds = seconds

  def __call__(self, inputs):
    with self._lock:
      self._running += 1
      self.most_at_once = max(self.most_at_once, self._running)
    time.sleep(self._seconds)
    try:
      return super().__call__(inputs)
    finally:
      with self._lock:
        self._running -= 1


@pytest.mark.parametrize('threads', [1, 2])
def test_runs_at_once_never_exceed_num_batch_threads(threads):
  """Never more than num_batch_threads batches run at once (`vaetfx serve` runs one, see
  docs/serving.md), and every request gets its own rows."""
  scheduler = batching.BatchScheduler(batching.BatchingParameters(
      max_batch_size=4, max_enqueued_batches=64, num_batch_threads=threads))
  model = _Concurrency(seconds=0.005)
  sizes = [1, 2, 1, 3, 1, 1, 2, 1] * 4
  try:
    results = _run_concurrently(scheduler, model, sizes)
  finally:
    scheduler.stop()
  for i, (result, size) in enumerate(zip(results, sizes)):
    np.testing.assert_array_equal(result['y'], np.full((size, 3), 2 * i))
  assert model.most_at_once <= threads
  assert sum(model.sizes) == sum(sizes) and max(model.sizes) <= 4
  assert len(model.sizes) < len(sizes), 'some requests waited and shared a batch'


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


def _blocked_scheduler(parameters):
  """A scheduler whose only batch thread is busy until the returned event is set."""
  scheduler = batching.BatchScheduler(parameters)
  release = threading.Event()
  blocker = _Recorder(release)
  pool = futures.ThreadPoolExecutor(4)
  pool.submit(scheduler.run, 'blocker', blocker, {'x': np.zeros((1, 3), np.float32)})
  assert blocker.started.wait(10)
  return scheduler, release, pool


def _wait_for_queued(scheduler, batches):
  deadline = time.monotonic() + 10
  while scheduler.queued_batches < batches:
    assert time.monotonic() < deadline, 'the task never reached the queue'
    time.sleep(0.01)


def test_a_first_task_without_rows_pads_with_the_first_row_of_the_batch():
  scheduler, release, pool = _blocked_scheduler(batching.BatchingParameters(
      max_batch_size=4, num_batch_threads=1, allowed_batch_sizes=(4,)))
  model = _Recorder()
  try:
    tasks = [pool.submit(scheduler.run, 'key', model, {'x': np.zeros((0, 3), np.float32)})]
    _wait_for_queued(scheduler, 1)
    tasks.append(pool.submit(scheduler.run, 'key', model, {'x': np.full((2, 3), 5, np.float32)}))
    time.sleep(0.1)  # Both tasks in one queued batch, behind the busy thread.
    assert scheduler.queued_batches == 1
    release.set()
    empty, rows = (task.result(timeout=30)['y'] for task in tasks)
  finally:
    release.set()
    scheduler.stop()
    pool.shutdown()
  assert model.sizes == [4], 'two rows padded to the allowed size 4'
  np.testing.assert_array_equal(model.inputs[0], np.full((4, 3), 5))
  assert empty.shape == (0, 3)
  np.testing.assert_array_equal(rows, np.full((2, 3), 10))


def test_requests_queued_or_arriving_while_stopping_get_unavailable():
  scheduler, release, pool = _blocked_scheduler(batching.BatchingParameters(
      max_batch_size=4, num_batch_threads=1))
  try:
    queued = pool.submit(scheduler.run, 'key', _Recorder(), {'x': np.zeros((1, 3), np.float32)})
    _wait_for_queued(scheduler, 1)
    stopping = pool.submit(scheduler.stop)
    time.sleep(0.1)  # stop() now waits for the busy thread.
    with pytest.raises(status.ServingError, match='The server is shutting down') as raised:
      pool.submit(scheduler.run, 'key', _Recorder(),
                  {'x': np.zeros((1, 3), np.float32)}).result(timeout=10)
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    release.set()
    stopping.result(timeout=30)
    with pytest.raises(status.ServingError, match='The server is shutting down') as raised:
      queued.result(timeout=10)
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
  finally:
    release.set()
    pool.shutdown()


def test_batching_server_merges_concurrent_clients_and_answers_like_the_model(
    serving_dir, reference, digits, monkeypatch):
  """The batch closes when full (8 rows), long before its timeout: one model call of 8 rows.
  Batch shapes differ from the request's, so equality is up to float rounding."""
  calls = []
  run = servable_lib.Signature.run

  def recorded(self, inputs, outputs, slice_rows):
    if self.name == 'serving_default':
      calls.append(len(inputs['images']))
    return run(self, inputs, outputs, slice_rows)

  monkeypatch.setattr(servable_lib.Signature, 'run', recorded)
  parameters = batching.BatchingParameters(
      max_batch_size=8, batch_timeout_micros=10_000_000, num_batch_threads=2)
  expected = reference.signatures['serving_default'](images=digits)
  with running_server(serving_dir, batching_parameters=parameters) as model_server:
    with client.ServingClient(model_server.address, MODEL_NAME, timeout=30) as serving:
      with futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: serving.reconstruct(digits[i:i + 1]), range(8)))
      assert serving.sample(3, 1).shape == (3, 28, 28), 'scalar inputs run unbatched'
  assert calls == [8], 'eight concurrent requests, one model call'
  for name in ('reconstruction', 'latent_mean', 'elbo'):
    np.testing.assert_allclose(np.concatenate([a[name] for a in answers]),
                               expected[name].numpy(), rtol=1e-4, atol=1e-3, err_msg=name)


def test_a_request_bigger_than_a_slice_runs_on_its_own_and_small_ones_still_batch(
    serving_dir, reference, digits, monkeypatch):
  """A batch of 3 rows waits 100 s for its timeout here; a request of 3 rows, more than a
  slice (2), must not: it runs in slices on its own thread. A bigger one than max_batch_size
  is still refused as TF Serving refuses it."""
  batched = []
  run = batching.BatchScheduler.run

  def recorded(self, key, call, inputs):
    batched.append(len(inputs['images']))
    return run(self, key, call, inputs)

  monkeypatch.setattr(batching.BatchScheduler, 'run', recorded)
  parameters = batching.BatchingParameters(
      max_batch_size=4, batch_timeout_micros=100_000_000, num_batch_threads=1)
  with running_server(serving_dir, batching_parameters=parameters,
                      limits=limits.Limits(slice_rows=2)) as model_server:
    with client.ServingClient(model_server.address, MODEL_NAME, timeout=30) as serving:
      answer = serving.predict('serving_default', {'images': digits[:3]}).outputs
      with futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: serving.predict('serving_default', {'images': digits[i:i + 1]}),
                      range(4)))
      with pytest.raises(status.ServingError, match='Task size 5 is larger than maximum input '
                                                    'batch size 4') as raised:
        serving.predict('serving_default', {'images': digits[:5]})
  assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
  assert batched == [1, 1, 1, 1, 5], 'the 3-row request ran unbatched, the small ones batched'
  expected = reference.signatures['serving_default'](images=digits[:3])
  np.testing.assert_allclose(answer['elbo'], expected['elbo'].numpy(), rtol=1e-4, atol=1e-3)


def test_a_client_sending_bad_examples_does_not_fail_its_batch_neighbours(
    serving_dir, reference, examples):
  """Was: every client of the batch got `Could not parse example input, value: <the bad
  client's bytes>`. Now the batch runs again request by request: only the bad one fails."""
  parameters = batching.BatchingParameters(
      max_batch_size=3, batch_timeout_micros=10_000_000, num_batch_threads=1)
  sent = [examples[:1], np.array([b'not an example'], dtype=object), examples[1:2]]
  with running_server(serving_dir, batching_parameters=parameters) as model_server:
    with client.ServingClient(model_server.address, MODEL_NAME, timeout=30) as serving:
      with futures.ThreadPoolExecutor(3) as pool:
        calls = [pool.submit(serving.predict, 'from_examples', {'examples': rows})
                 for rows in sent]
        first, bad, last = (call.exception(timeout=60) or call.result() for call in calls)
  assert isinstance(bad, status.ServingError) and bad.code == grpc.StatusCode.INVALID_ARGUMENT
  assert 'not an example' in str(bad)
  expected = reference.signatures['from_examples'](examples=examples[:2])
  for index, answer in enumerate((first, last)):
    np.testing.assert_allclose(answer.outputs['elbo'], expected['elbo'].numpy()[index:index + 1],
                               rtol=1e-4, atol=1e-3)
