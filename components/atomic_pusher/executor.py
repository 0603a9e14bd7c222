"""AtomicPusher's executor: a blessed model becomes a new version of TF Serving's model directory.

TF Serving polls `<serving_dir>/<model_name>/`, loads every integer-named
subdirectory as a version and unloads versions that disappear. TFX's Pusher
copies file by file straight into the version directory, so a poller can find a
half-copied model and a failed copy leaves a broken version behind. Here a push
is, in order:

1. Check the model name (the config layer did; this is the last guard).
2. Take the model directory's lock, remove staging folders that interrupted
   pushes left, and look for a version with the same content: if one exists,
   nothing is copied and the execution records that version. Re-running an
   unchanged pipeline therefore never adds a duplicate that would evict an
   older, distinct model under --keep-versions.
3. Everything that can fail, before the model is visible: the artifact's own
   copy (as TFX's Pusher keeps one), then a copy into a staging folder beside
   the versions whose name is not an integer, so TF Serving ignores it, flushed
   to disk (fsync) file by file.
4. Rename the staging folder to the next integer version. rename(2) within one
   local filesystem is atomic: the version appears complete or not at all, and
   it fails on an existing version, so a push that loses a race takes the next
   number instead.
5. Prune old versions. The model is live by now, so a failure here is logged
   and the push still succeeds.

The lock (flock on `.push.lock`) makes two pushes into one local model
directory take turns: each sees the other's version, and any staging folder
found while holding it belongs to a push that died. A SIGKILL releases it.

Remote filesystems (gs://, s3://, hdfs://) have no atomic directory rename and
no lock: GCS "renames" object by object, a copy and a delete each. There the
model is copied straight into its version directory with saved_model.pb last,
as TFX's Pusher does (TF Serving cannot load a version before saved_model.pb is
there and retries the load), and a failed copy deletes the partial version.
That is best effort, not atomic, and logged as such. Every path operation goes
through TFX's fileio, so the same code runs on any filesystem it supports.
"""
import contextlib
import errno
import fcntl
import hashlib
import os
import re
import time
import uuid
from typing import Any, Dict, Iterator, List, Optional

from absl import logging
from tfx import types
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import io_utils

from vaetfx import storage
from vaetfx.components.atomic_pusher.model_name import check_model_name

SERVING_DIR_KEY = 'serving_dir'
MODEL_NAME_KEY = 'model_name'
KEEP_VERSIONS_KEY = 'keep_versions'
CODE_FINGERPRINT_KEY = 'code_fingerprint'
# Custom property of the PushedModel: 1 when its model was already served and nothing was copied.
ALREADY_SERVED_KEY = 'already_served'

SAVED_MODEL_FILE = 'saved_model.pb'
SAVED_MODEL_FILES = (SAVED_MODEL_FILE, 'saved_model.pbtxt')
STAGING_PREFIX = '.staging-'
RETIRED_PREFIX = '.retired-'
LOCK_FILE = '.push.lock'
# Renames that lose a race to another pusher (on a filesystem flock does not cover) try the
# next number; this many losses in a row is not a race any more.
MAX_PUBLISH_ATTEMPTS = 20
_READ_CHUNK = 1 << 20


def list_versions(model_dir: str) -> List[int]:
  """The version numbers TF Serving would load: integer-named subdirectories."""
  return sorted(storage.version_dirs(model_dir))


def holds_saved_model(directory: str) -> bool:
  return any(fileio.exists(os.path.join(directory, name)) for name in SAVED_MODEL_FILES)


def next_version(existing: List[int], now: float) -> int:
  """Unix seconds, like TFX's Pusher, so a version says when it was pushed, but always above
  every existing version: TF Serving serves the highest number, and a clock set back, two
  pushes within one second or hand-numbered versions (1, 2, 3) must not hide or collide
  with a new push.
  """
  return max([int(now), *(version + 1 for version in existing)])


def _files(directory: str) -> Dict[str, str]:
  """{path relative to `directory`: full path} of every file below it."""
  root = directory.rstrip('/')
  files = {}
  for current, _, names in fileio.walk(root):
    for name in names:
      path = os.path.join(current, name)
      files[path[len(root) + 1:]] = path
  return files


def same_content(left: str, right: str) -> bool:
  """True when both trees hold the same files with the same bytes. Sizes are compared
  first, so a different model is usually told apart without reading it."""
  left_files, right_files = _files(left), _files(right)
  if left_files.keys() != right_files.keys() or any(
      fileio.stat(left_files[name]).length != fileio.stat(right_files[name]).length
      for name in left_files):
    return False
  return all(_file_digest(left_files[name]) == _file_digest(right_files[name])
             for name in left_files)


def _file_digest(path: str) -> str:
  digest = hashlib.sha256()
  with fileio.open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(_READ_CHUNK), b''):
      digest.update(chunk)
  return digest.hexdigest()


def find_identical_version(model_dir: str, model_path: str) -> Optional[int]:
  """The newest version whose files are byte for byte the model's, if any."""
  for version in reversed(list_versions(model_dir)):
    version_dir = os.path.join(model_dir, str(version))
    if holds_saved_model(version_dir) and same_content(model_path, version_dir):
      return version
  return None


def copy_saved_model(model_path: str, destination: str):
  """Copies the model with saved_model.pb last: loaders treat its presence as "complete"."""
  saved_model = os.path.join(model_path.rstrip('/'), SAVED_MODEL_FILE)
  io_utils.copy_dir(model_path, destination, deny_regex_patterns=[f'^{re.escape(saved_model)}$'])
  if fileio.exists(saved_model):
    io_utils.copy_file(saved_model, os.path.join(destination, SAVED_MODEL_FILE))


def fsync_path(path: str):
  """Flushes a file's or a directory's entries to disk (local paths only)."""
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def fsync_tree(directory: str):
  """Every file, then every directory bottom-up, so the tree survives a power cut once renamed."""
  for current, _, names in os.walk(directory, topdown=False):
    for name in names:
      fsync_path(os.path.join(current, name))
    fsync_path(current)


@contextlib.contextmanager
def push_lock(model_dir: str) -> Iterator[None]:
  """An exclusive flock on the model directory's lock file (local disk); none elsewhere."""
  if storage.is_uri(model_dir):
    yield
    return
  with open(os.path.join(model_dir, LOCK_FILE), 'a', encoding='utf-8') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def remove_stale_staging(model_dir: str) -> List[str]:
  """Removes staging and retired folders of pushes that died; call it holding push_lock."""
  stale = [name.rstrip('/') for name in fileio.listdir(model_dir)
           if name.startswith((STAGING_PREFIX, RETIRED_PREFIX))]
  for name in stale:
    logging.warning('Removing %s, left by an interrupted push or prune.', name)
    fileio.rmtree(os.path.join(model_dir, name))
  return stale


@contextlib.contextmanager
def removed_on_failure(directory: str) -> Iterator[None]:
  """Removes `directory` if the block fails, an interrupt included: no partial copy stays."""
  try:
    yield
  except BaseException:
    if fileio.exists(directory):
      fileio.rmtree(directory)
    raise


def stage(model_path: str, model_dir: str) -> str:
  """A complete, flushed copy of the model beside the versions, under a name TF Serving ignores."""
  staging_dir = os.path.join(model_dir, f'{STAGING_PREFIX}{uuid.uuid4().hex}')
  with removed_on_failure(staging_dir):
    copy_saved_model(model_path, staging_dir)
    fsync_tree(staging_dir)
  return staging_dir


def publish(staging_dir: str, model_dir: str) -> str:
  """Renames the staged model to the next free version; returns the version directory.

  rename(2) onto a version that holds files fails (ENOTEMPTY, EEXIST): another
  push took that number, so a higher one is tried.
  """
  with removed_on_failure(staging_dir):
    version = next_version(list_versions(model_dir), time.time())
    for _ in range(MAX_PUBLISH_ATTEMPTS):
      version_dir = os.path.join(model_dir, str(version))
      try:
        os.rename(staging_dir, version_dir)
      except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
          raise
        logging.warning('Version %s was taken by another push; trying a higher one.', version)
        version = max(version + 1, next_version(list_versions(model_dir), time.time()))
        continue
      fsync_path(model_dir)
      return version_dir
    raise RuntimeError(f'{model_dir}: every version number tried was taken by another push '
                       f'({MAX_PUBLISH_ATTEMPTS} attempts)')


def push_in_place(model_path: str, model_dir: str) -> str:
  """The remote fallback: saved_model.pb last, and a failed copy removes the partial version."""
  version_dir = os.path.join(model_dir, str(next_version(list_versions(model_dir), time.time())))
  logging.warning('%s has no atomic rename: copying in place with %s last; TF Serving may see '
                  'the version before it is complete and retry loading it.',
                  version_dir, SAVED_MODEL_FILE)
  with removed_on_failure(version_dir):
    copy_saved_model(model_path, version_dir)
  return version_dir


def push_model(model_path: str, model_dir: str) -> str:
  """Pushes the SavedModel at `model_path` as a new version of `model_dir`; returns its directory."""
  if not storage.is_uri(model_dir):
    return publish(stage(model_path, model_dir), model_dir)
  return push_in_place(model_path, model_dir)


def remove_version(model_dir: str, version: int):
  """On local disk the version is first renamed away, so TF Serving sees it vanish at once
  rather than poll a directory that is half deleted, and an interrupted delete leaves
  only a name the next push cleans up.
  """
  version_dir = os.path.join(model_dir, str(version))
  if storage.is_uri(model_dir):
    fileio.rmtree(version_dir)
    return
  retired_dir = os.path.join(model_dir, f'{RETIRED_PREFIX}{version}-{uuid.uuid4().hex}')
  os.rename(version_dir, retired_dir)
  fileio.rmtree(retired_dir)


def prune_versions(model_dir: str, keep_versions: int, pushed_version: int) -> List[int]:
  """Removes all but the newest `keep_versions` versions that hold a SavedModel, and
  never `pushed_version` (an older version this push found identical stays beside
  them); returns the removed ones. Folders without a SavedModel are not
  this Pusher's and stay. A version that cannot be removed is logged and skipped:
  the push it follows has succeeded already.
  """
  versions = [v for v in list_versions(model_dir)
              if holds_saved_model(os.path.join(model_dir, str(v)))]
  removed = []
  for version in versions[:max(0, len(versions) - keep_versions)]:
    if version == pushed_version:
      continue
    try:
      remove_version(model_dir, version)
    except Exception as e:  # pylint: disable=broad-except
      logging.error('Could not remove old version %s of %s (the push succeeded): %s',
                    version, model_dir, e)
    else:
      removed.append(version)
  return removed


class Executor(pusher_executor.Executor):
  """TFX's Pusher executor with an atomic, idempotent, versioned push; its blessing check
  (model_blessing and, when given, infra_blessing must both be blessed), model choice
  (`model`, else the infra blessing's warmed-up copy) and PushedModel properties (pushed,
  pushed_destination, pushed_version) are reused as they are.
  """

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    model_name = check_model_name(exec_properties[MODEL_NAME_KEY])
    pushed_model = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.PUSHED_MODEL_KEY])
    if not self.CheckBlessing(input_dict):
      self._MarkNotPushed(pushed_model)
      return
    model_path = self.GetModelPath(input_dict)
    model_dir = os.path.join(exec_properties[SERVING_DIR_KEY], model_name)
    fileio.makedirs(model_dir)
    with push_lock(model_dir):
      if not storage.is_uri(model_dir):
        remove_stale_staging(model_dir)
      served = find_identical_version(model_dir, model_path)
      # As TFX's Pusher does: the artifact keeps its own copy, so it outlives pruning.
      io_utils.copy_dir(model_path, pushed_model.uri)
      if served is None:
        version_dir = push_model(model_path, model_dir)
        logging.info('Model pushed to %s.', version_dir)
      else:
        version_dir = os.path.join(model_dir, str(served))
        logging.info('Version %s already holds this model: nothing copied.', version_dir)
      pushed_model.set_int_custom_property(ALREADY_SERVED_KEY, int(served is not None))
      self._MarkPushed(pushed_model, pushed_destination=version_dir,
                       pushed_version=os.path.basename(version_dir))
      removed = prune_versions(model_dir, exec_properties[KEEP_VERSIONS_KEY],
                               int(os.path.basename(version_dir)))
    if removed:
      logging.info('Removed old versions %s of %s.', removed, model_dir)
