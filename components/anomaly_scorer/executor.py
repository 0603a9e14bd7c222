"""The scorer's executor: a split of examples -> the same examples with their score added.

What TFX's BulkInferrer wrote for this pipeline (each example plus one float
feature, the model's score, in gzipped TFRecords under `Split-<name>/` of
`output_examples`), through scoring.py, the code `vaetfx score` runs. As there,
a Beam element is a chunk of CHUNK_SIZE examples, never one example: each input
file's records are read a chunk at a time (shared/tfrecords.py: tf.data's end of
file sometimes cost a fresh process seconds), the model scores them in batches,
the score is appended to each serialized example without parsing it
(shared/examples.py), and each chunk becomes one output file.
Beam's own TFRecord source and sink, one element per example, measured slower
(docs/measurements.md, "Batch scoring").
"""
import itertools
import os
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import apache_beam as beam
import numpy as np
import tensorflow as tf
from tfx import types
from tfx.dsl.components.base import base_beam_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, path_utils

from vaetfx.components.anomaly_scorer import scoring
from vaetfx.shared import examples, tfrecords

SPLIT_KEY = 'split'
SCORE_KEY_KEY = 'score_key'
CODE_FINGERPRINT_KEY = 'code_fingerprint'
CHUNK_SIZE = 2000  # examples per Beam element and per output file


def read_chunks(path: str) -> Iterator[Tuple[str, List[bytes]]]:
  """A TFRecord file's records (gzipped if its name ends in .gz), CHUNK_SIZE at a time, each
  with the name of the output file it becomes."""
  stem = os.path.basename(path).split('.')[0]
  records = tfrecords.read_records(path)
  for index in itertools.count():
    chunk = list(itertools.islice(records, CHUNK_SIZE))
    if not chunk:
      return
    yield f'{stem}-{index:05d}.gz', chunk


def write_scored(name: str, serialized: Sequence[bytes], scores: np.ndarray, split_dir: str,
                 score: str):
  """One gzipped TFRecord file of the examples with their score; a retried chunk rewrites it."""
  options = tf.io.TFRecordOptions(compression_type='GZIP',
                                  compression_level=examples.GZIP_LEVEL)
  with tf.io.TFRecordWriter(os.path.join(split_dir, name), options) as writer:
    for record in examples.with_float_feature(serialized, score, scores):
      writer.write(record)


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
    input_files = sorted(fileio.glob(io_utils.all_files_pattern(input_uri)))
    if not input_files:
      raise FileNotFoundError(f'{input_uri}: no example files to score')
    output = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.OUTPUT_EXAMPLES_KEY])
    output.split_names = artifact_utils.encode_split_names([split])
    split_dir = artifact_utils.get_split_uri([output], split)
    fileio.makedirs(split_dir)
    with self._make_beam_pipeline() as pipeline:
      _ = (pipeline
           | 'ExampleFiles' >> beam.Create(input_files)
           | 'ReadChunks' >> beam.FlatMap(read_chunks)
           | 'Score' >> beam.ParDo(scoring.ScoreBatches(model_path, score))
           | 'WriteScored' >> beam.Map(lambda scored: write_scored(*scored, split_dir, score)))
