"""AtomicPusher's executor: a blessed model becomes a new version of TF Serving's model directory.

TF Serving polls `<serving_dir>/<model_name>/`, loads every integer-named
subdirectory as a version and unloads versions that disappear. TFX's Pusher
copies file by file straight into the version directory, so a poller can find a
half-copied model and a failed copy leaves a broken version behind. Here a push
is, in order:

1. Check the model name (the config layer did; this is the last guard).
2. Take the model directory's lock, remove staging folders that interrupted
   pushes left, and compare with the version TF Serving serves (the newest
   complete one, serving_folder.served_version): if it holds the same model,
   nothing is copied and the execution records that version. A model equal to
   an older version that is not served is published again as the newest: that
   is a rollback, and its provenance record says so.
3. Everything that can fail, before the model is visible: the artifact's own
   copy (as TFX's Pusher keeps one), then a copy into a staging folder beside
   the versions whose name is not an integer, so TF Serving ignores it, with
   the version's provenance record (serving_folder.PROVENANCE_FILE), flushed
   to disk (fsync) file by file.
4. Rename the staging folder to the next integer version. rename(2) within one
   local filesystem is atomic: the version appears complete or not at all, and
   it fails on an existing version, so a push that loses a race takes the next
   number instead.
5. Prune old versions: only versions this product wrote (a real folder with
   its provenance record), never a symlink, never the served version, and
   foreign versions do not count toward keep_versions. The model is live by
   now, so a failure here is logged and the push still succeeds.

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
import json
import os
import re
import time
import uuid
from typing import Any, Dict, Iterator, List, Optional

from absl import logging
from tfx import types
from tfx.components.util import model_utils
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import io_utils
from tfx.utils import path_utils

from vaetfx.components import span_window
from vaetfx.components.warm_start_base import executor as warm_start_base
from vaetfx.models import score_metrics
from vaetfx.shared import serving_folder, storage
from vaetfx.shared.model_name import check_model_name

SERVING_DIR_KEY = 'serving_dir'
MODEL_NAME_KEY = 'model_name'
KEEP_VERSIONS_KEY = 'keep_versions'
CODE_FINGERPRINT_KEY = 'code_fingerprint'
# The static part of every pushed version's provenance record (a JSON object): pipeline name,
# model kind and hyperparameters, code fingerprint, data folder; the executor adds the rest.
PROVENANCE_KEY = 'provenance'
EVALUATION_KEY = 'model_evaluation'
TRAIN_EXAMPLES_KEY = 'train_examples'
# Custom properties of the PushedModel: 1 when its model was already served and nothing was
# copied; the version a new push replaced as the served one; the foreign entries left alone.
ALREADY_SERVED_KEY = 'already_served'
REPLACED_KEY = 'replaced_version'
ROLLBACK_OF_KEY = 'rollback_of'
FOREIGN_KEY = 'foreign_versions'

STAGING_PREFIX = '.staging-'
RETIRED_PREFIX = '.retired-'
# Only names this Pusher makes are ever cleaned up as leftovers of an interrupted push.
LEFTOVER_NAME = re.compile(r'\.(staging-[0-9a-f]{32}|retired-[0-9]+-[0-9a-f]{32})')
LOCK_FILE = '.push.lock'
# Renames that lose a race to another pusher (on a filesystem flock does not cover) try the
# next number; this many losses in a row is not a race any more.
MAX_PUBLISH_ATTEMPTS = 20


def next_version(existing: List[int], now: float) -> int:
  """Unix seconds, like TFX's Pusher, so a version says when it was pushed, but always above
  every existing version: TF Serving serves the highest number, and a clock set back, two
  pushes within one second or hand-numbered versions (1, 2, 3) must not hide or collide
  with a new push.
  """
  return max([int(now), *(version + 1 for version in existing)])


def _version_numbers(model_dir: str) -> List[int]:
  return [version.number for version in serving_folder.list_versions(model_dir)]


def write_provenance(directory: str, record: Dict[str, Any]):
  io_utils.write_string_file(os.path.join(directory, serving_folder.PROVENANCE_FILE),
                             json.dumps(record, indent=2, sort_keys=True))


def copy_saved_model(model_path: str, destination: str, provenance: Dict[str, Any]):
  """Copies the model, then its provenance record, with saved_model.pb last: loaders treat its
  presence as "complete", so a version that has it has its story too. A provenance record in
  the source (a version being rolled back) is replaced, not copied."""
  source = model_path.rstrip('/')
  saved_model = os.path.join(source, serving_folder.SAVED_MODEL_FILE)
  io_utils.copy_dir(model_path, destination, deny_regex_patterns=[
      f'^{re.escape(saved_model)}$',
      f'^{re.escape(os.path.join(source, serving_folder.PROVENANCE_FILE))}$'])
  write_provenance(destination, provenance)
  if fileio.exists(saved_model):
    io_utils.copy_file(saved_model, os.path.join(destination, serving_folder.SAVED_MODEL_FILE))


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
  """Removes the staging and retired folders of pushes that died; call it holding push_lock.

  Only real folders with the exact names this Pusher makes: a symlink or anything else is
  not this Pusher's, is left alone, and does not stop the push.
  """
  stale = []
  for name in storage.listdir(model_dir):
    path = os.path.join(model_dir, name)
    if not LEFTOVER_NAME.fullmatch(name):
      continue
    if serving_folder.is_link(path) or not os.path.isdir(path):
      logging.warning('Leaving %s alone: not a folder this Pusher made.', path)
      continue
    logging.warning('Removing %s, left by an interrupted push or prune.', name)
    fileio.rmtree(path)
    stale.append(name)
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


def stage(model_path: str, model_dir: str, provenance: Dict[str, Any]) -> str:
  """A complete, flushed copy of the model beside the versions, under a name TF Serving ignores."""
  staging_dir = os.path.join(model_dir, f'{STAGING_PREFIX}{uuid.uuid4().hex}')
  with removed_on_failure(staging_dir):
    copy_saved_model(model_path, staging_dir, provenance)
    fsync_tree(staging_dir)
  return staging_dir


def publish(model_path: str, model_dir: str, provenance: Dict[str, Any]) -> str:
  """Stages the model for the next free version and renames it into place; returns the
  version directory.

  rename(2) onto a version that holds files fails (ENOTEMPTY, EEXIST): another
  push took that number, so a higher one is tried, its provenance record
  rewritten first to name it.
  """
  version = next_version(_version_numbers(model_dir), time.time())
  staging_dir = stage(model_path, model_dir, {**provenance, 'version': version})
  with removed_on_failure(staging_dir):
    for _ in range(MAX_PUBLISH_ATTEMPTS):
      version_dir = os.path.join(model_dir, str(version))
      try:
        os.rename(staging_dir, version_dir)
      except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
          raise
        logging.warning('Version %s was taken by another push; trying a higher one.', version)
        version = max(version + 1, next_version(_version_numbers(model_dir), time.time()))
        write_provenance(staging_dir, {**provenance, 'version': version})
        fsync_path(os.path.join(staging_dir, serving_folder.PROVENANCE_FILE))
        continue
      fsync_path(model_dir)
      return version_dir
    raise RuntimeError(f'{model_dir}: every version number tried was taken by another push '
                       f'({MAX_PUBLISH_ATTEMPTS} attempts)')


def push_in_place(model_path: str, model_dir: str, provenance: Dict[str, Any]) -> str:
  """The remote fallback: saved_model.pb last, and a failed copy removes the partial version."""
  version = next_version(_version_numbers(model_dir), time.time())
  version_dir = os.path.join(model_dir, str(version))
  logging.warning('%s has no atomic rename: copying in place with %s last; TF Serving may see '
                  'the version before it is complete and retry loading it.',
                  version_dir, serving_folder.SAVED_MODEL_FILE)
  with removed_on_failure(version_dir):
    copy_saved_model(model_path, version_dir, {**provenance, 'version': version})
  return version_dir


def push_model(model_path: str, model_dir: str, provenance: Dict[str, Any]) -> str:
  """Pushes the SavedModel at `model_path` with its provenance record as a new version of
  `model_dir`; returns its directory. Hold push_lock around it."""
  if not storage.is_uri(model_dir):
    return publish(model_path, model_dir, provenance)
  return push_in_place(model_path, model_dir, provenance)


def remove_version(model_dir: str, version: int):
  """On local disk the version is first renamed away, so TF Serving sees it vanish at once
  rather than poll a directory that is half deleted, and an interrupted delete leaves
  only a name the next push cleans up. Symlinks are never removed (prune_versions skips them;
  this is the last guard)."""
  version_dir = os.path.join(model_dir, str(version))
  if serving_folder.is_link(version_dir):
    raise ValueError(f'{version_dir} is a symlink; the Pusher never removes one')
  if storage.is_uri(model_dir):
    fileio.rmtree(version_dir)
    return
  retired_dir = os.path.join(model_dir, f'{RETIRED_PREFIX}{version}-{uuid.uuid4().hex}')
  os.rename(version_dir, retired_dir)
  fileio.rmtree(retired_dir)


def prune_versions(model_dir: str, keep_versions: int, pushed_version: int) -> List[int]:
  """Removes all but the newest `keep_versions` of the versions this product wrote; returns the
  removed ones.

  Foreign versions (symlinks, folders without this product's provenance record) are never
  removed and do not count; neither the served version nor `pushed_version` (an older
  version found identical stays) is ever removed. A version that cannot be removed is logged
  and skipped: the push it follows has succeeded already.
  """
  versions = serving_folder.list_versions(model_dir)
  served = serving_folder.served_version(versions)
  own = serving_folder.own_versions(versions)
  protected = {pushed_version, served.number if served else None}
  removed = []
  for version in own[:max(0, len(own) - keep_versions)]:
    if version.number in protected:
      continue
    try:
      remove_version(model_dir, version.number)
    except Exception as e:  # pylint: disable=broad-except
      logging.error('Could not remove old version %s of %s (the push succeeded): %s',
                    version.number, model_dir, e)
    else:
      removed.append(version.number)
  return removed


def _scores(input_dict: Dict[str, List[types.Artifact]]) -> Dict[str, Any]:
  evaluations = input_dict.get(EVALUATION_KEY)
  if not evaluations:
    return {}
  return score_metrics.gated_scores(artifact_utils.get_single_instance(evaluations).uri)


def spans(artifacts: List[types.Artifact]) -> List[int]:
  """The spans of `artifacts` (components/span_window.span_of), sorted."""
  return sorted(span for span in (span_window.span_of(a.mlmd_artifact) for a in artifacts)
                if span is not None)


def _data(input_dict: Dict[str, List[types.Artifact]]) -> Dict[str, Any]:
  """The Examples the model was evaluated on (ExampleGen's: where, their span, its fingerprint
  of the files it read) and the spans it was trained on (the rolling window's)."""
  examples = input_dict.get(standard_component_specs.EXAMPLES_KEY)
  if not examples:
    return {}
  artifact = artifact_utils.get_single_instance(examples)
  data = {'examples_uri': artifact.uri, 'span': span_window.span_of(artifact.mlmd_artifact),
          'splits': artifact_utils.decode_split_names(artifact.split_names),
          'input_fingerprint': artifact.get_string_custom_property('input_fingerprint')}
  train_examples = input_dict.get(TRAIN_EXAMPLES_KEY)
  if train_examples:
    data['train_spans'] = spans(train_examples)
  return data


def _warm_start(input_dict: Dict[str, List[types.Artifact]]) -> Dict[str, Any]:
  """The version the Trainer was given to start from (None: a cold start), and why cold."""
  base_models = input_dict.get(standard_component_specs.BASE_MODEL_KEY)
  if not base_models:
    return {}
  return {warm_start_base.PROVENANCE_ENTRY:
              warm_start_base.provenance_entry(artifact_utils.get_single_instance(base_models))}


def provenance_record(exec_properties: Dict[str, Any], input_dict, run_id: Optional[str],
                      served: Optional[serving_folder.Version],
                      rollback_of: Optional[int]) -> Dict[str, Any]:
  """The pushed version's story (serving_folder.PROVENANCE_FILE): the pipeline's static part
  and what this run knows: when, which run, its scores and data, the version its training
  started from (`warm_start`), what it replaced."""
  static = json.loads(exec_properties.get(PROVENANCE_KEY) or '{}')
  data = {**static.pop('data', {}), **_data(input_dict)}
  return {
      **static,
      'producer': serving_folder.PRODUCER,
      'run_id': run_id or '',
      'pushed_at': serving_folder.pushed_at_now(),
      'scores': _scores(input_dict),
      'data': data,
      **_warm_start(input_dict),
      'replaced': served.number if served else None,
      'rollback_of': rollback_of,
  }


def find_identical(versions: List[serving_folder.Version],
                   model_path: str) -> Optional[serving_folder.Version]:
  """The newest complete folder (never a symlink) holding byte for byte the model, if any."""
  for version in reversed(versions):
    if version.complete and not version.is_link and serving_folder.same_content(
        model_path, version.path):
      return version
  return None


class Executor(base_executor.BaseExecutor):
  """Pushes a model blessed by the Evaluator and, when given, the infra validator, atomically,
  as the newest version, with its provenance record; the PushedModel has TFX's Pusher's
  properties (pushed, pushed_destination, pushed_version) and this Pusher's own.
  """

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    model_name = check_model_name(exec_properties[MODEL_NAME_KEY])
    pushed_model = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.PUSHED_MODEL_KEY])
    if not blessed(input_dict):
      mark_pushed(pushed_model, None)
      return
    model_path = model_to_push(input_dict)
    model_dir = os.path.join(exec_properties[SERVING_DIR_KEY], model_name)
    fileio.makedirs(model_dir)
    with push_lock(model_dir):
      if not storage.is_uri(model_dir):
        remove_stale_staging(model_dir)
      versions = serving_folder.list_versions(model_dir)
      served = serving_folder.served_version(versions)
      identical = find_identical(versions, model_path)
      # As TFX's Pusher does: the artifact keeps its own copy, so it outlives pruning.
      io_utils.copy_dir(model_path, pushed_model.uri)
      already_served = identical is not None and identical is served
      if already_served:
        version_dir = served.path
        logging.info('Version %s already holds this model: nothing copied.', version_dir)
      else:
        rollback_of = identical.number if identical else None
        version_dir = push_model(model_path, model_dir, provenance_record(
            exec_properties, input_dict, self._context and self._context.pipeline_run_id,
            served, rollback_of))
        logging.info('Model pushed to %s%s.', version_dir,
                     f' (the model of version {rollback_of}: a rollback)' if identical else '')
        pushed_model.set_int_custom_property(REPLACED_KEY, served.number if served else -1)
        pushed_model.set_int_custom_property(ROLLBACK_OF_KEY,
                                             -1 if rollback_of is None else rollback_of)
      pushed_model.set_int_custom_property(ALREADY_SERVED_KEY, int(already_served))
      mark_pushed(pushed_model, version_dir)
      removed = prune_versions(model_dir, exec_properties[KEEP_VERSIONS_KEY],
                               int(os.path.basename(version_dir)))
      foreign = [version.describe() for version in serving_folder.list_versions(model_dir)
                 if version.foreign]
      pushed_model.set_string_custom_property(FOREIGN_KEY, json.dumps(foreign))
    if removed:
      logging.info('Removed old versions %s of %s.', removed, model_dir)


def blessed(input_dict: Dict[str, List[types.Artifact]]) -> bool:
  """TFX's Pusher's rule: the ModelBlessing is blessed and, when given, the InfraBlessing too."""
  model_blessing = artifact_utils.get_single_instance(
      input_dict[standard_component_specs.MODEL_BLESSING_KEY])
  if not model_utils.is_model_blessed(model_blessing):
    logging.info('Model on %s was not blessed by the Evaluator.', model_blessing.uri)
    return False
  infra_blessings = input_dict.get(standard_component_specs.INFRA_BLESSING_KEY)
  if infra_blessings and not model_utils.is_infra_validated(
      artifact_utils.get_single_instance(infra_blessings)):
    logging.info('Model was not blessed by the infra validator.')
    return False
  return True


def model_to_push(input_dict: Dict[str, List[types.Artifact]]) -> str:
  """The `model` input's serving model, else the InfraBlessing's warmed-up copy (TFX's Pusher's
  choice: the infra validator's stamped model carries the TF Serving warmup requests)."""
  models = input_dict.get(standard_component_specs.MODEL_KEY)
  if models:
    model = artifact_utils.get_single_instance(models)
    return path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
  infra_blessing = artifact_utils.get_single_instance(
      input_dict[standard_component_specs.INFRA_BLESSING_KEY])
  return path_utils.stamped_model_path(infra_blessing.uri)


def mark_pushed(pushed_model: types.Artifact, version_dir: Optional[str]):
  """TFX's PushedModel properties: pushed 1 with its destination and version, or pushed 0."""
  pushed_model.set_int_custom_property('pushed', int(version_dir is not None))
  if version_dir is not None:
    pushed_model.set_string_custom_property('pushed_destination', version_dir)
    pushed_model.set_string_custom_property('pushed_version', os.path.basename(version_dir))
