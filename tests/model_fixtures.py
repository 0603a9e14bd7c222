"""The Trainer's real inputs and outputs, built from the synthetic digits, for tests of every folder.

write_transformed_mnist() writes what ExampleGen and Transform write in the
pipeline: raw tf.Examples, a genuine TFTransformOutput directory (TFT's Beam
AnalyzeAndTransformDataset over models/preprocessing.py) and the transformed
examples, in TFX's Split-<name> layout, with the raw metadata Transform also
keeps (transform_graph/metadata/). train_tiny_model() runs the Trainer's
run_fn on them for a few steps, so the exported SavedModel is the real thing.
"""
import dataclasses
import os
from typing import Optional

import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tfx.components.trainer import fn_args_utils
from tfx.components.util import tfxio_utils
from tfx.types import artifact_utils
from tfx.types import standard_artifacts

from vaetfx.models import preprocessing
from vaetfx.models import trainer
from vaetfx.models.hparams import TrainingHparams
from vaetfx.shared import features
from vaetfx.shared.examples import to_example

RAW_FEATURE_SPEC = {
    features.IMAGE_KEY: tf.io.FixedLenFeature([features.NUM_PIXELS], tf.int64),
    features.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
}
SPLITS = (features.TRAIN_SPLIT, features.EVAL_SPLIT)
# Two epochs of 7 batches on 200 images: seconds, not minutes, yet a real export.
TINY_HPARAMS = TrainingHparams(latent_dim=2, epochs=2, batch_size=32, eval_samples=2)
# Seed 003's configuration but for the epochs: the autoencoder's batch 50, Adam 1e-3.
TINY_AUTOENCODER_HPARAMS = TrainingHparams(model='ae', latent_dim=2, epochs=2)


@dataclasses.dataclass(frozen=True)
class TransformedMnist:
  raw_examples_dir: str  # ExampleGen's output: Split-train/, Split-eval/ of gzipped tf.Examples
  transform_graph_dir: str  # Transform's transform_graph: a TFTransformOutput directory
  transformed_examples_dir: str  # Transform's transformed_examples, same layout


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  serving_model_dir: str  # the exported SavedModel
  model_run_dir: str  # TensorBoard summaries and history.json
  hparams: TrainingHparams


def _raw_instances(images: np.ndarray, labels: np.ndarray):
  return [{features.IMAGE_KEY: image.reshape(-1).astype(np.int64), features.LABEL_KEY: int(label)}
          for image, label in zip(images, labels)]


def _write_split(pcoll, directory: str, split: str, prefix: str, encode):
  path = os.path.join(directory, f'Split-{split}', prefix)
  return (pcoll
          | f'Encode{prefix}[{split}]' >> beam.Map(encode)
          | f'Write{prefix}[{split}]' >> beam.io.WriteToTFRecord(
              path, file_name_suffix='.gz', num_shards=1))


def write_transformed_mnist(directory: str, splits) -> TransformedMnist:
  """Runs TFT over `splits` ({'train': (images, labels), 'eval': ...}) as TFX's Transform would."""
  result = TransformedMnist(*(os.path.join(directory, name) for name in (
      'examples', 'transform_graph', 'transformed_examples')))
  raw_metadata = tft.DatasetMetadata.from_feature_spec(RAW_FEATURE_SPEC)
  with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=os.path.join(directory, 'tmp')):
    raw = {split: pipeline | f'Create[{split}]' >> beam.Create(_raw_instances(*splits[split]))
           for split in SPLITS}
    (train, transformed_metadata), transform_fn = (
        (raw[features.TRAIN_SPLIT], raw_metadata)
        | tft_beam.AnalyzeAndTransformDataset(preprocessing.preprocessing_fn))
    evaluation, _ = ((raw[features.EVAL_SPLIT], raw_metadata), transform_fn) | tft_beam.TransformDataset()
    transform_fn | tft_beam.WriteTransformFn(result.transform_graph_dir)  # pylint: disable=expression-not-assigned
    raw_metadata | 'WriteRawMetadata' >> tft_beam.WriteMetadata(  # pylint: disable=expression-not-assigned
        os.path.join(result.transform_graph_dir, tft.TFTransformOutput.RAW_METADATA_DIR), pipeline)
    transformed_coder = tft.coders.ExampleProtoCoder(transformed_metadata.schema)
    for split, pcoll in ((features.TRAIN_SPLIT, train), (features.EVAL_SPLIT, evaluation)):
      _write_split(pcoll, result.transformed_examples_dir, split, 'transformed_examples',
                   transformed_coder.encode)
      _write_split(raw[split], result.raw_examples_dir, split, 'data_tfrecord',
                   lambda instance: to_example(instance[features.IMAGE_KEY],
                                               instance[features.LABEL_KEY]))
  return result


def examples_artifact(uri: str) -> standard_artifacts.Examples:
  examples = standard_artifacts.Examples()
  examples.uri = uri
  examples.split_names = artifact_utils.encode_split_names(list(SPLITS))
  return examples


def fake_fn_args(transformed: TransformedMnist, output_dir: str, hparams: TrainingHparams,
                 base_model: Optional[str] = None) -> fn_args_utils.FnArgs:
  """The FnArgs TFX's Trainer executor would pass run_fn for these artifacts (base_model: the
  SavedModel of its `base_model` input)."""
  examples = examples_artifact(transformed.transformed_examples_dir)
  split_pattern = lambda split: os.path.join(examples.uri, f'Split-{split}', '*')
  return fn_args_utils.FnArgs(
      working_dir=os.path.join(output_dir, 'working'),
      train_files=[split_pattern(features.TRAIN_SPLIT)],
      eval_files=[split_pattern(features.EVAL_SPLIT)],
      transform_graph_path=transformed.transform_graph_dir,
      transform_output=transformed.transform_graph_dir,
      data_accessor=fn_args_utils.DataAccessor(
          tf_dataset_factory=tfxio_utils.get_tf_dataset_factory_from_artifact([examples], []),
          record_batch_factory=tfxio_utils.get_record_batch_factory_from_artifact([examples], []),
          data_view_decode_fn=None),
      serving_model_dir=os.path.join(output_dir, 'Format-Serving'),
      model_run_dir=os.path.join(output_dir, 'model_run'),
      custom_config=hparams.to_custom_config(),
      base_model=base_model,
  )


def train_tiny_model(transformed: TransformedMnist, output_dir: str,
                     hparams: TrainingHparams = TINY_HPARAMS,
                     base_model: Optional[str] = None) -> TrainedModel:
  """run_fn for a few steps on the synthetic digits: an exported model with every signature."""
  fn_args = fake_fn_args(transformed, output_dir, hparams, base_model)
  trainer.run_fn(fn_args)
  return TrainedModel(fn_args.serving_model_dir, fn_args.model_run_dir, hparams)
