"""Runs the pipeline with TFX's LocalDagRunner on Beam, printing one line per component."""
import dataclasses
import sys
import threading
from typing import List, Optional, Sequence, Set, Tuple

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import metadata
from tfx.orchestration.local.local_dag_runner import LocalDagRunner
from tfx.orchestration.pipeline import Pipeline

from vaetfx.components.drift_check.executor import DataDrifted
from vaetfx.pipeline import code_fingerprint, configs
from vaetfx.pipeline import pipeline as pipeline_def
from vaetfx.pipeline.run_summary import ComponentRun, RunSummary, summarize


def _one_line(error: Exception) -> str:
  message = str(error).strip().splitlines()
  return f'{type(error).__name__}: {message[0]}' if message else type(error).__name__


_FINISHED = {metadata_store_pb2.Execution.COMPLETE: 'done', metadata_store_pb2.Execution.CACHED:
             'cached', metadata_store_pb2.Execution.FAILED: 'FAILED'}
POLL_SECONDS = 0.2


class ComponentProgress:
  """Prints each component as it starts and ends, with its wall time; keeps the timings.

  LocalDagRunner has no callbacks and its own log lines vanish once Transform
  has reset absl's verbosity, but its launcher records each execution in ML
  Metadata as it goes (RUNNING, then COMPLETE, CACHED or FAILED, with creation
  and last-update times), so a thread polls that through ML Metadata's public
  API on a connection of its own; the times printed are ML Metadata's. (Before
  this, the launcher's `launch` was wrapped, which needed TFX's private
  `_pipeline_node` and `_mlmd_connection`.)
  """

  def __init__(self, store: metadata_store.MetadataStore, after_id: int, total: int, out):
    self.runs: List[ComponentRun] = []
    self._store, self._after_id, self._total, self._out = store, after_id, total, out
    self._announced: Set[int] = set()
    self._finished: Set[int] = set()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._poll_until_stopped, daemon=True)

  def __enter__(self) -> 'ComponentProgress':
    self._thread.start()
    return self

  def __exit__(self, *unused_exc_info):
    self._stop.set()
    self._thread.join()
    self.poll()

  def _poll_until_stopped(self):
    while not self._stop.wait(POLL_SECONDS):
      self.poll()

  def poll(self):
    """Prints what changed in ML Metadata since the last look."""
    executions = self._store.get_executions(list_options=metadata_store.ListOptions(
        filter_query=f'id > {self._after_id}', order_by=metadata_store.OrderByField.ID,
        is_asc=True))
    for execution in executions:
      if execution.id in self._finished:
        continue
      if execution.id not in self._announced and execution.last_known_state not in (
          metadata_store_pb2.Execution.CACHED,):
        self._announced.add(execution.id)
        self._print(len(self.runs) + 1, self._component(execution), 'running ...')
      if execution.last_known_state in _FINISHED:
        self._finish(execution)

  def _finish(self, execution: metadata_store_pb2.Execution):
    self._finished.add(execution.id)
    state = _FINISHED[execution.last_known_state]
    seconds = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1e3
    self.runs.append(ComponentRun(self._component(execution), seconds, state == 'cached',
                                  execution.id, error='FAILED' if state == 'FAILED' else ''))
    if state != 'FAILED':  # Printed by failed(), which knows why.
      self._print(len(self.runs), self.runs[-1].component,
                  'cached' if state == 'cached' else f'done in {seconds:.1f} s')

  def failed(self, error: Exception):
    """Names the error on the component ML Metadata recorded as FAILED (or, if the failure came
    before any execution was recorded, on none) and prints it."""
    failed = [run for run in self.runs if run.error]
    if failed:
      failed[-1].error = _one_line(error)
      outcome = 'stopped' if isinstance(error, DataDrifted) else 'FAILED'
      self._print(self.runs.index(failed[-1]) + 1, failed[-1].component,
                  f'{outcome} after {failed[-1].seconds:.1f} s: {failed[-1].error}')

  def _component(self, execution: metadata_store_pb2.Execution) -> str:
    return component_id(self._store, execution)

  def _print(self, number: int, component: str, what: str):
    print(f'[{number}/{self._total}] {component:<30} {what}', file=self._out, flush=True)


def component_id(store: metadata_store.MetadataStore,
                 execution: metadata_store_pb2.Execution) -> str:
  """The node's id (`Transform`), from the execution's node context `<pipeline>.<node id>`; its
  type's name would be the class's (`SpanTransform`), not the id the pipeline gave it."""
  contexts = store.get_contexts_by_execution(execution.id)
  types = {t.id: t.name for t in store.get_context_types_by_id(
      list({c.type_id for c in contexts}))}
  [node] = [c for c in contexts if types[c.type_id] == 'node']
  return node.name.split('.', 1)[1]


def metadata_connection(config: configs.PipelineConfig):
  return metadata.sqlite_metadata_connection_config(config.metadata_path)


def build_pipeline(config: configs.PipelineConfig,
                   last_components: Sequence[str] = ()) -> Pipeline:
  return pipeline_def.create_pipeline(config, code_fingerprint.component_fingerprints(),
                                      metadata_connection_config=metadata_connection(config),
                                      last_components=last_components)


def span_data_half(config: configs.PipelineConfig, span: int) -> Pipeline:
  """The data half (ExampleGen to Transform) of `span`, as the whole pipeline would run it on
  that span: the same components, ids and properties, so the same cache keys. A span ingested
  before, by this or by a whole run, comes back from the cache. (No window: it is downstream.)"""
  return build_pipeline(dataclasses.replace(config, span=span, train_spans=1, older_spans=()),
                        pipeline_def.DATA_HALF)


class Interrupted(Exception):
  """Ctrl-C stopped the run; the executions it left running are CANCELED in ML Metadata."""

  def __init__(self, canceled: List[str], finished: List[ComponentRun]):
    self.canceled = canceled
    self.finished = finished
    self.during = f'during {", ".join(canceled)}' if canceled else 'between components'
    super().__init__(f'interrupted {self.during}')


def _last_execution_id(store: metadata_store.MetadataStore) -> int:
  newest = store.get_executions(list_options=metadata_store.ListOptions(
      limit=1, order_by=metadata_store.OrderByField.ID, is_asc=False))
  return newest[0].id if newest else 0


def cancel_running(store: metadata_store.MetadataStore, after_id: int) -> List[str]:
  """Marks this run's executions still RUNNING (ids above `after_id`) CANCELED; returns their
  components' names.

  The launcher marks an execution FAILED on an exception, but not on
  KeyboardInterrupt, which would leave it RUNNING in ML Metadata for good.
  """
  running = [execution for execution in store.get_executions(
      list_options=metadata_store.ListOptions(filter_query=f'id > {after_id}'))
             if execution.last_known_state == metadata_store_pb2.Execution.RUNNING]
  for execution in running:
    execution.last_known_state = metadata_store_pb2.Execution.CANCELED
  store.put_executions(running)
  return [component_id(store, execution) for execution in running]


def _run_dag(pipeline: Pipeline, config: configs.PipelineConfig,
             store: metadata_store.MetadataStore, before: int,
             out) -> Tuple[List[ComponentRun], Optional[DataDrifted]]:
  """Runs one pipeline with progress lines: the runs of its components, and the drift that
  stopped it (--on-drift stop), an outcome rather than an error. A failure in an optional
  component is in the runs; any other is raised; Ctrl-C raises Interrupted."""
  progress = ComponentProgress(metadata_store.MetadataStore(metadata_connection(config)),
                               _last_execution_id(store), len(pipeline.components), out)
  try:
    with progress:
      LocalDagRunner().run(pipeline)
  except KeyboardInterrupt:
    raise Interrupted(cancel_running(store, before), progress.runs) from None
  except Exception as e:  # pylint: disable=broad-except
    progress.failed(e)
    runs = progress.runs
    if isinstance(e, DataDrifted):
      return runs, e
    if not (runs and runs[-1].error and runs[-1].component in pipeline_def.OPTIONAL_COMPONENTS):
      raise
  return progress.runs, None


def run(config: configs.PipelineConfig, out=sys.stdout,
        last_components: Sequence[str] = ()) -> RunSummary:
  """Runs the whole pipeline locally; returns each component's wall time and the outcome.

  last_components: run only these and what they depend on (pipeline.DATA_HALF: ingest).

  With a rolling window (config.train_spans > 1), the data half of each of the window's
  older spans runs first (config.older_spans; cached when ingested before), so the window
  finds every span in ML Metadata, then the whole pipeline on the newest.

  A failure in an optional component (the report, which runs after the push) is
  in the summary; any other failure is raised. Raises Interrupted on Ctrl-C,
  once the interrupted executions are CANCELED, and
  serving_folder.IncomparableServedModel (from ServedModelImporter, the first
  component) when the served model cannot be the gate's baseline. Drift with
  --on-drift stop (DriftCheck's DataDrifted) is an outcome, not an error: the
  summary carries its result and says the run stopped.
  """
  store = metadata_store.MetadataStore(metadata_connection(config))
  before = _last_execution_id(store)
  for span in config.older_spans:
    print(f'Span {span}, for the rolling window of {config.train_spans} spans: its data half',
          file=out, flush=True)
    _run_dag(span_data_half(config, span), config, store, before, out)
  if config.older_spans:
    print(f'Span {config.span}: the pipeline', file=out, flush=True)
  runs, drifted = _run_dag(build_pipeline(config, last_components), config, store, before, out)
  summary = summarize(store, runs)
  if drifted:
    summary.drift, summary.drift_stopped = drifted.result, True
  return summary
