"""WarmStartBase's executor: which served version, if any, the Trainer starts from.

The Trainer's `base_model` input is this component's Model artifact: a copy of
a version of `<serving_dir>/<model_name>` in TFX's layout (`<uri>/Format-Serving/`,
which TFX hands run_fn as fn_args.base_model), or an empty artifact for a cold
start. Its custom properties say which version (`base_version`, -1 for none)
and, for a cold start, why (`reason`); the run summary and the Pusher's
provenance record read them.

The base is the served version (serving_folder.served_version) when it can start this
run's model: warm starting is on, it was pushed by this product, it is of the
same kind with the same latent size (its provenance record says so; the
Trainer checks the weights themselves too, models/export.restore_weights).
Except when the served model was trained on this very data (its provenance's
input fingerprint is this run's): starting from it would be more epochs on data
it has seen, so the base is the one it started from itself (its provenance
names it), the start this data got when it arrived.

Caching is the point of that rule and of this component's cache key: the key is
the Examples and the model's kind and size, not the serving folder (no driver
reads it). A run with no new data therefore reuses the decision made when the
data arrived, the Trainer's inputs are unchanged and TFX's cache (KFP's too)
returns its model, however the folder changed since; new data (a new span)
decides again against what is served then. With the cache off, the
same-data rule above makes the same decision from the folder.
"""
import dataclasses
import os
from typing import Any, Dict, List, Optional

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import io_utils
from tfx.utils import path_utils

from vaetfx.shared import serving_folder

SERVING_DIR_KEY = 'serving_dir'
MODEL_NAME_KEY = 'model_name'
KIND_KEY = 'model_kind'
LATENT_DIM_KEY = 'latent_dim'
WARM_START_KEY = 'warm_start'
BASE_MODEL_KEY = 'base_model'
# Custom properties of the base Model, and the provenance record's entry (atomic_pusher).
BASE_VERSION_KEY = 'base_version'
REASON_KEY = 'reason'
PROVENANCE_ENTRY = 'warm_start'
NO_BASE = -1
INPUT_FINGERPRINT_KEY = 'input_fingerprint'  # ExampleGen's, on its Examples


@dataclasses.dataclass(frozen=True)
class Base:
  """The version to start from, or None and why not."""
  version: Optional[serving_folder.Version]
  reason: str = ''

  def describe(self) -> str:
    return (f'warm start from version {self.version.number}' if self.version
            else f'cold start: {self.reason}')


def _model_record(version: serving_folder.Version) -> Dict[str, Any]:
  return version.provenance.get('model', {})


def _mismatch(version: serving_folder.Version, kind: str, latent_dim: int) -> str:
  """Why `version` cannot start a `kind` model of `latent_dim`, or ''."""
  record = _model_record(version)
  if record.get('kind') != kind:
    return (f'version {version.number} is a --model {record.get("kind", "?")}, this run trains '
            f'--model {kind}')
  served_latent = record.get('hparams', {}).get('latent_dim')
  if served_latent != latent_dim:
    return (f'version {version.number} has --latent-dim {served_latent}, this run trains '
            f'{latent_dim}')
  return ''


def _started_from(version: serving_folder.Version,
                  versions: List[serving_folder.Version]) -> Base:
  """What `version` itself started from, by its provenance record, if that is still there."""
  entry = version.provenance.get(PROVENANCE_ENTRY) or {}
  number = entry.get(BASE_VERSION_KEY)
  same_data = f'the served version {version.number} was trained on this same data'
  if number is None or number == NO_BASE:
    return Base(None, f'{same_data}, from scratch, and so is this model')
  found = [each for each in versions if each.number == number and not each.foreign]
  if not found:
    return Base(None, f'{same_data}, from version {number}, which is no longer there')
  return Base(found[0])


def choose_base(model_dir: str, kind: str, latent_dim: int, warm_start: bool,
                input_fingerprint: str) -> Base:
  """The version of `model_dir` this run's Trainer starts from (module docstring)."""
  if not warm_start:
    return Base(None, 'warm starting is off (--no-warm-start)')
  versions = serving_folder.list_versions(model_dir)
  served = serving_folder.served_version(versions)
  if served is None:
    return Base(None, f'{model_dir} serves no model')
  if served.foreign:
    return Base(None, f'{model_dir} serves {served.describe()}, whose weights are not known')
  data = served.provenance.get('data', {})
  if input_fingerprint and data.get(INPUT_FINGERPRINT_KEY) == input_fingerprint:
    base = _started_from(served, versions)
    if base.version is None:
      return base
    served = base.version
  mismatch = _mismatch(served, kind, latent_dim)
  return Base(None, mismatch) if mismatch else Base(served)


def input_fingerprint(examples: List[types.Artifact]) -> str:
  """ExampleGen's fingerprint of the files behind `examples` (several spans: each, in order)."""
  return '\n'.join(example.get_string_custom_property(INPUT_FINGERPRINT_KEY)
                   for example in examples)


def provenance_entry(base_model: types.Artifact) -> Dict[str, Any]:
  """The pushed version's record of its start: the base version (None: cold) and why cold."""
  number = base_model.get_int_custom_property(BASE_VERSION_KEY)
  return {BASE_VERSION_KEY: None if number == NO_BASE else number,
          REASON_KEY: base_model.get_string_custom_property(REASON_KEY)}


class Executor(base_executor.BaseExecutor):
  """Copies the chosen version into the base Model, or leaves it empty with the reason."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    base_model = artifact_utils.get_single_instance(output_dict[BASE_MODEL_KEY])
    model_dir = os.path.join(exec_properties[SERVING_DIR_KEY], exec_properties[MODEL_NAME_KEY])
    base = choose_base(model_dir, exec_properties[KIND_KEY], exec_properties[LATENT_DIM_KEY],
                       bool(exec_properties[WARM_START_KEY]),
                       input_fingerprint(input_dict[standard_component_specs.EXAMPLES_KEY]))
    base_model.set_int_custom_property(BASE_VERSION_KEY,
                                       base.version.number if base.version else NO_BASE)
    base_model.set_string_custom_property(REASON_KEY, base.reason)
    if base.version:
      io_utils.copy_dir(base.version.path, path_utils.serving_model_dir(base_model.uri))
    logging.info('Trainer: %s.', base.describe())
