"""What a TF Serving model folder, `<serving-dir>/<model-name>/`, holds, as TF Serving reads it.

TF Serving's default version policy serves the newest version: the highest
integer-named entry of the model folder, whoever put it there. Every decision
the product makes about pushing (the gate's baseline, "already served",
pruning, rollback) is made against this folder as it is on disk at that
moment, never against one pipeline's ML Metadata. So this module is the one
place that says:

- which entries are versions (integer names), which is served (the newest
  complete one: a folder holding saved_model.pb, or a symlink, which TF Serving
  follows and this product never does), and which are foreign (anything this
  product did not write: no provenance record, or a symlink);
- each version's story, the provenance record the Pusher and `vaetfx rollback`
  write inside the version, under `assets.extra/` where TF Serving ignores it.

It imports no TensorFlow for local folders (`vaetfx models` lists without it);
URIs go through storage, which loads TensorFlow's filesystems for them.
"""
import dataclasses
import datetime
import hashlib
import json
import os
from typing import Dict, List, Optional

from vaetfx.shared import storage

SAVED_MODEL_FILE = 'saved_model.pb'
SAVED_MODEL_FILES = (SAVED_MODEL_FILE, 'saved_model.pbtxt')
PROVENANCE_FILE = os.path.join('assets.extra', 'vaetfx_provenance.json')
PRODUCER = 'vaetfx'


@dataclasses.dataclass(frozen=True)
class Version:
  """One integer-named entry of a model folder, as found on disk."""
  number: int
  path: str
  is_link: bool
  complete: bool  # TF Serving can load it: a symlink, or a folder holding saved_model.pb
  provenance: Optional[dict]  # None: this product did not write it

  @property
  def foreign(self) -> bool:
    return self.is_link or self.provenance is None

  def describe(self) -> str:
    """Why a version is foreign, in words, for summaries and refusals."""
    if self.is_link:
      return f'version {self.number} is a symlink ({self.path})'
    if not self.complete:
      return f'version {self.number} holds no {SAVED_MODEL_FILE}'
    if self.provenance is None:
      return f'version {self.number} was not pushed by vaetfx (no {PROVENANCE_FILE})'
    return f'version {self.number}'


def is_link(path: str) -> bool:
  """Symlinks exist on local disk only; object stores have none."""
  return not storage.is_uri(path) and os.path.islink(path)


def holds_saved_model(directory: str) -> bool:
  return any(storage.exists(os.path.join(directory, name)) for name in SAVED_MODEL_FILES)


def read_provenance(version_dir: str) -> Optional[dict]:
  """The version's provenance record, None when it has none this product wrote."""
  path = os.path.join(version_dir, PROVENANCE_FILE)
  if not storage.exists(path):
    return None
  try:
    with storage.open_file(path, 'rb') as f:
      record = json.loads(f.read())
  except (OSError, ValueError):  # unreadable, or not JSON: not a record this product wrote
    return None
  return record if isinstance(record, dict) and record.get('producer') == PRODUCER else None


def pushed_at_now() -> str:
  """A provenance record's `pushed_at`: UTC, to the second, ISO 8601."""
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def list_versions(model_dir: str) -> List[Version]:
  """Every integer-named entry of the model folder, oldest first; [] when it does not exist.

  Symlinks are listed, never entered: TF Serving would serve one, but this
  product neither reads nor changes what it points at.
  """
  if not storage.isdir(model_dir):
    return []
  found = []
  for name in storage.listdir(model_dir):
    if not storage.VERSION_NAME.fullmatch(name):
      continue
    path = os.path.join(model_dir, name)
    if is_link(path):
      found.append(Version(int(name), path, True, True, None))
    elif storage.isdir(path):
      complete = holds_saved_model(path)
      found.append(Version(int(name), path, False, complete,
                           read_provenance(path) if complete else None))
  return sorted(found, key=lambda version: version.number)


def served_version(versions: List[Version]) -> Optional[Version]:
  """What TF Serving's default policy serves: the newest complete version."""
  complete = [version for version in versions if version.complete]
  return complete[-1] if complete else None


def own_versions(versions: List[Version]) -> List[Version]:
  """The versions this product wrote: real folders with its provenance record."""
  return [version for version in versions if not version.foreign]


def model_files(directory: str) -> Dict[str, str]:
  """{path relative to `directory`: full path} of every file below it but the provenance
  record, which tells a version's story and is not part of its model.

  A URI's listing is checked against the files themselves: an object store's
  listing is built from object names, and TensorFlow's ram:// one names a file
  under a folder with a dot in its name (`assets.extra/x`) as `assets/.extra`.
  """
  root = directory.rstrip('/')
  files = {}
  for current, _, names in storage.walk(root):
    for name in names:
      path = os.path.join(current, name)
      relative = path[len(root) + 1:]
      if relative != PROVENANCE_FILE and (not storage.is_uri(path) or storage.exists(path)):
        files[relative] = path
  return files


def content_digest(directory: str) -> str:
  """SHA-256 over the model's files (names and bytes), the provenance record left out."""
  digest = hashlib.sha256()
  for relative, path in sorted(model_files(directory).items()):
    digest.update(f'{relative}\0{storage.file_sha256(path)}\0'.encode())
  return digest.hexdigest()


def same_content(left: str, right: str) -> bool:
  """True when both trees hold the same model files with the same bytes. Sizes are compared
  first, so a different model is usually told apart without reading it."""
  left_files, right_files = model_files(left), model_files(right)
  if left_files.keys() != right_files.keys() or any(
      storage.size(left_files[name]) != storage.size(right_files[name]) for name in left_files):
    return False
  return all(storage.file_sha256(left_files[name]) == storage.file_sha256(right_files[name])
             for name in left_files)


def served_state(model_dir: str) -> str:
  """A short text that changes whenever what TF Serving serves changes: the served version's
  number and content digest, a symlink's number and target, or 'none'. Drivers put it in
  TFX's cache key, so a cached baseline or push is reused only while it is still true."""
  served = served_version(list_versions(model_dir))
  if served is None:
    return 'none'
  if served.is_link:
    return f'{served.number}:symlink:{os.readlink(served.path)}'
  return f'{served.number}:{content_digest(served.path)}'


def provenance_score_key(provenance: dict) -> str:
  return provenance.get('model', {}).get('score_key', '')


class IncomparableServedModel(ValueError):
  """The served model cannot be the gate's baseline; the message says which and why."""


def comparable_baseline(model_dir: str, score_key: str) -> Optional[Version]:
  """The served version, if it can be compared with a candidate gated on `score_key`; None when
  nothing is served. Raises IncomparableServedModel when something is served that cannot be:
  foreign (a symlink, a model this product did not push) or of another kind (a VAE's ELBO
  against an autoencoder's reconstruction log-likelihood)."""
  served = served_version(list_versions(model_dir))
  if served is None:
    return None
  if served.foreign:
    raise IncomparableServedModel(
        f'{model_dir} serves {served.describe()}: the gate cannot compare with it')
  served_key = provenance_score_key(served.provenance)
  if served_key != score_key:
    kind = served.provenance.get('model', {}).get('kind', '?')
    raise IncomparableServedModel(
        f'{model_dir} serves version {served.number}, a --model {kind} scored by its '
        f'{served_key or "unknown score"}; this run\'s model is scored by its {score_key}, so '
        'the gate cannot compare them and its push would switch the kind TF Serving\'s '
        'clients get')
  return served
