"""AtomicPusher's executor, run as the launcher runs it, on tiny SavedModels.

Every test that breaks a push checks two things afterwards: TF Serving's view
(each integer-named folder holds one whole model) and that the execution's
outcome (raised, or the PushedModel it published) matches what is on disk.
"""
import filecmp
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from unittest import mock

import pytest
import tensorflow as tf
from tfx.dsl.io import fileio, filesystem_registry
from tfx.dsl.io.plugins import tensorflow_gfile
from tfx.types import channel, standard_artifacts
from tfx.utils import io_utils, path_utils

from vaetfx.components.atomic_pusher import executor
from vaetfx.components.atomic_pusher.component import AtomicPusher
from vaetfx.components.warm_start_base import executor as warm_start_base
from vaetfx.shared import serving_folder

MODEL_NAME = 'vae'
FACTORS = (2.0, 3.0, 4.0, 5.0)
BAD_MODEL_NAMES = ('', '.', '..', 'a/b', '/abs', '../up', '.hidden', 'has space', 'x' * 256)


class _Multiplier(tf.Module):

  def __init__(self, factor):
    super().__init__()
    self.factor = tf.Variable(factor)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
  def __call__(self, x):
    return {'scaled': x * self.factor}


def _save_model(model_uri, factor):
  module = _Multiplier(factor)
  tf.saved_model.save(module, path_utils.serving_model_path(model_uri),
                      signatures={'serving_default': module.__call__})
  return model_uri


@pytest.fixture(scope='module')
def models(tmp_path_factory):
  """{factor: Trainer-like Model uri} of real, distinct SavedModels."""
  root = tmp_path_factory.mktemp('trainer_models')
  return {factor: _save_model(str(root / str(factor)), factor) for factor in FACTORS}


PROVENANCE = {'pipeline_name': 'a', 'model': {'kind': 'conv', 'score_key': 'elbo'},
              'code_fingerprint': 'f00d', 'data': {'root': '/data/mnist', 'digits': []}}


def _run(model_uri, serving_dir, pushed_uri, blessed=True, keep_versions=3,
         model_name=MODEL_NAME):
  model = standard_artifacts.Model()
  model.uri = model_uri
  blessing = standard_artifacts.ModelBlessing()
  blessing.set_int_custom_property('blessed', int(blessed))
  pushed_model = standard_artifacts.PushedModel()
  pushed_model.uri = pushed_uri
  executor.Executor().Do(
      {'model': [model], 'model_blessing': [blessing]},
      {'pushed_model': [pushed_model]},
      {executor.SERVING_DIR_KEY: serving_dir, executor.MODEL_NAME_KEY: model_name,
       executor.KEEP_VERSIONS_KEY: keep_versions,
       executor.PROVENANCE_KEY: json.dumps(PROVENANCE)})
  return pushed_model


@pytest.fixture
def push(tmp_path, models):
  """Runs the executor on the model of `factor`; each call gets its own PushedModel uri."""
  serving_dir = str(tmp_path / 'serving')
  runs = itertools.count()

  def run(factor=FACTORS[0], **kwargs):
    return _run(models[factor], serving_dir, str(tmp_path / f'pushed_{next(runs)}'), **kwargs)

  run.serving_dir = serving_dir
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
  return sorted(name for name in os.listdir(model_dir) if name != executor.LOCK_FILE)


def _version(pushed_model):
  return pushed_model.get_string_custom_property('pushed_version')


def _serves(version_dir, factor):
  loaded = tf.saved_model.load(version_dir)
  scaled = loaded.signatures['serving_default'](tf.constant([1.5]))['scaled']
  return scaled.numpy().tolist() == [1.5 * factor]


def served_models(model_dir, models):
  """TF Serving's view: {version: factor of the model it holds}; fails on anything incomplete."""
  view = {}
  for name in os.listdir(model_dir):
    if not name.isdigit():
      continue
    matches = [factor for factor, uri in models.items()
               if serving_folder.same_content(path_utils.serving_model_path(uri),
                                              os.path.join(model_dir, name))]
    assert matches, f'version {name} is not a whole copy of any pushed model'
    view[int(name)] = matches[0]
  return view


def test_blessed_model_is_pushed_whole_at_an_integer_version(push, models):
  pushed_model = push()
  version = _version(pushed_model)
  version_dir = os.path.join(push.model_dir, version)
  assert version.isdigit()
  assert _entries(push.model_dir) == [version]
  assert pushed_model.get_int_custom_property('pushed') == 1
  assert pushed_model.get_int_custom_property(executor.ALREADY_SERVED_KEY) == 0
  assert pushed_model.get_string_custom_property('pushed_destination') == version_dir
  model_path = path_utils.serving_model_path(models[FACTORS[0]])
  assert serving_folder.same_content(model_path, version_dir)
  assert _same_tree(model_path, pushed_model.uri)
  assert _serves(version_dir, FACTORS[0])


def test_every_pushed_version_tells_its_story(push):
  """The provenance record inside the version: the pipeline's part, this push's part."""
  first = _version(push(FACTORS[0]))
  second = _version(push(FACTORS[1]))
  record = serving_folder.read_provenance(os.path.join(push.model_dir, second))
  assert {key: record[key] for key in PROVENANCE if key != 'data'} == {
      key: value for key, value in PROVENANCE.items() if key != 'data'}
  assert record['data']['root'] == '/data/mnist'
  assert record['version'] == int(second) and record['replaced'] == int(first)
  assert record['rollback_of'] is None and record['producer'] == 'vaetfx'
  assert record['pushed_at'].endswith('+00:00')


@pytest.mark.parametrize('base_version, reason, expected', [
    (5, '', {'base_version': 5, 'reason': ''}),
    (-1, 'nothing served', {'base_version': None, 'reason': 'nothing served'}),
])
def test_the_provenance_record_names_the_version_training_started_from(base_version, reason,
                                                                      expected):
  base_model = standard_artifacts.Model()
  base_model.set_int_custom_property(warm_start_base.BASE_VERSION_KEY, base_version)
  base_model.set_string_custom_property(warm_start_base.REASON_KEY, reason)
  record = executor.provenance_record({executor.PROVENANCE_KEY: json.dumps(PROVENANCE)},
                                      {'base_model': [base_model]}, 'run', None, None)
  assert record[warm_start_base.PROVENANCE_ENTRY] == expected
  assert warm_start_base.PROVENANCE_ENTRY not in executor.provenance_record(
      {executor.PROVENANCE_KEY: json.dumps(PROVENANCE)}, {}, 'run', None, None)


def test_unblessed_model_is_not_pushed_and_the_served_version_stays(push):
  served = _version(push())
  before = _snapshot(os.path.join(push.model_dir, served))
  pushed_model = push(FACTORS[1], blessed=False)
  assert pushed_model.get_int_custom_property('pushed') == 0
  assert not pushed_model.has_custom_property('pushed_version')
  assert not os.path.exists(pushed_model.uri)
  assert _entries(push.model_dir) == [served]
  assert _snapshot(os.path.join(push.model_dir, served)) == before


def test_unblessed_first_model_creates_no_serving_dir(push):
  push(blessed=False)
  assert not os.path.exists(push.model_dir)


def test_each_distinct_model_gets_a_higher_version(push, models):
  versions = [int(_version(push(factor))) for factor in FACTORS[:3]]
  assert versions == sorted(set(versions))
  assert served_models(push.model_dir, models) == dict(zip(versions, FACTORS))


def test_the_served_model_is_not_pushed_again_and_the_execution_records_its_version(push,
                                                                                    models):
  first = _version(push(FACTORS[0], keep_versions=2))
  second = _version(push(FACTORS[1], keep_versions=2))
  before = _snapshot(push.model_dir)
  again = push(FACTORS[1], keep_versions=2)
  assert _version(again) == second
  assert again.get_int_custom_property('pushed') == 1
  assert again.get_int_custom_property(executor.ALREADY_SERVED_KEY) == 1
  assert again.get_string_custom_property('pushed_destination') == os.path.join(
      push.model_dir, second)
  assert _snapshot(push.model_dir) == before
  assert served_models(push.model_dir, models) == {int(first): FACTORS[0], int(second): FACTORS[1]}


def test_a_model_equal_to_an_older_version_is_published_again_as_a_rollback(push, models):
  """Push A, B, A: A serves again (as the newest version), its record says whose model it is."""
  first = _version(push(FACTORS[0]))
  second = _version(push(FACTORS[1]))
  again = push(FACTORS[0])
  third = _version(again)
  assert int(third) > int(second)
  assert again.get_int_custom_property(executor.ALREADY_SERVED_KEY) == 0
  assert again.get_int_custom_property(executor.ROLLBACK_OF_KEY) == int(first)
  assert served_models(push.model_dir, models) == {
      int(first): FACTORS[0], int(second): FACTORS[1], int(third): FACTORS[0]}
  assert serving_folder.served_version(serving_folder.list_versions(push.model_dir)).number == (
      int(third))
  record = serving_folder.read_provenance(os.path.join(push.model_dir, third))
  assert (record['rollback_of'], record['replaced']) == (int(first), int(second))


def test_keep_versions_removes_the_oldest(push, models):
  versions = [_version(push(factor, keep_versions=2)) for factor in FACTORS]
  assert _entries(push.model_dir) == sorted(versions[-2:])
  assert served_models(push.model_dir, models) == {int(versions[2]): FACTORS[2],
                                                   int(versions[3]): FACTORS[3]}


def _tree_state(path):
  """Everything about a path that a harmful step would change, symlinks not followed."""
  if os.path.islink(path):
    return ('link', os.readlink(path))
  if os.path.isfile(path):
    return ('file', open(path, 'rb').read())
  return ('dir', {name: _tree_state(os.path.join(path, name)) for name in os.listdir(path)})


@pytest.fixture
def foreign_things(push, models, tmp_path):
  """What the issue lists: a file `5`, an empty folder `7`, a symlink `8` to a model outside,
  a folder `9` without saved_model.pb, a SavedModel copied in by hand as `10`, and a
  `.retired-...` symlink an older Pusher left; plus a user's `notes/`."""
  model_dir = push.model_dir
  os.makedirs(model_dir)
  with open(os.path.join(model_dir, '5'), 'w') as f:
    f.write('not a model')
  os.makedirs(os.path.join(model_dir, '7'))
  golden = tmp_path / 'archive' / 'golden'
  io_utils.copy_dir(path_utils.serving_model_path(models[FACTORS[3]]), str(golden))
  os.symlink(str(golden), os.path.join(model_dir, '8'))
  os.makedirs(os.path.join(model_dir, '9', 'variables'))
  io_utils.copy_dir(path_utils.serving_model_path(models[FACTORS[2]]),
                    os.path.join(model_dir, '10'))
  os.symlink(str(golden), os.path.join(model_dir, f'.retired-8-{"0" * 32}'))
  os.makedirs(os.path.join(model_dir, 'notes'))
  names = ['5', '7', '8', '9', '10', f'.retired-8-{"0" * 32}', 'notes']
  return {name: _tree_state(os.path.join(model_dir, name)) for name in names}, golden


def test_pushes_and_pruning_leave_every_foreign_thing_intact(push, foreign_things):
  before, golden = foreign_things
  golden_before = _tree_state(str(golden))
  pushed = [push(factor, keep_versions=1) for factor in FACTORS[:3]]
  for name, state in before.items():
    assert _tree_state(os.path.join(push.model_dir, name)) == state, name
  assert _tree_state(str(golden)) == golden_before
  ours = [v.number for v in serving_folder.own_versions(
      serving_folder.list_versions(push.model_dir))]
  assert ours == [int(_version(pushed[-1]))]  # foreign versions do not count toward keep=1
  foreign = json.loads(pushed[-1].get_string_custom_property(executor.FOREIGN_KEY))
  assert any('version 8 is a symlink' in line for line in foreign)
  assert any('version 9 holds no saved_model.pb' in line for line in foreign)
  assert any('version 10 was not pushed by vaetfx' in line for line in foreign)


def test_a_foreign_symlink_is_never_followed_when_it_is_the_newest(push, models, tmp_path):
  """A symlink numbered above every push is what TF Serving serves: it is never pruned, and
  its target outside the serving folder keeps every file."""
  push(FACTORS[0])
  golden = tmp_path / 'golden'
  io_utils.copy_dir(path_utils.serving_model_path(models[FACTORS[3]]), str(golden))
  golden_before = _tree_state(str(golden))
  os.symlink(str(golden), os.path.join(push.model_dir, '9999999999'))
  pushed = push(FACTORS[1], keep_versions=1)
  assert int(_version(pushed)) > 9999999999  # always above every version, foreign ones too
  assert os.readlink(os.path.join(push.model_dir, '9999999999')) == str(golden)
  assert _tree_state(str(golden)) == golden_before


@pytest.mark.parametrize('name', BAD_MODEL_NAMES)
def test_bad_model_name_is_refused_before_anything_is_touched(tmp_path, models, name):
  serving_dir = tmp_path / 'serving'
  (serving_dir / '1').mkdir(parents=True)
  with pytest.raises(ValueError, match='model name'):
    _run(models[FACTORS[0]], str(serving_dir), str(tmp_path / 'pushed'), keep_versions=1,
         model_name=name)
  assert sorted(os.listdir(serving_dir)) == ['1'] and not os.listdir(serving_dir / '1')
  assert not (tmp_path / 'pushed').exists()


def _failing_after(function, calls_before_failure, error):
  """A wrapper of `function` that runs `calls_before_failure` times, then raises `error`."""
  calls = []

  def failing(*args, **kwargs):
    if len(calls) == calls_before_failure:
      raise error
    calls.append(args)
    return function(*args, **kwargs)

  return failing, calls


DISK_FULL = OSError(28, 'No space left on device')


def _archive_fails(pushed_root):
  copy_dir = io_utils.copy_dir

  def failing(src, dst, *args, **kwargs):
    if dst.startswith(pushed_root):
      raise DISK_FULL
    return copy_dir(src, dst, *args, **kwargs)

  return mock.patch.object(io_utils, 'copy_dir', failing)


FAULTS = {
    'staging copy': lambda push: mock.patch.object(
        fileio, 'copy', _failing_after(fileio.copy, 2, DISK_FULL)[0]),
    'fsync': lambda push: mock.patch.object(
        executor.os, 'fsync', _failing_after(os.fsync, 1, OSError(5, 'Input/output error'))[0]),
    'archive': lambda push: _archive_fails(os.path.join(os.path.dirname(push.serving_dir),
                                                        'pushed_')),
    'rename': lambda push: mock.patch.object(
        executor.os, 'rename', side_effect=OSError(13, 'Permission denied')),
}


@pytest.mark.parametrize('step', sorted(FAULTS))
def test_a_failure_before_the_rename_fails_the_push_and_changes_nothing_served(push, models,
                                                                               step):
  served = _version(push(FACTORS[0]))
  before = _snapshot(push.model_dir)
  with FAULTS[step](push), pytest.raises(OSError):
    push(FACTORS[1])
  assert _entries(push.model_dir) == [served]  # no new version, no staging folder left
  assert _snapshot(push.model_dir) == before
  assert served_models(push.model_dir, models) == {int(served): FACTORS[0]}
  # The next push succeeds as if nothing had happened.
  version = int(_version(push(FACTORS[1])))
  assert served_models(push.model_dir, models) == {int(served): FACTORS[0], version: FACTORS[1]}


def test_a_failed_prune_is_logged_and_the_push_still_succeeds(push, models):
  old = [_version(push(factor)) for factor in FACTORS[:2]]
  with mock.patch.object(executor, 'remove_version', side_effect=OSError(16, 'Device busy')), \
      mock.patch.object(executor.logging, 'error') as logged:
    pushed_model = push(FACTORS[2], keep_versions=1)
  version = _version(pushed_model)
  assert pushed_model.get_int_custom_property('pushed') == 1
  assert 'Device busy' in str(logged.call_args_list)
  assert served_models(push.model_dir, models) == {
      int(old[0]): FACTORS[0], int(old[1]): FACTORS[1], int(version): FACTORS[2]}


def test_staging_is_flushed_to_disk_before_the_rename(push, models):
  events = []
  fsync, rename = os.fsync, os.rename
  with mock.patch.object(executor.os, 'fsync', lambda fd: events.append('fsync') or fsync(fd)), \
      mock.patch.object(executor.os, 'rename',
                        lambda src, dst: events.append('rename') or rename(src, dst)):
    push()
  files_and_dirs = sum(len(names) + 1 for _, _, names in os.walk(path_utils.serving_model_path(
      models[FACTORS[0]]))) + 2  # and the provenance record with its assets.extra folder
  # Each staged file and folder, then the rename, then the model directory (the rename's entry).
  assert events == ['fsync'] * files_and_dirs + ['rename', 'fsync']


def test_saved_model_pb_is_copied_last_after_the_provenance_record(tmp_path, models):
  events = []
  copy, write = fileio.copy, executor.write_provenance
  with mock.patch.object(fileio, 'copy', lambda src, dst, overwrite=False: (
      events.append(os.path.basename(dst)), copy(src, dst, overwrite))), \
      mock.patch.object(executor, 'write_provenance', lambda *args: (
          events.append('provenance'), write(*args))):
    executor.copy_saved_model(path_utils.serving_model_path(models[FACTORS[0]]),
                              str(tmp_path / 'out'), {**PROVENANCE, 'producer': 'vaetfx'})
  assert events[-2:] == ['provenance', 'saved_model.pb'] and events.count('saved_model.pb') == 1
  assert serving_folder.read_provenance(str(tmp_path / 'out'))['pipeline_name'] == 'a'


def test_next_version_is_a_timestamp_unless_a_version_is_already_higher():
  assert executor.next_version([], now=1700000000.7) == 1700000000
  assert executor.next_version([1, 2, 3], now=1700000000.7) == 1700000000
  assert executor.next_version([1700000000], now=1700000000.7) == 1700000001
  assert executor.next_version([2000000000], now=1700000000.7) == 2000000001


def test_concurrent_pushes_get_distinct_versions(push, models):
  """Four threads push four different models at once: four versions, all whole."""
  barrier = threading.Barrier(len(FACTORS))
  results, errors = {}, []

  def push_one(factor):
    barrier.wait()
    try:
      results[factor] = int(_version(push(factor, keep_versions=len(FACTORS))))
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=push_one, args=(factor,)) for factor in FACTORS]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert not errors
  assert len(set(results.values())) == len(FACTORS)
  assert served_models(push.model_dir, models) == {v: f for f, v in results.items()}


def test_a_push_that_loses_the_rename_race_takes_the_next_version(push, models):
  """Without the lock (another host on a shared disk), both pick the same second:
  the rename onto the taken version fails and the push moves one up."""
  with mock.patch.object(executor.time, 'time', return_value=1700000000.5):
    first = _version(push(FACTORS[0]))
    stale_listing = mock.patch.object(executor, '_version_numbers', return_value=[])
    with stale_listing:
      second = _version(push(FACTORS[1]))
  assert (first, second) == ('1700000000', '1700000001')
  assert served_models(push.model_dir, models) == {1700000000: FACTORS[0],
                                                   1700000001: FACTORS[1]}


KILLED_PUSH = textwrap.dedent('''
    import os, sys, time
    from unittest import mock
    from tfx.dsl.io import fileio
    from tests.components import test_atomic_pusher as t

    model_uri, serving_dir, pushed_uri, ready = sys.argv[1:]
    copy = fileio.copy

    def copy_then_hang(src, dst, overwrite=False):
      copy(src, dst, overwrite)
      if '.staging-' in dst:
        open(ready, 'w').close()
        time.sleep(600)

    with mock.patch.object(fileio, 'copy', copy_then_hang):
      t._run(model_uri, serving_dir, pushed_uri)
''')


def test_a_sigkilled_push_leaves_no_version_and_the_next_push_cleans_up(push, models, tmp_path):
  served = _version(push(FACTORS[0]))
  ready = tmp_path / 'ready'
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  process = subprocess.Popen(
      [sys.executable, '-c', KILLED_PUSH, models[FACTORS[1]], push.serving_dir,
       str(tmp_path / 'killed_pushed'), str(ready)],
      cwd=repo, env={**os.environ, 'TF_USE_LEGACY_KERAS': '1', 'TF_CPP_MIN_LOG_LEVEL': '3'})
  try:
    deadline = time.monotonic() + 120
    while not ready.exists():
      assert process.poll() is None, 'the push ended before it was killed'
      assert time.monotonic() < deadline, 'the push never reached its staging copy'
      time.sleep(0.1)
    os.kill(process.pid, signal.SIGKILL)
  finally:
    process.wait()
  assert process.returncode == -signal.SIGKILL
  entries = _entries(push.model_dir)
  assert [name for name in entries if name.isdigit()] == [served]
  assert any(name.startswith(executor.STAGING_PREFIX) for name in entries)
  assert served_models(push.model_dir, models) == {int(served): FACTORS[0]}

  version = _version(push(FACTORS[1]))
  assert _entries(push.model_dir) == sorted([served, version])
  assert served_models(push.model_dir, models) == {int(served): FACTORS[0],
                                                   int(version): FACTORS[1]}


class _RamFilesystem(tensorflow_gfile.TensorflowFilesystem):
  """TensorFlow's in-memory ram:// filesystem, which TFX's fileio does not route by default."""
  SUPPORTED_SCHEMES = ['ram://']


@pytest.fixture(scope='module')
def ram_filesystem():
  filesystem_registry.DEFAULT_FILESYSTEM_REGISTRY.register(_RamFilesystem, priority=0)


def test_a_remote_filesystem_gets_the_in_place_push_through_fileio(models, ram_filesystem):
  """TensorFlow's ram:// filesystem stands in for gs://: no rename, no lock, no fsync, and
  every path operation must go through fileio (os and shutil would not find ram:// paths)."""
  serving_dir = f'ram://serving-{os.getpid()}-{time.time_ns()}'
  with mock.patch.object(executor.os, 'rename') as rename, \
      mock.patch.object(executor.os, 'fsync') as fsync:
    first = _run(models[FACTORS[0]], serving_dir, f'{serving_dir}-pushed-0', keep_versions=1)
    again = _run(models[FACTORS[0]], serving_dir, f'{serving_dir}-pushed-1', keep_versions=1)
    second = _run(models[FACTORS[1]], serving_dir, f'{serving_dir}-pushed-2', keep_versions=1)
  rename.assert_not_called()
  fsync.assert_not_called()
  model_dir = f'{serving_dir}/{MODEL_NAME}'
  assert _version(again) == _version(first)
  assert again.get_int_custom_property(executor.ALREADY_SERVED_KEY) == 1
  [version] = serving_folder.list_versions(model_dir)
  assert version.number == int(_version(second)) and version.provenance['version'] == (
      version.number)
  assert serving_folder.same_content(path_utils.serving_model_path(models[FACTORS[1]]),
                                     version.path)


def test_failed_remote_style_copy_removes_its_partial_version(models, ram_filesystem):
  model_dir = f'ram://partial-{os.getpid()}-{time.time_ns()}/vae'
  failing_copy, copied = _failing_after(fileio.copy, 1, DISK_FULL)
  with mock.patch.object(fileio, 'copy', failing_copy), pytest.raises(OSError):
    executor.push_in_place(path_utils.serving_model_path(models[FACTORS[0]]), model_dir,
                           PROVENANCE)
  assert copied and serving_folder.list_versions(model_dir) == []


def test_component_wires_pusher_channels():
  pusher = AtomicPusher(
      model=channel.Channel(type=standard_artifacts.Model),
      model_blessing=channel.Channel(type=standard_artifacts.ModelBlessing),
      serving_dir='/srv/models', model_name=MODEL_NAME, code_fingerprint='abc')
  assert pusher.outputs['pushed_model'].type is standard_artifacts.PushedModel
  assert pusher.exec_properties == {'serving_dir': '/srv/models', 'model_name': MODEL_NAME,
                                    'keep_versions': 3, 'code_fingerprint': 'abc',
                                    'provenance': None}


def test_component_rejects_keeping_no_version():
  with pytest.raises(ValueError, match='keep_versions'):
    AtomicPusher(model=channel.Channel(type=standard_artifacts.Model),
                 model_blessing=channel.Channel(type=standard_artifacts.ModelBlessing),
                 serving_dir='/srv/models', model_name=MODEL_NAME, keep_versions=0)


@pytest.mark.parametrize('name', BAD_MODEL_NAMES)
def test_component_rejects_a_bad_model_name(name):
  with pytest.raises(ValueError, match='model name'):
    AtomicPusher(model=channel.Channel(type=standard_artifacts.Model),
                 model_blessing=channel.Channel(type=standard_artifacts.ModelBlessing),
                 serving_dir='/srv/models', model_name=name)


def _examples(span: int, uri: str = '') -> standard_artifacts.Examples:
  """Examples as TFX's ExampleGen driver marks them: `span` is a custom property."""
  examples = standard_artifacts.Examples()
  examples.uri = uri or f'/pipeline_root/Transform/transformed_examples/{span}'
  examples.split_names = '["train", "eval"]'
  examples.set_int_custom_property('span', span)
  return examples


def test_the_provenance_record_names_the_eval_span_and_the_trained_spans():
  record = executor.provenance_record(
      {executor.PROVENANCE_KEY: json.dumps(PROVENANCE)},
      {'examples': [_examples(3, '/pipeline_root/MnistExampleGen/examples/7')],
       executor.TRAIN_EXAMPLES_KEY: [_examples(3), _examples(2)]},
      run_id='run-1', served=None, rollback_of=None)
  assert record['data']['span'] == 3
  assert record['data']['train_spans'] == [2, 3]
  assert record['data']['examples_uri'] == '/pipeline_root/MnistExampleGen/examples/7'
  assert record['data']['root'] == '/data/mnist'
