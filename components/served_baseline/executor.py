"""The served model as the gate's baseline: ServedModelImporter's and the Evaluator's executors.

ServedModelImporter finds, when it runs, the version TF Serving serves from
`<serving_dir>/<model_name>` (serving_folder.served_version: the newest
complete one, whoever pushed it) and copies it into its Model artifact, in the
layout TFX's Evaluator reads (`<uri>/Format-Serving/`), so the Evaluator
compares the candidate with it in the same run, on the candidate's held-out
split. The artifact's custom properties say which version it is
(`served_version`, -1 when nothing is served) and its provenance record.

What cannot be compared stops the run here, before training, with one line
(serving_folder.IncomparableServedModel): a symlink or a model this product
did not push, or a model of another kind. `on_incomparable='floor'` gates on
the floor alone instead, and says so in the log.

The Evaluator's executor is TFX's, except that an empty baseline (nothing
served, or not comparable with 'floor') is dropped from its inputs: TFX then
gates on the value thresholds only, as on a first run.
"""
import json
import os
from typing import Any, Dict, List

from absl import logging
from tfx import types
from tfx.components.evaluator import executor as evaluator_executor
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import io_utils
from tfx.utils import path_utils

from vaetfx.shared import serving_folder

SERVING_DIR_KEY = 'serving_dir'
MODEL_NAME_KEY = 'model_name'
SCORE_KEY = 'score_key'
ON_INCOMPARABLE_KEY = 'on_incomparable'
ON_INCOMPARABLE_CHOICES = ('stop', 'floor')
BASELINE_MODEL_KEY = 'baseline_model'
# Custom properties of the baseline Model.
SERVED_VERSION_KEY = 'served_version'
SERVED_PATH_KEY = 'served_path'
PROVENANCE_KEY = 'provenance'
NOT_COMPARED_KEY = 'not_compared'  # Why a served model is not the baseline ('floor').
NOTHING_SERVED = -1


def has_served_model(baseline: types.Artifact) -> bool:
  return baseline.get_int_custom_property(SERVED_VERSION_KEY) != NOTHING_SERVED


class Executor(base_executor.BaseExecutor):
  """Copies the served version into the baseline Model artifact, or marks that there is none."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    baseline = artifact_utils.get_single_instance(output_dict[BASELINE_MODEL_KEY])
    model_dir = os.path.join(exec_properties[SERVING_DIR_KEY], exec_properties[MODEL_NAME_KEY])
    baseline.set_int_custom_property(SERVED_VERSION_KEY, NOTHING_SERVED)
    try:
      served = serving_folder.comparable_baseline(model_dir, exec_properties[SCORE_KEY])
    except serving_folder.IncomparableServedModel as e:
      if exec_properties[ON_INCOMPARABLE_KEY] != 'floor':
        raise
      logging.warning('%s; gating on the floor alone, as asked.', e)
      baseline.set_string_custom_property(NOT_COMPARED_KEY, str(e))
      return
    if served is None:
      logging.info('%s serves no model: the gate has no baseline.', model_dir)
      return
    io_utils.copy_dir(served.path, path_utils.serving_model_dir(baseline.uri))
    baseline.set_int_custom_property(SERVED_VERSION_KEY, served.number)
    baseline.set_string_custom_property(SERVED_PATH_KEY, served.path)
    baseline.set_string_custom_property(PROVENANCE_KEY, json.dumps(served.provenance))
    logging.info('Baseline: version %d served from %s.', served.number, model_dir)


class EvaluatorExecutor(evaluator_executor.Executor):
  """TFX's Evaluator, given a ServedModelImporter's baseline: an empty one is no baseline."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]],
         exec_properties: Dict[str, Any]) -> None:
    baselines = input_dict.get(standard_component_specs.BASELINE_MODEL_KEY)
    if baselines and not has_served_model(artifact_utils.get_single_instance(baselines)):
      input_dict = {key: value for key, value in input_dict.items()
                    if key != standard_component_specs.BASELINE_MODEL_KEY}
    super().Do(input_dict, output_dict, exec_properties)
