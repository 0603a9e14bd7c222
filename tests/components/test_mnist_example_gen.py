"""MnistExampleGen's executor, run as the launcher runs it, on drawn digits."""
import os
import re

import numpy as np
import pytest
from google.protobuf import message
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.components.example_gen import driver as example_gen_driver
from tfx.components.util import examples_utils
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.utils import proto_utils

from tests import artifacts, synthetic_mnist
from vaetfx.components.mnist_example_gen import executor
from vaetfx.components.mnist_example_gen.component import MnistExampleGen
from vaetfx.shared import mnist_files


def _exec_properties(component):
  return {
      key: proto_utils.proto_to_json(value) if isinstance(value, message.Message) else value
      for key, value in component.exec_properties.items()
  }


def _run_executor(input_base, output_uri, digits=()):
  component = MnistExampleGen(input_base=input_base, digits=digits)
  examples = standard_artifacts.Examples()
  examples.uri = output_uri
  executor.Executor().Do({}, {'examples': [examples]}, _exec_properties(component))
  return examples


def _run_driver_and_executor(output_uri, **component_args):
  """The component's driver resolves span and fingerprint, then its executor runs, as TFX does."""
  component = MnistExampleGen(**component_args)
  exec_properties = component.DRIVER_CLASS(None).resolve_exec_properties(
      _exec_properties(component), None, None)
  examples = standard_artifacts.Examples()
  examples.uri = output_uri
  example_gen_driver.update_output_artifact(exec_properties, examples.mlmd_artifact)
  executor.Executor().Do({}, {'examples': [examples]}, exec_properties)
  return examples, exec_properties


def _labels(examples, split='eval'):
  return sorted(_decode(e)[1] for e in artifacts.read_examples(examples.uri, split))


def _write_spans(data_dir, counts):
  """span-<n>/ folders of IDX files, each with its own number of eval images."""
  for span, count in counts.items():
    synthetic_mnist.write_mnist_idx(os.path.join(data_dir, f'span-{span}'),
                                    synthetic_mnist.make_splits(20, count, seed=span))


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


def test_newest_span_is_ingested_with_tfx_span_property(tmp_path):
  _write_spans(str(tmp_path / 'data'), {1: 11, 2: 12, 10: 13})
  examples, properties = _run_driver_and_executor(
      str(tmp_path / 'out'), input_base=str(tmp_path / 'data'), pattern='span-{SPAN}/*')
  assert len(_labels(examples)) == 13
  assert examples.get_int_custom_property('span') == 10
  assert 'version' not in examples.mlmd_artifact.custom_properties  # no {VERSION}: as TFX's
  assert 'pattern:span-10/*,' in properties['input_fingerprint']


def test_span_n_picks_that_span(tmp_path):
  _write_spans(str(tmp_path / 'data'), {1: 11, 2: 12, 3: 13})
  examples, _ = _run_driver_and_executor(
      str(tmp_path / 'out'), input_base=str(tmp_path / 'data'), pattern='span-{SPAN}/*', span=2)
  assert len(_labels(examples)) == 12
  assert examples.get_int_custom_property('span') == 2


def test_a_missing_span_fails_in_the_driver(tmp_path):
  _write_spans(str(tmp_path / 'data'), {1: 11})
  with pytest.raises(ValueError, match=re.escape('Cannot find matching for split train')):
    _run_driver_and_executor(str(tmp_path / 'out'), input_base=str(tmp_path / 'data'),
                             pattern='span-{SPAN}/*', span=7)


def test_differing_gz_and_plain_twins_stop_example_gen_naming_both(tmp_path, mnist_splits):
  data_dir = synthetic_mnist.write_mnist_idx(str(tmp_path / 'data'), mnist_splits)
  labels = mnist_splits['eval'][1]
  synthetic_mnist.write_file(os.path.join(data_dir, 't10k-labels-idx1-ubyte'),
                             synthetic_mnist.idx_bytes(labels[::-1]), compress=False)
  labels_path = os.path.join(data_dir, 't10k-labels-idx1-ubyte')
  with pytest.raises(mnist_files.MnistFormatError, match=re.escape(
      f'{labels_path} and {labels_path}.gz hold different data')):
    _run_driver_and_executor(str(tmp_path / 'out'), input_base=data_dir)


def test_a_pattern_that_names_files_is_refused(tmp_path, mnist_idx_dir):
  with pytest.raises(mnist_files.MnistFormatError, match=re.escape(
      "split pattern 'span-{SPAN}/*.gz' must name a folder then '*'")):
    executor.split_folder(mnist_idx_dir, 'span-{SPAN}/*.gz')


def test_a_folder_without_spans_is_span_0(tmp_path, mnist_idx_dir, mnist_splits):
  examples, _ = _run_driver_and_executor(str(tmp_path / 'out'), input_base=mnist_idx_dir)
  assert _labels(examples) == sorted(mnist_splits['eval'][1].tolist())
  assert examples.get_int_custom_property('span') == 0


def _rewrite_last_label_keeping_size_and_times(labels_path) -> os.stat_result:
  """Changes the last label of an uncompressed IDX file in place, then restores its times.

  Returns the file's stat from before the rewrite.
  """
  stat = os.stat(labels_path)
  with open(labels_path, 'r+b') as f:
    f.seek(-1, os.SEEK_END)
    last = f.read(1)[0]
    f.seek(-1, os.SEEK_END)
    f.write(bytes([(last + 1) % 10]))
  os.utime(labels_path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
  assert os.stat(labels_path).st_size == stat.st_size
  return stat


def test_fingerprint_changes_with_content_even_when_size_and_mtime_are_kept(tmp_path):
  data_dir = synthetic_mnist.write_mnist_idx(str(tmp_path / 'data'),
                                             synthetic_mnist.make_splits(20, 10), compress=False)
  labels_path = os.path.join(data_dir, 't10k-labels-idx1-ubyte')
  fingerprint = lambda: _run_driver_and_executor(str(tmp_path / 'out'), input_base=data_dir)[1][
      'input_fingerprint']
  before = fingerprint()
  stat = _rewrite_last_label_keeping_size_and_times(labels_path)
  rewritten = fingerprint()
  assert rewritten != before
  os.utime(labels_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5 * 10**9))
  assert fingerprint() == rewritten  # touched, not changed: nothing new to ingest


def _run_pipeline(tmp_path, data_dir, **component_args):
  """A pipeline of MnistExampleGen alone, cached, with ML Metadata under tmp_path."""
  connection = tfx.orchestration.metadata.sqlite_metadata_connection_config(
      str(tmp_path / 'metadata.db'))
  example_gen = MnistExampleGen(input_base=data_dir, **component_args)
  tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
      pipeline_name='spans', pipeline_root=str(tmp_path / 'root'), components=[example_gen],
      enable_cache=True, metadata_connection_config=connection))


def _executions(tmp_path):
  """(state, span of the Examples it output) of each MnistExampleGen execution, in order."""
  store = metadata_store.MetadataStore(tfx.orchestration.metadata.sqlite_metadata_connection_config(
      str(tmp_path / 'metadata.db')))
  [execution_type] = [t for t in store.get_execution_types() if t.name.endswith('MnistExampleGen')]
  runs = []
  for execution in sorted(store.get_executions_by_type(execution_type.name), key=lambda e: e.id):
    outputs = [e.artifact_id for e in store.get_events_by_execution_ids([execution.id])
               if e.type == metadata_store_pb2.Event.OUTPUT]
    [examples] = store.get_artifacts_by_id(outputs)
    runs.append((metadata_store_pb2.Execution.State.Name(execution.last_known_state),
                 examples.custom_properties['span'].int_value))
  return runs


def test_a_new_span_is_a_new_execution_and_an_unchanged_rerun_is_cached(tmp_path):
  data_dir = str(tmp_path / 'data')
  _write_spans(data_dir, {1: 11})
  for _ in range(2):
    _run_pipeline(tmp_path, data_dir, pattern='span-{SPAN}/*')
  _write_spans(data_dir, {2: 12})
  _run_pipeline(tmp_path, data_dir, pattern='span-{SPAN}/*')
  _run_pipeline(tmp_path, data_dir, pattern='span-{SPAN}/*')
  # --span 1 changes the component's range_config, so it is a new execution of the old span.
  _run_pipeline(tmp_path, data_dir, pattern='span-{SPAN}/*', span=1)
  assert _executions(tmp_path) == [('COMPLETE', 1), ('CACHED', 1), ('COMPLETE', 2), ('CACHED', 2),
                                   ('COMPLETE', 1)]


def test_a_same_size_rewrite_with_its_mtime_kept_is_ingested_again(tmp_path):
  """As `cp -p`, `rsync -t` or `tar x` of new data of the same size leaves it."""
  data_dir = synthetic_mnist.write_mnist_idx(str(tmp_path / 'data'),
                                             synthetic_mnist.make_splits(20, 10), compress=False)
  for _ in range(2):
    _run_pipeline(tmp_path, data_dir)
  _rewrite_last_label_keeping_size_and_times(os.path.join(data_dir, 't10k-labels-idx1-ubyte'))
  _run_pipeline(tmp_path, data_dir)
  assert _executions(tmp_path) == [('COMPLETE', 0), ('CACHED', 0), ('COMPLETE', 0)]
