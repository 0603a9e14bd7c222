"""Versions pushed and removed while clients query: picked up and dropped, no request failing."""
import os
import shutil
import threading
import time

import grpc
import pytest

from tests.serving.helpers import MODEL_NAME, push, running_server
from vaetfx.components.atomic_pusher import executor as pusher
from vaetfx.serving import client, status

CLIENTS = 4


class _Traffic:
  """Client threads sending Predict without a version, noting the version of every answer."""

  def __init__(self, serving: client.ServingClient, images):
    self._serving = serving
    self._images = images
    self._stop = threading.Event()
    self.last_versions = [None] * CLIENTS
    self.answers = [0] * CLIENTS
    self.failures = []
    self._threads = [threading.Thread(target=self._query, args=(i,)) for i in range(CLIENTS)]

  def _query(self, index: int):
    while not self._stop.is_set():
      try:
        self.last_versions[index] = self._serving.predict(
            'serving_default', {'images': self._images}).version
        self.answers[index] += 1
      except status.ServingError as e:
        self.failures.append(e)

  def __enter__(self):
    for thread in self._threads:
      thread.start()
    return self

  def __exit__(self, *exc_info):
    self._stop.set()
    for thread in self._threads:
      thread.join()

  def wait_until_all_see(self, version: int, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while set(self.last_versions) != {version}:
      assert time.monotonic() < deadline, f'clients still see {self.last_versions}'
      time.sleep(0.05)


def test_push_and_removal_while_querying_fail_no_request(exported_model_dir, tmp_path, digits):
  serving_dir = str(tmp_path)
  push(exported_model_dir, serving_dir, 1)
  with running_server(serving_dir, poll_seconds=0.1) as model_server:
    with client.ServingClient(model_server.address, MODEL_NAME, timeout=30) as serving:
      with _Traffic(serving, digits[:2]) as traffic:
        traffic.wait_until_all_see(1)
        push(exported_model_dir, serving_dir, 2)
        traffic.wait_until_all_see(2)
        pusher.remove_version(os.path.join(serving_dir, MODEL_NAME), 2)
        traffic.wait_until_all_see(1)
      assert traffic.failures == []
      assert min(traffic.answers) > 10
      states = {s.version: s.state for s in serving.version_states()}
      assert states == {1: client.AVAILABLE, 2: client.State.END}
    with client.ServingClient(model_server.address, MODEL_NAME, version=2) as removed:
      with pytest.raises(status.ServingError) as raised:
        removed.score(digits)
      assert raised.value.code == grpc.StatusCode.NOT_FOUND


def test_a_version_copied_in_slowly_loads_on_a_retry(exported_model_dir, serving_dir, digits,
                                                     caplog):
  """The issue's case, time scaled down: saved_model.pb first, its variables 1.5 s later (a
  plain `cp -r`, not the Pusher's rename). The first load fails; a retry half a second later
  finds the version whole. Version 1 serves meanwhile."""
  version_dir = os.path.join(serving_dir, MODEL_NAME, '3')
  with running_server(serving_dir, poll_seconds=0.1, max_load_retries=5,
                      load_retry_seconds=0.5) as model_server:
    with client.ServingClient(model_server.address, MODEL_NAME, timeout=30) as serving:
      os.makedirs(version_dir)
      for name in ('saved_model.pb', 'fingerprint.pb'):
        shutil.copy(os.path.join(exported_model_dir, name), version_dir)
      deadline = time.monotonic() + 1.5
      while time.monotonic() < deadline:
        assert serving.predict('serving_default', {'images': digits}).version == 1
        time.sleep(0.1)
      states = {s.version: s.state for s in serving.version_states()}
      assert states[3] == client.State.LOADING, 'failed, and retrying'
      for name in ('variables', 'assets'):
        shutil.copytree(os.path.join(exported_model_dir, name), os.path.join(version_dir, name))
      deadline = time.monotonic() + 60
      while serving.predict('serving_default', {'images': digits}).version != 3:
        assert time.monotonic() < deadline, 'version 3 never loaded'
        time.sleep(0.1)
  shutil.rmtree(version_dir)
  failures = [r.getMessage() for r in caplog.records if 'failed (attempt' in r.getMessage()]
  assert failures and len(failures) <= 4, failures  # 1.5 s at 0.5 s apart, not one per poll.
