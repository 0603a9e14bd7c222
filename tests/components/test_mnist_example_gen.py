"""MnistExampleGen's executor, run as the launcher runs it, on drawn digits."""
import os

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import message
from tfx.components.util import examples_utils
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import proto_utils

from tests import artifacts, synthetic_mnist
from vaetfx.components.mnist_example_gen import executor, mnist_files
from vaetfx.components.mnist_example_gen.component import MnistExampleGen


def _run_executor(input_base, output_uri, digits=()):
  component = MnistExampleGen(input_base=input_base, digits=digits)
  exec_properties = {
      key: proto_utils.proto_to_json(value) if isinstance(value, message.Message) else value
      for key, value in component.exec_properties.items()
  }
  examples = standard_artifacts.Examples()
  examples.uri = output_uri
  executor.Executor().Do({}, {'examples': [examples]}, exec_properties)
  return examples


def _decode(example):
  feature = example.features.feature
  image = np.array(feature['image'].int64_list.value, np.int64).reshape(28, 28)
  return image, feature['label'].int64_list.value[0]


def test_writes_train_and_eval_splits_with_every_image(tmp_path, mnist_idx_dir, mnist_splits):
  examples = _run_executor(mnist_idx_dir, str(tmp_path / 'out'))
  assert artifact_utils.decode_split_names(examples.split_names) == ['train', 'eval']
  for split in ('train', 'eval'):
    written = sorted((_decode(e) for e in artifacts.read_examples(examples.uri, split)),
                     key=lambda pair: pair[0].tobytes())
    images, labels = mnist_splits[split]
    expected = sorted(zip(images.astype(np.int64), labels), key=lambda pair: pair[0].tobytes())
    assert len(written) == len(images)
    for (got_image, got_label), (image, label) in zip(written, expected):
      np.testing.assert_array_equal(got_image, image)
      assert got_label == label
    assert os.listdir(os.path.join(examples.uri, f'Split-{split}')) == [executor.FILE_NAME]
  assert examples_utils.get_payload_format(examples) == example_gen_pb2.FORMAT_TF_EXAMPLE


def test_bulk_serialization_equals_a_tf_example_built_field_by_field():
  rng = np.random.default_rng(17)
  images = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)  # every byte value, 2-byte varints too
  labels = rng.integers(0, 10, 50, dtype=np.uint8)
  for image, label, record in zip(images, labels, executor.serialize_examples(images, labels)):
    expected = tf.train.Example(features=tf.train.Features(feature={
        'image': tf.train.Feature(int64_list=tf.train.Int64List(value=image.reshape(-1).tolist())),
        'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
    }))
    assert tf.train.Example.FromString(record) == expected


def test_reads_mnist_from_a_non_local_uri(tmp_path, mnist_splits, ram_fileio_root):
  """On Kubeflow --data-root is gs://; ram:// too is reached only through fileio.

  mnist.npz rather than IDX files: TensorFlow's ram:// says `x` exists when `x.gz` does
  (it matches prefixes), which GCS does not; the gs:// Kubeflow test reads the IDX files.
  """
  npz_dir = tmp_path / 'npz'
  synthetic_mnist.write_mnist_npz(str(npz_dir), mnist_splits)
  input_base = f'{ram_fileio_root}/mnist_npz'
  fileio.makedirs(input_base)
  fileio.copy(str(npz_dir / mnist_files.NPZ_FILE), f'{input_base}/{mnist_files.NPZ_FILE}')
  examples = _run_executor(input_base, str(tmp_path / 'out'))
  for split in ('train', 'eval'):
    labels = sorted(_decode(e)[1] for e in artifacts.read_examples(examples.uri, split))
    assert labels == sorted(mnist_splits[split][1].tolist())


def test_npz_input_gives_the_same_examples(tmp_path, mnist_splits):
  npz_dir = tmp_path / 'npz'
  synthetic_mnist.write_mnist_npz(str(npz_dir), mnist_splits)
  examples = _run_executor(str(npz_dir), str(tmp_path / 'out'))
  labels = sorted(_decode(e)[1] for e in artifacts.read_examples(examples.uri, 'eval'))
  assert labels == sorted(mnist_splits['eval'][1].tolist())


def test_digits_filter_applies_to_both_splits(tmp_path, mnist_idx_dir, mnist_splits):
  examples = _run_executor(mnist_idx_dir, str(tmp_path / 'out'), digits=(1, 5, 6))
  for split in ('train', 'eval'):
    labels = [_decode(e)[1] for e in artifacts.read_examples(examples.uri, split)]
    assert set(labels) == {1, 5, 6}
    assert len(labels) == int(np.isin(mnist_splits[split][1], [1, 5, 6]).sum())


def test_bad_input_fails_before_writing_anything(tmp_path, mnist_splits):
  data_dir = synthetic_mnist.write_mnist_idx(str(tmp_path / 'data'), mnist_splits)
  labels_path = os.path.join(data_dir, 't10k-labels-idx1-ubyte.gz')
  with open(labels_path, 'wb') as f:
    f.write(b'not gzip at all')
  output_uri = tmp_path / 'out'
  with pytest.raises(mnist_files.MnistFormatError, match='t10k-labels-idx1-ubyte.gz: named .gz'):
    _run_executor(data_dir, str(output_uri))
  assert not output_uri.exists() or not any(output_uri.rglob('*.gz'))
