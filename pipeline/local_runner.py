"""Runs the pipeline with TFX's LocalDagRunner on Beam, printing one line per component."""
import contextlib
import sys
import time
from typing import Iterator, List

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.orchestration.portable import launcher

from vaetfx.components.drift_check.executor import DataDrifted
from vaetfx.pipeline import code_fingerprint, configs
from vaetfx.pipeline import pipeline as pipeline_def
from vaetfx.pipeline.run_summary import ComponentRun, RunSummary, summarize


def _was_cached(component_launcher: launcher.Launcher, execution_id: int) -> bool:
  with component_launcher._mlmd_connection as mlmd:  # pylint: disable=protected-access
    [execution] = mlmd.store.get_executions_by_id([execution_id])
  return execution.last_known_state == metadata_store_pb2.Execution.CACHED


def _one_line(error: Exception) -> str:
  message = str(error).strip().splitlines()
  return f'{type(error).__name__}: {message[0]}' if message else type(error).__name__


@contextlib.contextmanager
def component_progress(total: int, out=sys.stdout) -> Iterator[List[ComponentRun]]:
  """Prints each component as it starts and ends, with its wall time; yields the timings.

  LocalDagRunner has no callbacks and its own log lines vanish once Transform
  has reset absl's verbosity, so this wraps the launcher it calls per component.
  """
  runs: List[ComponentRun] = []
  launch = launcher.Launcher.launch

  def timed_launch(self):
    name = self._pipeline_node.node_info.id  # pylint: disable=protected-access
    print(f'[{len(runs) + 1}/{total}] {name:<30} running ...', file=out, flush=True)
    start = time.perf_counter()
    try:
      execution_info = launch(self)
    except Exception as e:
      runs.append(ComponentRun(name, time.perf_counter() - start, False, error=_one_line(e)))
      outcome = 'stopped' if isinstance(e, DataDrifted) else 'FAILED'
      print(f'[{len(runs)}/{total}] {name:<30} {outcome} after {runs[-1].seconds:.1f} s: '
            f'{runs[-1].error}', file=out, flush=True)
      raise
    execution_id = execution_info.execution_id if execution_info else None
    cached = execution_id is None or _was_cached(self, execution_id)
    run = ComponentRun(name, time.perf_counter() - start, cached, execution_id)
    runs.append(run)
    print(f'[{len(runs)}/{total}] {name:<30} {"cached" if run.cached else "done"} '
          f'in {run.seconds:.1f} s', file=out, flush=True)
    return execution_info

  launcher.Launcher.launch = timed_launch
  try:
    yield runs
  finally:
    launcher.Launcher.launch = launch


def metadata_connection(config: configs.PipelineConfig):
  return tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path)


def build_pipeline(config: configs.PipelineConfig) -> tfx.dsl.Pipeline:
  return pipeline_def.create_pipeline(config, code_fingerprint.component_fingerprints(),
                                      metadata_connection_config=metadata_connection(config))


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
  types = {t.id: t.name for t in store.get_execution_types_by_id(
      list({e.type_id for e in running}))}
  return [types[e.type_id].rsplit('.', 1)[-1] for e in running]


def run(config: configs.PipelineConfig, out=sys.stdout) -> RunSummary:
  """Runs the whole pipeline locally; returns each component's wall time and the outcome.

  A failure in an optional component (the report, which runs after the push) is
  in the summary; any other failure is raised. Raises Interrupted on Ctrl-C,
  once the interrupted executions are CANCELED, and
  serving_folder.IncomparableServedModel (from ServedModelImporter, the first
  component) when the served model cannot be the gate's baseline. Drift with
  --on-drift stop (DriftCheck's DataDrifted) is an outcome, not an error: the
  summary carries its result and says the run stopped.
  """
  pipeline = build_pipeline(config)
  store = metadata_store.MetadataStore(metadata_connection(config))
  before = _last_execution_id(store)
  with component_progress(len(pipeline.components), out) as runs:
    try:
      tfx.orchestration.LocalDagRunner().run(pipeline)
    except KeyboardInterrupt:
      raise Interrupted(cancel_running(store, before), runs) from None
    except DataDrifted as e:
      summary = summarize(store, runs)
      summary.drift, summary.drift_stopped = e.result, True
      return summary
    except Exception:  # pylint: disable=broad-except
      if not (runs and runs[-1].error and runs[-1].component in pipeline_def.OPTIONAL_COMPONENTS):
        raise
  return summarize(store, runs)
