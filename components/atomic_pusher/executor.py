"""AtomicPusher's executor: a blessed model becomes a new version of TF Serving's model directory.

TF Serving polls `<serving_dir>/<model_name>/`, loads every integer-named
subdirectory as a version and unloads versions that disappear. TFX's Pusher
copies file by file straight into the version directory, so a poller can find a
half-copied model and a failed copy leaves a broken version behind. Here the
model is copied beside the versions under a name that is not an integer, which
TF Serving ignores, then renamed into place: rename(2) within one local
filesystem is atomic, so a version appears complete or not at all.

Remote filesystems (gs://, s3://, hdfs://) have no atomic directory rename: GCS
"renames" object by object, a copy and a delete each. There the model is copied
straight into its version directory with saved_model.pb last, as TFX's Pusher
does (TF Serving cannot load a version before saved_model.pb is there and
retries the load), and a failed copy deletes the partial version. That is best
effort, not atomic, and logged as such.
"""
import os
import re
import shutil
import time
import uuid
from typing import Any, Dict, List

from absl import logging
from tfx import types
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import io_utils

SERVING_DIR_KEY = 'serving_dir'
MODEL_NAME_KEY = 'model_name'
KEEP_VERSIONS_KEY = 'keep_versions'

SAVED_MODEL_FILE = 'saved_model.pb'
STAGING_PREFIX = '.staging-'
RETIRED_PREFIX = '.retired-'


def on_local_disk(path: str) -> bool:
  """Paths with a scheme (gs://, s3://, hdfs://) are served by fileio plugins without atomic rename."""
  return '://' not in path


def list_versions(model_dir: str) -> List[int]:
  """The version numbers TF Serving would load: integer-named subdirectories."""
  if not fileio.isdir(model_dir):
    return []
  names = (name.rstrip('/') for name in fileio.listdir(model_dir))
  return sorted(int(name) for name in names
                if re.fullmatch('[0-9]+', name) and fileio.isdir(os.path.join(model_dir, name)))


def next_version(existing: List[int], now: float) -> int:
  """Unix seconds, like TFX's Pusher, so a version says when it was pushed, but always above
  every existing version: TF Serving serves the highest number, and a clock set back, two
  pushes within one second or hand-numbered versions (1, 2, 3) must not hide or collide
  with a new push.
  """
  return max([int(now), *(version + 1 for version in existing)])


def copy_saved_model(model_path: str, destination: str):
  """Copies the model with saved_model.pb last: loaders treat its presence as "complete"."""
  saved_model = os.path.join(model_path.rstrip('/'), SAVED_MODEL_FILE)
  io_utils.copy_dir(model_path, destination, deny_regex_patterns=[f'^{re.escape(saved_model)}$'])
  if fileio.exists(saved_model):
    io_utils.copy_file(saved_model, os.path.join(destination, SAVED_MODEL_FILE))


def push_atomically(model_path: str, version_dir: str):
  """Copies into a non-integer staging directory beside `version_dir`, then renames it into place.

  Any failure, an interrupt included, removes the staging directory, so nothing
  is left behind; the rename itself either happens whole or not at all.
  """
  model_dir, version = os.path.split(version_dir)
  staging_dir = os.path.join(model_dir, f'{STAGING_PREFIX}{version}-{uuid.uuid4().hex}')
  try:
    copy_saved_model(model_path, staging_dir)
    os.rename(staging_dir, version_dir)
  except BaseException:
    shutil.rmtree(staging_dir, ignore_errors=True)
    raise


def push_in_place(model_path: str, version_dir: str):
  """The remote fallback: saved_model.pb last, and a failed copy removes the partial version."""
  logging.warning('%s has no atomic rename: copying in place with %s last; TF Serving may see '
                  'the version before it is complete and retry loading it.',
                  version_dir, SAVED_MODEL_FILE)
  try:
    copy_saved_model(model_path, version_dir)
  except BaseException:
    if fileio.exists(version_dir):
      fileio.rmtree(version_dir)
    raise


def push_model(model_path: str, model_dir: str) -> str:
  """Pushes the SavedModel at `model_path` as a new version of `model_dir`; returns its directory."""
  fileio.makedirs(model_dir)
  version_dir = os.path.join(model_dir, str(next_version(list_versions(model_dir), time.time())))
  if on_local_disk(model_dir):
    push_atomically(model_path, version_dir)
  else:
    push_in_place(model_path, version_dir)
  return version_dir


def remove_version(model_dir: str, version: int):
  """On local disk the version is first renamed away, so TF Serving sees it vanish at once
  rather than poll a directory that is half deleted, and an interrupted delete leaves
  only a name it ignores.
  """
  version_dir = os.path.join(model_dir, str(version))
  if not on_local_disk(model_dir):
    fileio.rmtree(version_dir)
    return
  retired_dir = os.path.join(model_dir, f'{RETIRED_PREFIX}{version}-{uuid.uuid4().hex}')
  os.rename(version_dir, retired_dir)
  shutil.rmtree(retired_dir)


def prune_versions(model_dir: str, keep_versions: int) -> List[int]:
  """Removes all but the newest `keep_versions` versions; returns the removed ones."""
  versions = list_versions(model_dir)
  removed = versions[:max(0, len(versions) - keep_versions)]
  for version in removed:
    remove_version(model_dir, version)
  return removed


class Executor(pusher_executor.Executor):
  """TFX's Pusher executor with an atomic, versioned push; its blessing check (model_blessing
  and, when given, infra_blessing must both be blessed), model choice (`model`, else the
  infra blessing's warmed-up copy) and PushedModel properties (pushed, pushed_destination,
  pushed_version) are reused as they are.
  """

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    pushed_model = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.PUSHED_MODEL_KEY])
    if not self.CheckBlessing(input_dict):
      self._MarkNotPushed(pushed_model)
      return
    model_path = self.GetModelPath(input_dict)
    model_dir = os.path.join(exec_properties[SERVING_DIR_KEY], exec_properties[MODEL_NAME_KEY])
    version_dir = push_model(model_path, model_dir)
    logging.info('Model pushed to %s.', version_dir)
    removed = prune_versions(model_dir, exec_properties[KEEP_VERSIONS_KEY])
    if removed:
      logging.info('Removed old versions %s of %s.', removed, model_dir)
    # As TFX's Pusher does: the artifact keeps its own copy, so it outlives pruning.
    io_utils.copy_dir(model_path, pushed_model.uri)
    self._MarkPushed(pushed_model, pushed_destination=version_dir,
                     pushed_version=os.path.basename(version_dir))
