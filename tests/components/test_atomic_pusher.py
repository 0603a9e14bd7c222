"""AtomicPusher's executor, run as the launcher runs it, on a tiny SavedModel."""
import filecmp
import itertools
import os
from unittest import mock

import pytest
import tensorflow as tf
from tfx.dsl.io import fileio
from tfx.types import channel, standard_artifacts
from tfx.utils import path_utils

from vaetfx.components.atomic_pusher import executor
from vaetfx.components.atomic_pusher.component import AtomicPusher

MODEL_NAME = 'vae'


class _Doubler(tf.Module):

  def __init__(self):
    super().__init__()
    self.factor = tf.Variable(2.0)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
  def __call__(self, x):
    return {'doubled': x * self.factor}


@pytest.fixture(scope='module')
def saved_model_dir(tmp_path_factory):
  """A real SavedModel (saved_model.pb, variables/, fingerprint.pb) under a Trainer-like Model uri."""
  model_uri = str(tmp_path_factory.mktemp('trainer_model'))
  module = _Doubler()
  tf.saved_model.save(module, path_utils.serving_model_path(model_uri),
                      signatures={'serving_default': module.__call__})
  return model_uri


def _run(model_uri, serving_dir, pushed_uri, blessed, keep_versions=3):
  model = standard_artifacts.Model()
  model.uri = model_uri
  blessing = standard_artifacts.ModelBlessing()
  blessing.set_int_custom_property('blessed', int(blessed))
  pushed_model = standard_artifacts.PushedModel()
  pushed_model.uri = pushed_uri
  executor.Executor().Do(
      {'model': [model], 'model_blessing': [blessing]},
      {'pushed_model': [pushed_model]},
      {executor.SERVING_DIR_KEY: serving_dir, executor.MODEL_NAME_KEY: MODEL_NAME,
       executor.KEEP_VERSIONS_KEY: keep_versions})
  return pushed_model


@pytest.fixture
def push(tmp_path, saved_model_dir):
  """Runs the executor; each call gets its own PushedModel uri, as each execution does."""
  serving_dir = str(tmp_path / 'serving')
  runs = itertools.count()

  def run(blessed=True, keep_versions=3):
    return _run(saved_model_dir, serving_dir, str(tmp_path / f'pushed_{next(runs)}'),
                blessed, keep_versions)

  run.model_dir = os.path.join(serving_dir, MODEL_NAME)
  return run


def _same_tree(left, right):
  comparison = filecmp.dircmp(left, right)
  if comparison.left_only or comparison.right_only or comparison.funny_files:
    return False
  _, mismatch, errors = filecmp.cmpfiles(left, right, comparison.common_files, shallow=False)
  return not mismatch and not errors and all(
      _same_tree(os.path.join(left, d), os.path.join(right, d)) for d in comparison.common_dirs)


def _snapshot(directory):
  """Every file's inode and modification time: any rewrite or replacement changes it."""
  return {os.path.join(root, name): (os.stat(os.path.join(root, name)).st_ino,
                                     os.stat(os.path.join(root, name)).st_mtime_ns)
          for root, _, names in os.walk(directory) for name in names}


def _entries(model_dir):
  return sorted(os.listdir(model_dir))


def _assert_serves(version_dir):
  loaded = tf.saved_model.load(version_dir)
  doubled = loaded.signatures['serving_default'](tf.constant([1.5]))['doubled']
  assert doubled.numpy().tolist() == [3.0]


def test_blessed_model_is_pushed_whole_at_an_integer_version(push, saved_model_dir):
  pushed_model = push()
  version = pushed_model.get_string_custom_property('pushed_version')
  version_dir = os.path.join(push.model_dir, version)
  assert version.isdigit()
  assert _entries(push.model_dir) == [version]
  assert pushed_model.get_int_custom_property('pushed') == 1
  assert pushed_model.get_string_custom_property('pushed_destination') == version_dir
  model_path = path_utils.serving_model_path(saved_model_dir)
  assert _same_tree(model_path, version_dir)
  assert _same_tree(model_path, pushed_model.uri)
  _assert_serves(version_dir)


def test_unblessed_model_is_not_pushed_and_the_served_version_stays(push):
  served = push().get_string_custom_property('pushed_version')
  before = _snapshot(os.path.join(push.model_dir, served))
  pushed_model = push(blessed=False)
  assert pushed_model.get_int_custom_property('pushed') == 0
  assert not pushed_model.has_custom_property('pushed_version')
  assert not os.path.exists(pushed_model.uri)
  assert _entries(push.model_dir) == [served]
  assert _snapshot(os.path.join(push.model_dir, served)) == before
  _assert_serves(os.path.join(push.model_dir, served))


def test_unblessed_first_model_creates_no_serving_dir(push):
  push(blessed=False)
  assert not os.path.exists(push.model_dir)


def _copy_failing_after(file_count):
  """fileio.copy that copies `file_count` files, then fails as a full disk would."""
  copy = fileio.copy
  calls = []

  def failing_copy(src, dst, overwrite=False):
    if len(calls) == file_count:
      raise OSError(28, 'No space left on device', dst)
    calls.append(dst)
    copy(src, dst, overwrite)

  return failing_copy, calls


def test_failure_mid_copy_leaves_no_version_and_no_staging(push):
  served = push().get_string_custom_property('pushed_version')
  failing_copy, copied = _copy_failing_after(2)
  with mock.patch.object(fileio, 'copy', failing_copy), pytest.raises(OSError, match='No space'):
    push()
  assert len(copied) == 2
  assert _entries(push.model_dir) == [served]
  _assert_serves(os.path.join(push.model_dir, served))


def test_failed_remote_style_copy_removes_its_partial_version(tmp_path, saved_model_dir):
  version_dir = str(tmp_path / 'vae' / '1')
  failing_copy, copied = _copy_failing_after(1)
  with mock.patch.object(fileio, 'copy', failing_copy), pytest.raises(OSError):
    executor.push_in_place(path_utils.serving_model_path(saved_model_dir), version_dir)
  assert copied and not os.path.exists(version_dir)


def test_saved_model_pb_is_copied_last(tmp_path, saved_model_dir):
  with mock.patch.object(fileio, 'copy', wraps=fileio.copy) as copy:
    executor.copy_saved_model(path_utils.serving_model_path(saved_model_dir), str(tmp_path / 'out'))
  copied = [os.path.basename(call.args[1]) for call in copy.call_args_list]
  assert copied[-1] == 'saved_model.pb' and copied.count('saved_model.pb') == 1


def test_each_push_gets_a_higher_version(push):
  versions = [int(push().get_string_custom_property('pushed_version')) for _ in range(3)]
  assert versions == sorted(set(versions))


def test_next_version_is_a_timestamp_unless_a_version_is_already_higher():
  assert executor.next_version([], now=1700000000.7) == 1700000000
  assert executor.next_version([1, 2, 3], now=1700000000.7) == 1700000000
  assert executor.next_version([1700000000], now=1700000000.7) == 1700000001
  assert executor.next_version([2000000000], now=1700000000.7) == 2000000001


def test_keep_versions_removes_the_oldest(push):
  versions = [push(keep_versions=2).get_string_custom_property('pushed_version') for _ in range(4)]
  assert _entries(push.model_dir) == sorted(versions[-2:])


def test_only_integer_directories_count_as_versions(push):
  os.makedirs(os.path.join(push.model_dir, 'notes'))
  os.makedirs(os.path.join(push.model_dir, '12'))
  version = push(keep_versions=1).get_string_custom_property('pushed_version')
  assert _entries(push.model_dir) == sorted([version, 'notes'])


def test_component_wires_pusher_channels():
  pusher = AtomicPusher(
      model=channel.Channel(type=standard_artifacts.Model),
      model_blessing=channel.Channel(type=standard_artifacts.ModelBlessing),
      serving_dir='/srv/models', model_name=MODEL_NAME)
  assert pusher.outputs['pushed_model'].type is standard_artifacts.PushedModel
  assert pusher.exec_properties == {'serving_dir': '/srv/models', 'model_name': MODEL_NAME,
                                    'keep_versions': 3}


def test_component_rejects_keeping_no_version():
  with pytest.raises(ValueError, match='keep_versions'):
    AtomicPusher(model=channel.Channel(type=standard_artifacts.Model),
                 model_blessing=channel.Channel(type=standard_artifacts.ModelBlessing),
                 serving_dir='/srv/models', model_name=MODEL_NAME, keep_versions=0)
