"""The scorer's executor: a split of examples -> the same examples with their score added.

What TFX's BulkInferrer wrote for this pipeline (the `output_examples` of each
example plus one float feature, the model's score, in gzipped TFRecords under
`Split-<name>/`), through scoring.py, the code `vaetfx score` runs: batches of
examples through the model's `from_examples` signature, and the score appended to
each serialized example without parsing it (shared/examples.py).
"""
import os
from typing import Any, Dict, List

import apache_beam as beam
from tfx import types
from tfx.dsl.components.base import base_beam_executor
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, path_utils

from vaetfx.components.anomaly_scorer import scoring
from vaetfx.shared import examples

SPLIT_KEY = 'split'
SCORE_KEY_KEY = 'score_key'
CODE_FINGERPRINT_KEY = 'code_fingerprint'
# TFX's BulkInferrer's file name, so the output looks as it did.
EXAMPLES_FILE = 'examples'


class Executor(base_beam_executor.BaseBeamExecutor):
  """Scores every example of one split with the Trainer's serving model."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    model = artifact_utils.get_single_instance(input_dict[standard_component_specs.MODEL_KEY])
    model_path = path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model))
    split = exec_properties[SPLIT_KEY]
    score = exec_properties[SCORE_KEY_KEY]
    input_uri = artifact_utils.get_split_uri(input_dict[standard_component_specs.EXAMPLES_KEY],
                                             split)
    output = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.OUTPUT_EXAMPLES_KEY])
    output.split_names = artifact_utils.encode_split_names([split])
    output_path = os.path.join(artifact_utils.get_split_uri([output], split), EXAMPLES_FILE)
    with self._make_beam_pipeline() as pipeline:
      _ = (pipeline
           | 'ReadExamples' >> beam.io.ReadFromTFRecord(io_utils.all_files_pattern(input_uri))
           | 'Batch' >> beam.BatchElements(min_batch_size=scoring.BATCH_SIZE,
                                           max_batch_size=scoring.BATCH_SIZE)
           | 'Unkeyed' >> beam.Map(lambda batch: (None, batch))
           | 'Score' >> beam.ParDo(scoring.ScoreBatches(model_path, score))
           | 'AddScores' >> beam.FlatMapTuple(
               lambda _, batch, scores: examples.with_float_feature(batch, score, scores))
           | 'WriteExamples' >> beam.io.WriteToTFRecord(output_path, file_name_suffix='.gz'))
