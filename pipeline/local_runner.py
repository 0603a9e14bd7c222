"""Runs the pipeline with TFX's LocalDagRunner on Beam, printing one line per component."""
import contextlib
import dataclasses
import sys
import time
from typing import Iterator, List

from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx
from tfx.orchestration.portable import launcher

from vaetfx.pipeline import configs
from vaetfx.pipeline import pipeline as pipeline_def


@dataclasses.dataclass
class ComponentRun:
  component: str
  seconds: float
  cached: bool


def _was_cached(component_launcher: launcher.Launcher, execution_info) -> bool:
  if execution_info is None:
    return True
  with component_launcher._mlmd_connection as mlmd:  # pylint: disable=protected-access
    [execution] = mlmd.store.get_executions_by_id([execution_info.execution_id])
  return execution.last_known_state == metadata_store_pb2.Execution.CACHED


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
    print(f'[{len(runs) + 1}/{total}] {name:<20} running ...', file=out, flush=True)
    start = time.perf_counter()
    execution_info = launch(self)
    run = ComponentRun(name, time.perf_counter() - start, _was_cached(self, execution_info))
    runs.append(run)
    print(f'[{len(runs)}/{total}] {name:<20} {"cached" if run.cached else "done"} '
          f'in {run.seconds:.1f} s', file=out, flush=True)
    return execution_info

  launcher.Launcher.launch = timed_launch
  try:
    yield runs
  finally:
    launcher.Launcher.launch = launch


def build_pipeline(config: configs.PipelineConfig) -> tfx.dsl.Pipeline:
  return pipeline_def.create_pipeline(
      **config.create_pipeline_args(),
      metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
          config.metadata_path))


def run(config: configs.PipelineConfig, out=sys.stdout) -> List[ComponentRun]:
  """Runs the whole pipeline locally and returns each component's wall time."""
  pipeline = build_pipeline(config)
  with component_progress(len(pipeline.components), out) as runs:
    tfx.orchestration.LocalDagRunner().run(pipeline)
  return runs
