"""DriftCheck's driver: finds the previous span's Examples in ML Metadata when the component runs.

ExampleGen gives its Examples TFX's `span` (components/spans.py). The previous span is the
newest Examples this pipeline's ExampleGen node wrote (its node context in ML
Metadata) with the largest span below the new data's; the driver puts its URI
and span into the `previous_span` execution property, so it is also in TFX's
cache key. None is found for the first span, for a folder without spans (span
0), or on Kubeflow, which runs no custom driver: the executor then compares the
labels with the served model's data instead. TFX's resolvers would find the
same artifacts, but Kubeflow's open-source backend refuses resolver tasks.
"""
import json
from typing import Optional

from ml_metadata.proto import metadata_store_pb2
from tfx.dsl.components.base import base_driver
from tfx.orchestration import data_types_utils
from tfx.orchestration.portable import data_types
from tfx.proto.orchestration import driver_output_pb2
from tfx.types import artifact_utils

from vaetfx.components import span_window
from vaetfx.components.drift_check import executor

NODE_CONTEXT_TYPE = 'node'  # TFX's context of one pipeline node: '<pipeline>.<node id>'


def previous_span(store, node_context: str, span: int) -> Optional[metadata_store_pb2.Artifact]:
  """The newest live Examples of the node with the largest span below `span`, or None."""
  context = store.get_context_by_type_and_name(NODE_CONTEXT_TYPE, node_context)
  if context is None:
    return None
  examples_type = store.get_artifact_type('Examples')
  earlier = [artifact for artifact in store.get_artifacts_by_context(context.id)
             if artifact.type_id == examples_type.id
             and artifact.state == metadata_store_pb2.Artifact.LIVE
             and span_window.span_of(artifact) is not None and span_window.span_of(artifact) < span]
  return max(earlier, key=lambda a: (span_window.span_of(a), a.id), default=None)


class PreviousSpanDriver(base_driver.BaseDriver):
  """Adds `previous_span` (JSON: examples_uri and span, or '') to the execution properties."""

  def run(self, execution_info: data_types.ExecutionInfo) -> driver_output_pb2.DriverOutput:
    examples = artifact_utils.get_single_instance(execution_info.input_dict[executor.EXAMPLES_KEY])
    producer = execution_info.pipeline_node.inputs.inputs[
        executor.EXAMPLES_KEY].channels[0].producer_node_query.id
    with self._metadata_handle as mlmd:
      found = previous_span(mlmd.store, f'{execution_info.pipeline_info.id}.{producer}',
                            span_window.span_of(examples.mlmd_artifact) or 0)
    record = json.dumps({'examples_uri': found.uri, 'span': span_window.span_of(found)}) if found else ''
    output = driver_output_pb2.DriverOutput()
    data_types_utils.set_metadata_value(output.exec_properties[executor.PREVIOUS_SPAN_KEY], record)
    return output
