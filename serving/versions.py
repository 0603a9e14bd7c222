"""The versions of one model: TF Serving's file-system poller and availability-preserving manager.

TF Serving watches `<base_path>/`, treats every integer-named subdirectory as a
version, aspires the ones its version policy picks (by default the latest
one), loads new aspired versions and unloads the rest, but never unloads the
last available version before an aspired one is available, so requests do not
fail while a new version loads. Names that are not integers (the Pusher's
staging directories) are ignored, which makes a rename into place atomic.
"""
import dataclasses
import logging
import threading
import time
from typing import Callable, Dict, List, Mapping, Optional, Set

import grpc
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2, model_pb2

from vaetfx.serving import servable as servable_lib
from vaetfx.serving import defaults, status, warmup
from vaetfx.serving.version_policy import VersionPolicy
from vaetfx.shared import storage

State = get_model_status_pb2.ModelVersionStatus.State

log = logging.getLogger(__name__)


def requested_version(model_spec: model_pb2.ModelSpec, labels: Mapping[str, int]) -> Optional[int]:
  """The version a ModelSpec names (None: the latest), as TF Serving's ServerCore resolves it."""
  if not model_spec.name:
    raise status.invalid_argument('ModelSpec has no name specified.')
  choice = model_spec.WhichOneof('version_choice')
  if choice == 'version':
    return model_spec.version.value
  if choice == 'version_label':
    if model_spec.version_label not in labels:
      raise status.invalid_argument(
          f'Unrecognized servable version label: {model_spec.version_label}')
    return labels[model_spec.version_label]
  return None


def describe_request(name: str, version: Optional[int]) -> str:
  """ServableRequest::DebugString, which TF Serving's NOT_FOUND messages quote."""
  return f'Latest({name})' if version is None else f'Specific({name}, {version})'


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
  """TF Serving's --max_num_load_retries and --load_retry_interval_micros: a version that fails
  to load (often one still being copied in) is tried again this many times, this far apart."""
  max_retries: int = defaults.MAX_LOAD_RETRIES
  interval_seconds: float = defaults.LOAD_RETRY_SECONDS

  def __post_init__(self):
    if self.max_retries < 0 or self.interval_seconds < 0:
      raise ValueError(f'{self}: retries and their interval must not be negative')


@dataclasses.dataclass
class VersionStatus:
  """What GetModelStatus reports of a version; kept after unloading, as in TF Serving's monitor."""
  state: int
  error: Optional[status.ServingError] = None
  failed_loads: int = 0
  next_attempt: float = 0.0  # time.monotonic() before which a failed load is not retried.


class ModelManager:
  """Polls one model's base path and keeps the versions its policy aspires loaded."""

  def __init__(self, name: str, base_path: str, policy: VersionPolicy = VersionPolicy(),
               labels: Optional[Mapping[str, int]] = None,
               poll_seconds: float = defaults.POLL_SECONDS,
               retry: RetryPolicy = RetryPolicy(),
               loader: Callable[[str, int, str], servable_lib.Servable] = warmup.load_warmed_up):
    self.name = name
    self.base_path = base_path
    self.policy = policy
    self.labels = dict(labels or {})
    self._poll_seconds = poll_seconds
    self._retry = retry
    self._loader = loader
    # Replaced, never mutated, so request threads read it without a lock.
    self._available: Dict[int, servable_lib.Servable] = {}
    self._statuses: Dict[int, VersionStatus] = {}
    self._statuses_lock = threading.Lock()
    self._stopping = threading.Event()
    self._thread: Optional[threading.Thread] = None

  def start(self):
    """Loads what is on disk now (TF Serving does before it opens its port), then keeps polling."""
    self.poll()
    if self._poll_seconds > 0:
      self._thread = threading.Thread(target=self._poll_loop, name=f'poll-{self.name}',
                                      daemon=True)
      self._thread.start()

  def stop(self):
    self._stopping.set()
    if self._thread:
      self._thread.join()

  def _poll_loop(self):
    while not self._stopping.wait(self._poll_seconds):
      try:
        self.poll()
      except Exception:  # pylint: disable=broad-except
        log.exception('Polling %s failed; serving what is loaded', self.base_path)

  def poll(self):
    """One pass: load new aspired versions (newest first), then unload what is no longer aspired."""
    if not storage.isdir(self.base_path):  # Keeps what is loaded, as TF Serving does.
      log.warning('Could not find base path %s for servable %s', self.base_path, self.name)
      return
    on_disk = storage.version_dirs(self.base_path)
    aspired = self.policy.aspired(on_disk)
    self._forget_failures(on_disk)
    for version in sorted(aspired - set(self._available), reverse=True):
      self._load(version, on_disk[version])
    self._unload(aspired)

  def _forget_failures(self, on_disk: Mapping[int, str]):
    """A version that failed and left the disk gets fresh attempts if it is pushed again."""
    with self._statuses_lock:
      for version, record in self._statuses.items():
        if version not in on_disk:
          record.failed_loads, record.next_attempt = 0, 0.0

  def _set_state(self, version: int, state: int, error: Optional[status.ServingError] = None):
    with self._statuses_lock:
      record = self._statuses.setdefault(version, VersionStatus(state))
      record.state, record.error = state, error

  def _due(self, version: int) -> bool:
    """Never tried, or failed with retries left whose interval has passed."""
    with self._statuses_lock:
      record = self._statuses.get(version)
      return not record or (record.failed_loads <= self._retry.max_retries
                            and time.monotonic() >= record.next_attempt)

  def _load(self, version: int, path: str):
    if not self._due(version):
      return
    self._set_state(version, State.LOADING)
    log.info('Loading servable version %s %s from %s', self.name, version, path)
    try:
      loaded = self._loader(self.name, version, path)
    except Exception as e:  # pylint: disable=broad-except
      self._failed(version, e)
      return
    self._available = {**self._available, version: loaded}
    self._set_state(version, State.AVAILABLE)
    log.info('Successfully loaded servable version %s %s', self.name, version)

  def _failed(self, version: int, error: Exception):
    """Retries stay LOADING, as in TF Serving's LoaderHarness; giving up is END with the error."""
    code = (status.code_from_number(error.error_code) if isinstance(error, tf.errors.OpError)
            else grpc.StatusCode.UNKNOWN)
    with self._statuses_lock:
      record = self._statuses[version]
      record.failed_loads += 1
      record.error = status.ServingError(code, str(error))
      record.next_attempt = time.monotonic() + self._retry.interval_seconds
      attempts, retries_left = record.failed_loads, self._retry.max_retries - record.failed_loads
      record.state = State.LOADING if retries_left >= 0 else State.END
    if retries_left >= 0:
      log.warning('Loading servable version %s %s failed (attempt %d of %d), retrying in %g s: '
                  '%s', self.name, version, attempts, self._retry.max_retries + 1,
                  self._retry.interval_seconds, error)
    else:
      log.error('Giving up on servable version %s %s after %d failed loads: %s', self.name,
                version, attempts, error)

  def _unload(self, aspired: Set[int]):
    """Availability preserving: the newest unaspired version serves until an aspired one does."""
    unaspired = sorted(set(self._available) - aspired)
    if aspired and not aspired & set(self._available):
      unaspired = unaspired[:-1]
    for version in unaspired:
      self._set_state(version, State.UNLOADING)
      self._available = {v: s for v, s in self._available.items() if v != version}
      self._set_state(version, State.END)
      log.info('Unloaded servable version %s %s', self.name, version)

  def servable(self, version: Optional[int]) -> Optional[servable_lib.Servable]:
    """The given loaded version, or the latest loaded one for None; None if there is none."""
    available = self._available
    if version is None:
      return available[max(available)] if available else None
    return available.get(version)

  @property
  def available_versions(self) -> List[int]:
    return sorted(self._available)

  def statuses(self, version: Optional[int] = None) -> Dict[int, VersionStatus]:
    """Every version seen (or just `version`), as TF Serving's GetModelStatus lists them."""
    with self._statuses_lock:
      if version is None:
        return {v: dataclasses.replace(s) for v, s in sorted(self._statuses.items())}
      record = self._statuses.get(version)
      return {version: dataclasses.replace(record)} if record else {}
