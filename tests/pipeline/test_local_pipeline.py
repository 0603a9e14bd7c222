"""The pipeline end to end on drawn digits, as TFX's MNIST end-to-end test does it:
every component runs once, a re-run recomputes nothing, and bad input stops at ExampleGen."""
import io
import os

import numpy as np
import pytest
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import metadata

from tests import artifacts, synthetic_mnist
from vaetfx.components.mnist_example_gen import mnist_files
from vaetfx.models import preprocessing
from vaetfx.pipeline import configs, local_runner

Execution = metadata_store_pb2.Execution


def _store(config):
  connection = metadata.sqlite_metadata_connection_config(config.metadata_path)
  return metadata_store.MetadataStore(connection)


def _output_uri(store, component_id, type_name):
  """The latest artifact of `type_name` that `component_id` wrote (its URI names the component)."""
  uris = [a.uri for a in sorted(store.get_artifacts_by_type(type_name), key=lambda a: a.id)
          if f'{os.sep}{component_id}{os.sep}' in a.uri]
  return uris[-1]


@pytest.fixture(scope='module')
def first_run(tmp_path_factory, mnist_idx_dir):
  config = configs.PipelineConfig(data_dir=mnist_idx_dir,
                                  output_dir=str(tmp_path_factory.mktemp('pipeline')))
  out = io.StringIO()
  runs = local_runner.run(config, out=out)
  return config, runs, out.getvalue()


def test_every_component_runs_once_with_progress_lines(first_run):
  config, runs, printed = first_run
  pipeline = local_runner.build_pipeline(config)
  component_ids = [component.id for component in pipeline.components]
  assert [run.component for run in runs] == component_ids
  assert not any(run.cached for run in runs)
  executions = _store(config).get_executions()
  assert len(executions) == len(component_ids)
  assert all(e.last_known_state == Execution.COMPLETE for e in executions)
  for index, component_id in enumerate(component_ids, start=1):
    assert f'[{index}/{len(component_ids)}] {component_id}' in printed


def test_transformed_pixels_are_the_numpy_binarization(first_run, mnist_splits):
  config, _, _ = first_run
  store = _store(config)
  transformed = artifacts.read_examples(_output_uri(store, 'Transform', 'Examples'), 'eval')
  pixels = np.array([e.features.feature['pixels'].float_list.value for e in transformed])
  assert set(np.unique(pixels)) == {0.0, 1.0}
  images = mnist_splits['eval'][0].reshape(len(pixels), -1)
  expected = (images / 255.0 >= 0.5).astype(np.float32)
  # Beam does not keep record order: compare the images sorted the same way.
  def in_order(rows):
    return rows[np.lexsort(rows.T)]
  np.testing.assert_array_equal(in_order(pixels), in_order(expected))


def test_statistics_schema_and_anomalies_are_written(first_run):
  config, _, _ = first_run
  store = _store(config)
  schema_uri = _output_uri(store, 'SchemaGen', 'Schema')
  assert os.path.exists(os.path.join(schema_uri, 'schema.pbtxt'))
  for component_id, type_name in (('StatisticsGen', 'ExampleStatistics'),
                                  ('ExampleValidator', 'ExampleAnomalies')):
    uri = _output_uri(store, component_id, type_name)
    assert {'Split-train', 'Split-eval'} <= set(os.listdir(uri))


def test_rerun_recomputes_nothing(first_run):
  config, _, _ = first_run
  before = len(_store(config).get_executions())
  runs = local_runner.run(config, out=io.StringIO())
  assert all(run.cached for run in runs)
  new_executions = _store(config).get_executions()[before:]
  assert len(new_executions) == before
  assert all(e.last_known_state == Execution.CACHED for e in new_executions)


def test_bad_input_fails_at_example_gen_with_nothing_published(tmp_path, mnist_splits):
  data_dir = synthetic_mnist.write_mnist_idx(str(tmp_path / 'data'), mnist_splits)
  with open(os.path.join(data_dir, 'train-images-idx3-ubyte.gz'), 'wb') as f:
    f.write(b'')
  config = configs.PipelineConfig(data_dir=data_dir, output_dir=str(tmp_path / 'out'))
  with pytest.raises(mnist_files.MnistFormatError, match='train-images-idx3-ubyte.gz: the file is empty'):
    local_runner.run(config, out=io.StringIO())
  store = _store(config)
  [execution] = store.get_executions()
  assert execution.last_known_state == Execution.FAILED
  assert not [a for a in store.get_artifacts() if a.state == metadata_store_pb2.Artifact.LIVE]
