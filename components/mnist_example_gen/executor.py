"""MnistExampleGen's executor: MNIST files -> gzipped TFRecords of tf.Examples, one per split.

MNIST's files name their split themselves (train-*, t10k-*, or the x_train /
x_test arrays of mnist.npz), so unlike TFX's file-pattern ExampleGens this one
looks its inputs up by split name. Every split is loaded and checked before
anything is written, so a bad file fails the component and leaves no output.

It writes without a Beam pipeline. MNIST is at most 70,000 images (about 60 MB
of tf.Examples), which one process serializes in bulk in well under a second;
TFX's Beam path (a Python tf.Example per image, a Reshuffle, Beam's gzip sink)
spent about 8 s on the same 32,699 images, mostly in per-element Python and
Beam overhead (profiled with py-spy, see README "The data half against stock
TFX"). The output is what TFX's ExampleGen writes: one gzipped TFRecord file of
serialized tf.Examples per split under `Split-<name>/`, and the artifact's
split names and payload format, so every downstream component reads it as any
ExampleGen's. FileBasedExampleGen requires a BeamExecutorSpec, which accepts
any executor; this one is a plain BaseExecutor, because BaseBeamExecutor's
constructor packages TFX as an sdist for remote Beam workers whenever Beam
arguments are set (a copy of TFX's tree and a `setup.py sdist` subprocess,
7-9 s per component measured under a load of 8-9 on 2 cores), which an
executor without a Beam pipeline never uses.
"""
import os
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import numpy as np
import tensorflow as tf
from absl import logging
from google.protobuf import struct_pb2
from tfx import types
from tfx.components.example_gen import utils, write_split
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from vaetfx.shared import mnist_files
from vaetfx.shared.examples import GZIP_LEVEL, serialize_examples

# Images serialized per batch: bounds the int64 copy of the pixels (about 63 MB).
CHUNK_SIZE = 10000
FILE_NAME = write_split.DEFAULT_FILE_NAME + '-00000-of-00001.gz'


def digits_from_custom_config(exec_properties: Dict[str, Any]) -> Tuple[int, ...]:
  """The digits to keep (empty: all), from the CustomConfig Struct the component packs."""
  serialized = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
  if not serialized:
    return ()
  custom_config = example_gen_pb2.CustomConfig()
  proto_utils.json_to_proto(serialized, custom_config)
  config = struct_pb2.Struct()
  custom_config.custom_config.Unpack(config)
  return tuple(int(d) for d in config['digits']) if 'digits' in config else ()


def load_kept_split(input_base: str, split: str,
                    digits: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
  """One checked split's images and labels, only those of `digits` (all when empty)."""
  images, labels = mnist_files.load_split(input_base, split)
  if digits:
    kept = np.isin(labels, digits)
    if not kept.any():
      raise mnist_files.MnistFormatError(
          f'{input_base}: split {split!r} has no images of digits {list(digits)}')
    images, labels = images[kept], labels[kept]
  return images, labels


def split_folder(input_base: str, pattern: str) -> str:
  """The folder a split's resolved pattern names ('span-3/*' -> <input_base>/span-3).

  The driver has already filled `{SPAN}` in, so the executor reads the span it resolved.
  """
  folder, files = os.path.split(pattern)
  if files != '*':
    raise mnist_files.MnistFormatError(
        f'{input_base}: split pattern {pattern!r} must name a folder then \'*\' '
        f'(MNIST\'s own file names say which file is which split)')
  return os.path.join(input_base, folder) if folder else input_base


def _serialized_chunks(images: np.ndarray, labels: np.ndarray) -> Iterator[List[bytes]]:
  for start in range(0, len(images), CHUNK_SIZE):
    yield serialize_examples(images[start:start + CHUNK_SIZE],
                             labels[start:start + CHUNK_SIZE])


def write_examples(path: str, images: np.ndarray, labels: np.ndarray):
  """Writes one gzipped TFRecord file of the split's tf.Examples."""
  options = tf.io.TFRecordOptions(compression_type='GZIP', compression_level=GZIP_LEVEL)
  with tf.io.TFRecordWriter(path, options) as writer:
    for chunk in _serialized_chunks(images, labels):
      for record in chunk:
        writer.write(record)


class Executor(base_executor.BaseExecutor):
  """Writes MNIST's train files to the `train` split and its t10k files to `eval`."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    input_config, output_config = example_gen_pb2.Input(), example_gen_pb2.Output()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
                              input_config)
    proto_utils.json_to_proto(exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY],
                              output_config)
    input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    digits = digits_from_custom_config(exec_properties)
    split_names = utils.generate_output_split_names(input_config, output_config)
    folders = {split.name: split_folder(input_base, split.pattern) for split in input_config.splits}
    splits = {name: load_kept_split(folders[name], name, digits) for name in split_names}
    examples = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.EXAMPLES_KEY])
    examples.split_names = artifact_utils.encode_split_names(split_names)
    for name, (images, labels) in splits.items():
      split_uri = artifact_utils.get_split_uri([examples], name)
      tf.io.gfile.makedirs(split_uri)
      write_examples(os.path.join(split_uri, FILE_NAME), images, labels)
      logging.info('MnistExampleGen: %s split: %d images written', name, len(images))
    examples_utils.set_payload_format(
        examples, exec_properties.get(standard_component_specs.OUTPUT_DATA_FORMAT_KEY,
                                      example_gen_pb2.FORMAT_TF_EXAMPLE))
