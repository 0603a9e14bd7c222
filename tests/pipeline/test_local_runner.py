"""pipeline/local_runner.py's progress lines and cancellation, read from and written to ML Metadata
as TFX's launcher leaves it (an execution per component, in a `node` context
`<pipeline>.<node id>`), without running a pipeline: tests/pipeline/test_local_pipeline.py runs
the whole one."""
import io
import os
import subprocess
import sys

import pytest
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from vaetfx.components.drift_check.executor import DataDrifted, DriftResult
from vaetfx.pipeline import local_runner

Execution = metadata_store_pb2.Execution


@pytest.fixture
def store(tmp_path):
  config = metadata_store_pb2.ConnectionConfig()
  config.sqlite.filename_uri = str(tmp_path / 'metadata.db')
  config.sqlite.connection_mode = config.sqlite.READWRITE_OPENCREATE
  return metadata_store.MetadataStore(config)


class Launcher:
  """Records executions the way TFX's launcher does, one node at a time."""

  def __init__(self, store):
    self.store = store
    self.node_type = store.put_context_type(metadata_store_pb2.ContextType(name='node'))
    self.pipeline_type = store.put_context_type(metadata_store_pb2.ContextType(name='pipeline'))
    [self.pipeline] = store.put_contexts([metadata_store_pb2.Context(
        type_id=self.pipeline_type, name='vae-mnist')])

  def start(self, node: str, state=Execution.RUNNING, component_class: str = '') -> Execution:
    """component_class: the class's name when it differs from the node's id (.with_id())."""
    type_id = self.store.put_execution_type(metadata_store_pb2.ExecutionType(
        name=f'tfx.components.{component_class or node}'))
    context = self.store.get_context_by_type_and_name('node', f'vae-mnist.{node}')
    [context] = ([context.id] if context else self.store.put_contexts(
        [metadata_store_pb2.Context(type_id=self.node_type, name=f'vae-mnist.{node}')]))
    [execution_id] = self.store.put_executions([Execution(type_id=type_id,
                                                          last_known_state=state)])
    self.store.put_attributions_and_associations(
        [], [metadata_store_pb2.Association(context_id=c, execution_id=execution_id)
             for c in (context, self.pipeline)])
    [execution] = self.store.get_executions_by_id([execution_id])
    return execution

  def end(self, execution: Execution, state) -> None:
    execution.last_known_state = state
    self.store.put_executions([execution])


def test_each_component_is_printed_as_it_starts_and_ends_with_its_state(store):
  launcher = Launcher(store)
  out = io.StringIO()
  progress = local_runner.ComponentProgress(store, 0, 3, out)
  cached = launcher.start('MnistExampleGen', state=Execution.CACHED)
  trainer = launcher.start('Trainer')
  progress.poll()
  assert out.getvalue().splitlines() == [
      '[1/3] MnistExampleGen                cached',
      '[2/3] Trainer                        running ...']
  progress.poll()  # Nothing changed: nothing printed again.
  assert len(out.getvalue().splitlines()) == 2
  launcher.end(trainer, Execution.COMPLETE)
  pusher = launcher.start('AtomicPusher')
  progress.poll()
  lines = out.getvalue().splitlines()
  assert lines[2].startswith('[2/3] Trainer                        done in ')
  assert lines[3] == '[3/3] AtomicPusher                   running ...'
  launcher.end(pusher, Execution.FAILED)
  progress.poll()
  assert len(out.getvalue().splitlines()) == 4  # Printed by failed(), which knows why.
  progress.failed(RuntimeError('disk full\nmore detail'))
  assert out.getvalue().splitlines()[-1].startswith('[3/3] AtomicPusher                   FAILED')
  assert out.getvalue().endswith(': RuntimeError: disk full\n')
  assert [(run.component, run.cached, run.execution_id, run.error) for run in progress.runs] == [
      ('MnistExampleGen', True, cached.id, ''), ('Trainer', False, trainer.id, ''),
      ('AtomicPusher', False, pusher.id, 'RuntimeError: disk full')]
  assert all(run.seconds >= 0 for run in progress.runs)


def test_a_drift_check_that_stops_the_run_is_printed_as_stopped(store):
  launcher = Launcher(store)
  out = io.StringIO()
  progress = local_runner.ComponentProgress(store, 0, 2, out)
  launcher.end(launcher.start('DriftCheck'), Execution.FAILED)
  progress.poll()
  progress.failed(DataDrifted(DriftResult(threshold=0.1, label_l_infinity=0.5,
                                          labels_against={'what': 'the previous span, 1'})))
  assert out.getvalue().splitlines()[-1].startswith(
      '[1/2] DriftCheck                     stopped after ')
  assert out.getvalue().endswith(': DataDrifted: DRIFTED: label distribution (L-infinity) above '
                                 '0.1; labels L-infinity 0.500 against the previous span, 1\n')

def test_only_executions_after_the_runs_start_are_reported(store):
  launcher = Launcher(store)
  earlier = launcher.start('Trainer', state=Execution.COMPLETE)
  progress = local_runner.ComponentProgress(store, earlier.id, 1, io.StringIO())
  with progress:
    launcher.end(launcher.start('Trainer'), Execution.COMPLETE)
  assert [run.execution_id for run in progress.runs] == [earlier.id + 1]


def test_ctrl_c_leaves_no_execution_running(store):
  launcher = Launcher(store)
  done = launcher.start('MnistExampleGen', state=Execution.COMPLETE)
  running = launcher.start('Transform', component_class='SpanTransform')
  assert local_runner.cancel_running(store, 0) == ['Transform']
  states = {e.id: e.last_known_state for e in store.get_executions()}
  assert states == {done.id: Execution.COMPLETE, running.id: Execution.CANCELED}


def test_the_local_runner_imports_neither_vertex_ai_nor_kfp():
  """`vaetfx run` runs on the local runner only: `tfx.v1` would import Vertex AI's SDK (about a
  third of the run's imports, docs/measurements.md) and kfp for extensions it never uses."""
  imported = subprocess.run(
      [sys.executable, '-c', 'import sys; import vaetfx.pipeline.local_runner; '
       'print(sorted(m for m in ("google.cloud.aiplatform", "kfp", "tfx.v1") if m in sys.modules))'],
      capture_output=True, text=True, check=True, env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'})
  assert imported.stdout.strip() == '[]'
