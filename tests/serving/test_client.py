"""The client's many-request Predict: big inputs go in slices, all answered by one version."""
import time

import numpy as np
import pytest

from tests.serving.helpers import MODEL_NAME, push, running_server
from vaetfx.components.atomic_pusher import executor as pusher
from vaetfx.serving import client

ROWS_PER_REQUEST = 3


class _RecordingClient(client.ServingClient):
  """A client noting the rows and the version asked for of every Predict it sends; `after_first`
  runs once, after the first request is answered."""

  def __init__(self, *args, after_first=None, **kwargs):
    super().__init__(*args, **kwargs)
    self.requests = []
    self._after_first = after_first

  def predict(self, signature_name, inputs, output_filter=(), version=None):
    self.requests.append((len(next(iter(inputs.values()))), version))
    prediction = super().predict(signature_name, inputs, output_filter, version)
    if self._after_first:
      self._after_first, after_first = None, self._after_first
      after_first()
    return prediction


def test_many_images_go_in_requests_of_the_set_size_to_the_first_answers_version(
    model_server, digits):
  images = np.concatenate([digits, digits[:2]])  # 10 rows: 3 + 3 + 3 + 1.
  with _RecordingClient(model_server.address, MODEL_NAME, timeout=30,
                        rows_per_request=ROWS_PER_REQUEST) as sliced:
    outputs = sliced.reconstruct(images)
    scores = sliced.score(images)
  with client.ServingClient(model_server.address, MODEL_NAME, timeout=30,
                            rows_per_request=len(images)) as whole:
    expected = whole.reconstruct(images)
  assert sliced.requests[:4] == [(3, None), (3, 1), (3, 1), (1, 1)]
  for alias, array in expected.items():
    assert outputs[alias].shape == array.shape
    np.testing.assert_allclose(outputs[alias], array, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(scores, expected['elbo'], rtol=1e-5)


def test_a_version_replaced_mid_way_sends_everything_again_to_the_new_one(
    exported_model_dir, tmp_path, digits):
  serving_dir = str(tmp_path)
  push(exported_model_dir, serving_dir, 1)
  with running_server(serving_dir, poll_seconds=0.05) as model_server:

    def replace_version_1():
      push(exported_model_dir, serving_dir, 2)
      pusher.remove_version(f'{serving_dir}/{MODEL_NAME}', 1)
      with client.ServingClient(model_server.address, MODEL_NAME, version=1) as old:
        deadline = time.monotonic() + 30
        while any(s.state == client.AVAILABLE for s in old.version_states()):
          assert time.monotonic() < deadline, 'version 1 was never unloaded'
          time.sleep(0.05)

    with _RecordingClient(model_server.address, MODEL_NAME, timeout=30, rows_per_request=4,
                          after_first=replace_version_1) as serving:
      prediction = serving.predict_rows('serving_default', {'images': digits})
  assert prediction.version == 2
  assert serving.requests == [(4, None), (4, 1), (4, None), (4, 2)]
  assert prediction.outputs['elbo'].shape == (len(digits),)


def test_rows_per_request_must_be_positive():
  with pytest.raises(ValueError, match='rows_per_request must be at least 1, got 0'):
    client.ServingClient('127.0.0.1:1', rows_per_request=0)
