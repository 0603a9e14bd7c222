"""Spans and the rolling window, run as `vaetfx run` runs them, on drawn digits, up to the Trainer.

Run 1 finds span-1/ and span-2/ with --train-spans 2 on an empty ML Metadata: it ingests span
1's data half, then span 2's, and trains on both. Then span-3/ arrives; run 2 recomputes the
data half for span 3 only (span 2's comes from the cache, span 1 is left out of the window)
and trains on spans 2 and 3. Run 3 changes nothing and recomputes nothing.
"""
import dataclasses
import io
import json
import os
from typing import Dict, List, Tuple

import pytest
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from tests import synthetic_mnist
from tests.pipeline.test_local_pipeline import TINY_TRAINING
from vaetfx.pipeline import configs, local_runner, mnist_source, run_summary
from vaetfx.pipeline import pipeline as pipeline_def

Execution = metadata_store_pb2.Execution
DATA_HALF = ('MnistExampleGen', 'StatisticsGen', 'SchemaGen', 'ExampleValidator', 'Transform')
# Each span its own counts, so a count says which spans were read.
TRAIN_COUNTS = {1: 20, 2: 24, 3: 28}
EVAL_COUNTS = {1: 10, 2: 11, 3: 12}


def _write_span(data_dir: str, span: int):
  synthetic_mnist.write_mnist_idx(
      os.path.join(data_dir, f'span-{span}'),
      synthetic_mnist.make_splits(TRAIN_COUNTS[span], EVAL_COUNTS[span], seed=10 * span))


def _config(data_dir: str, output_dir: str, train_spans: int) -> configs.PipelineConfig:
  """As `vaetfx run --train-spans K` builds it: the newest span and the window's older ones."""
  span, older = mnist_source.choose_spans(data_dir, 0, train_spans)
  return configs.PipelineConfig(
      data_dir=data_dir, output_dir=output_dir, hparams=dataclasses.replace(TINY_TRAINING, epochs=1),
      data_pattern=mnist_source.data_pattern(data_dir, 0), span=span, train_spans=train_spans,
      older_spans=older)


def _newest_execution_id(store) -> int:
  newest = store.get_executions(list_options=metadata_store.ListOptions(
      limit=1, order_by=metadata_store.OrderByField.ID, is_asc=False))
  return newest[0].id if newest else 0


def _run_to_trainer(config) -> Tuple[Tuple[int, int], str]:
  """Runs up to the Trainer; ((its first and last execution ids), what it printed, then the
  summary's text)."""
  store = _store(config)
  first = _newest_execution_id(store) + 1
  out = io.StringIO()
  summary = local_runner.run(config, out=out, last_components=('Trainer', 'ExampleValidator'))
  return (first, _newest_execution_id(store)), out.getvalue() + run_summary.format_summary(summary)


def _store(config):
  return metadata_store.MetadataStore(local_runner.metadata_connection(config))


def _component(store, execution) -> str:
  """The node id of the component the execution ran (its `node` context: <pipeline>.<id>)."""
  [node] = [c for c in store.get_contexts_by_execution(execution.id) if c.type == 'node']
  return node.name.rsplit('.', 1)[-1]


def _executions(store, run) -> List[metadata_store_pb2.Execution]:
  """The executions of a run: (first id, last id)."""
  first, last = run
  return store.get_executions(list_options=metadata_store.ListOptions(
      filter_query=f'id >= {first} AND id <= {last}'))


def _data_half_executions(store, run) -> Dict[str, List[Tuple[str, List[int]]]]:
  """{data-half component: [(state, spans of what it read or wrote), ...]} of a run's
  executions, in order."""
  found: Dict[str, List[Tuple[str, List[int]]]] = {name: [] for name in DATA_HALF}
  executions = _executions(store, run)
  for execution in sorted(executions, key=lambda e: e.id):
    name = _component(store, execution)
    if name in found:
      ids = [e.artifact_id for e in store.get_events_by_execution_ids([execution.id])]
      found[name].append((Execution.State.Name(execution.last_known_state),
                          _examples_spans(store, ids)))
  return found


def _examples_spans(store, artifact_ids) -> List[int]:
  examples_type = store.get_artifact_type('Examples')
  return sorted({a.custom_properties['span'].int_value
                 for a in store.get_artifacts_by_id(artifact_ids)
                 if a.type_id == examples_type.id and 'span' in a.custom_properties})


def _trainer(store, run):
  [trainer] = [e for e in _executions(store, run) if _component(store, e) == 'Trainer']
  return trainer


def _trainer_inputs(store, trainer) -> List[metadata_store_pb2.Artifact]:
  events = [e for e in store.get_events_by_execution_ids([trainer.id])
            if e.type == metadata_store_pb2.Event.INPUT and e.path.steps[0].key == 'examples']
  return sorted(store.get_artifacts_by_id([e.artifact_id for e in events]), key=lambda a: a.id)


def _trained_images(store, trainer) -> int:
  events = [e for e in store.get_events_by_execution_ids([trainer.id])
            if e.type == metadata_store_pb2.Event.OUTPUT and e.path.steps[0].key == 'model_run']
  [model_run] = store.get_artifacts_by_id([e.artifact_id for e in events])
  with open(os.path.join(model_run.uri, 'history.json'), encoding='utf-8') as f:
    return json.load(f)['num_train_examples']


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """The three runs, in order: {name: (config, (first, last execution id), printed)}."""
  data_dir = str(tmp_path_factory.mktemp('spans'))
  output_dir = str(tmp_path_factory.mktemp('outputs'))
  for span in (1, 2):
    _write_span(data_dir, span)
  done = {}
  config = _config(data_dir, output_dir, train_spans=2)
  done['first'] = (config, *_run_to_trainer(config))
  _write_span(data_dir, 3)
  config = _config(data_dir, output_dir, train_spans=2)
  done['new_span'] = (config, *_run_to_trainer(config))
  done['unchanged'] = (config, *_run_to_trainer(config))
  return done


def test_the_window_ingests_its_older_span_first_on_an_empty_metadata(runs):
  config, run, printed = runs['first']
  assert (config.span, config.older_spans) == (2, (1,))
  assert 'Span 1, for the rolling window of 2 spans: its data half' in printed
  executions = _data_half_executions(_store(config), run)
  assert {name: [state for state, _ in found] for name, found in executions.items()} == {
      name: ['COMPLETE', 'COMPLETE'] for name in DATA_HALF}
  assert [spans for _, spans in executions['MnistExampleGen']] == [[1], [2]]
  assert [spans for _, spans in executions['Transform']] == [[1], [2]]


def test_the_trainer_gets_the_transformed_examples_of_the_newest_k_spans(runs):
  for run, spans in (('first', [1, 2]), ('new_span', [2, 3])):
    config, run_ids, _ = runs[run]
    store = _store(config)
    trainer = _trainer(store, run_ids)
    inputs = _trainer_inputs(store, trainer)
    assert [a.custom_properties['span'].int_value for a in inputs] == spans
    assert all(f'{os.sep}Transform{os.sep}' in a.uri for a in inputs)
    assert _trained_images(store, trainer) == sum(TRAIN_COUNTS[span] for span in spans)


def test_the_summary_says_which_spans_trained_and_which_gated(runs):
  assert "Data: trained on spans 1, 2, gated on span 2's eval split" in runs['first'][2]
  assert "Data: trained on spans 2, 3, gated on span 3's eval split" in runs['new_span'][2]


def test_a_new_span_computes_the_data_half_for_that_span_only(runs):
  config, run, _ = runs['new_span']
  executions = _data_half_executions(_store(config), run)
  # Span 2 (the window's older span) comes from the cache; span 3 is computed, once.
  for name in DATA_HALF:
    assert [state for state, _ in executions[name]] == ['CACHED', 'COMPLETE'], name
  assert [spans for _, spans in executions['MnistExampleGen']] == [[2], [3]]
  assert [spans for _, spans in executions['Transform']] == [[2], [3]]


def test_an_unchanged_rerun_recomputes_nothing(runs):
  config, run, _ = runs['unchanged']
  store = _store(config)
  executions = _data_half_executions(store, run)
  assert all(state == 'CACHED' for found in executions.values() for state, _ in found)
  assert _trainer(store, run).last_known_state == Execution.CACHED


def test_a_span_named_or_found_newest_has_one_cache_key(tmp_path):
  for span in (1, 2):
    _write_span(str(tmp_path), span)
  assert mnist_source.choose_spans(str(tmp_path), 0, 1) == (2, ())
  assert mnist_source.choose_spans(str(tmp_path), 2, 1) == (2, ())
  assert mnist_source.choose_spans(str(tmp_path), 1, 3) == (1, ())
  assert mnist_source.choose_spans(str(tmp_path), 2, 3) == (2, (1,))


def test_the_data_half_is_the_pipelines_own_components():
  config = configs.PipelineConfig(data_dir='/data', output_dir='/out', span=2, train_spans=2,
                                  data_pattern=configs.SPAN_PATTERN)
  pipeline = local_runner.span_data_half(config, 1)
  assert [c.id for c in pipeline.components] == list(DATA_HALF)
  whole = local_runner.build_pipeline(config)
  assert pipeline_def.SPAN_WINDOW in [c.id for c in whole.components]


def test_the_data_half_of_a_windowed_run_compiles_without_the_window(tmp_path):
  """Transform is ordered before the window; cut after Transform, that edge must go too."""
  from tfx.dsl.compiler import compiler  # pylint: disable=g-import-not-at-top
  config = configs.PipelineConfig(data_dir='/data', output_dir=str(tmp_path), span=2,
                                  train_spans=2, data_pattern=configs.SPAN_PATTERN)
  pipeline = local_runner.build_pipeline(config, pipeline_def.DATA_HALF)
  compiled = compiler.Compiler().compile(pipeline)
  assert sorted(node.pipeline_node.node_info.id for node in compiled.nodes) == sorted(DATA_HALF)
