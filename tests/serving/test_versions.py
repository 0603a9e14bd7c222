"""The version manager on its own: TF Serving's policies, availability preservation, labels."""
import os
import shutil
import time

import grpc
import pytest
from tensorflow_serving.apis import model_pb2

from vaetfx.serving import status, versions

State = versions.State


class _FakeServable:

  def __init__(self, name, version, path):
    if os.path.exists(os.path.join(path, 'broken')):
      raise ValueError(f'{path} is broken')
    self.name, self.version, self.path = name, version, path


def _manager(base_path, **kwargs):
  return versions.ModelManager('vae', str(base_path), poll_seconds=0, loader=_FakeServable,
                               **kwargs)


def _make(base_path, *names):
  for name in names:
    os.makedirs(os.path.join(base_path, str(name)))


@pytest.mark.parametrize('text, on_disk, aspired', [
    ('latest', [1, 5, 3], {5}),
    ('latest:2', [1, 5, 3], {3, 5}),
    ('all', [1, 5, 3], {1, 3, 5}),
    ('specific:1,3,9', [1, 5, 3], {1, 3}),
])
def test_policy_aspires_as_tf_serving(text, on_disk, aspired):
  assert versions.VersionPolicy.parse(text).aspired(on_disk) == aspired


@pytest.mark.parametrize('text', ['newest', 'latest:0', 'latest:x', 'all:2', 'specific:'])
def test_policy_rejects_unknown_text(text):
  with pytest.raises(ValueError):
    versions.VersionPolicy.parse(text)


def test_latest_version_replaces_the_old_one_and_removal_falls_back(tmp_path):
  _make(tmp_path, 1)
  manager = _manager(tmp_path)
  manager.poll()
  assert manager.available_versions == [1]
  _make(tmp_path, 2)
  manager.poll()
  assert manager.available_versions == [2]
  assert manager.servable(None).version == 2 and manager.servable(1) is None
  os.rmdir(tmp_path / '2')
  manager.poll()
  assert manager.available_versions == [1]
  assert {v: s.state for v, s in manager.statuses().items()} == {1: State.AVAILABLE,
                                                                2: State.END}


def test_a_failing_version_is_retried_then_given_up_with_a_log_line(tmp_path, caplog):
  _make(tmp_path, 1, 2)
  (tmp_path / '2' / 'broken').write_text('')
  manager = _manager(tmp_path, retry=versions.RetryPolicy(max_retries=1, interval_seconds=0.2))
  manager.poll()  # 2 fails, and 1 is not aspired under `latest`: nothing serves yet.
  assert manager.available_versions == []
  manager.poll()
  record = manager.statuses(2)[2]
  assert (record.state, record.failed_loads) == (State.LOADING, 1), 'no retry before the interval'
  time.sleep(0.25)
  manager.poll()
  record = manager.statuses(2)[2]
  assert record.state == State.END and record.failed_loads == 2
  assert record.error.code == grpc.StatusCode.UNKNOWN and 'broken' in record.error.message
  assert 'Giving up on servable version vae 2 after 2 failed loads' in caplog.text
  os.remove(tmp_path / '2' / 'broken')
  time.sleep(0.25)
  manager.poll()
  assert manager.available_versions == [], 'no more attempts once they are used up'


def test_a_version_that_becomes_loadable_loads_on_a_retry(tmp_path):
  _make(tmp_path, 1)
  (tmp_path / '1' / 'broken').write_text('')
  manager = _manager(tmp_path, retry=versions.RetryPolicy(max_retries=5, interval_seconds=0.05))
  manager.poll()
  os.remove(tmp_path / '1' / 'broken')
  time.sleep(0.06)
  manager.poll()
  assert manager.available_versions == [1]
  assert manager.statuses(1)[1].state == State.AVAILABLE


def test_tf_serving_retry_defaults():
  assert versions.RetryPolicy() == versions.RetryPolicy(max_retries=5, interval_seconds=60)


def test_old_version_serves_until_new_one_is_available(tmp_path):
  _make(tmp_path, 1)
  manager = _manager(tmp_path)
  manager.poll()
  _make(tmp_path, 2)
  (tmp_path / '2' / 'broken').write_text('')
  manager.poll()
  assert manager.available_versions == [1]
  assert manager.servable(None).version == 1


def test_all_policy_serves_every_version(tmp_path):
  _make(tmp_path, 1, 2, 3)
  manager = _manager(tmp_path, policy=versions.VersionPolicy(all=True))
  manager.poll()
  assert manager.available_versions == [1, 2, 3]
  assert manager.servable(None).version == 3


def test_missing_base_path_changes_nothing(tmp_path):
  _make(tmp_path, 1)
  manager = _manager(tmp_path)
  manager.poll()
  shutil.rmtree(tmp_path)
  manager.poll()
  assert manager.available_versions == [1]


def _spec(**fields):
  spec = model_pb2.ModelSpec(name=fields.pop('name', 'vae'))
  if 'version' in fields:
    spec.version.value = fields.pop('version')
  if 'label' in fields:
    spec.version_label = fields.pop('label')
  return spec


def test_requested_version_resolves_as_server_core():
  labels = {'stable': 4}
  assert versions.requested_version(_spec(), labels) is None
  assert versions.requested_version(_spec(version=0), labels) == 0
  assert versions.requested_version(_spec(label='stable'), labels) == 4
  for spec in (_spec(name=''), _spec(label='canary')):
    with pytest.raises(status.ServingError) as raised:
      versions.requested_version(spec, labels)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
  assert versions.describe_request('vae', None) == 'Latest(vae)'
  assert versions.describe_request('vae', 3) == 'Specific(vae, 3)'
