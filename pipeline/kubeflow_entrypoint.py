"""What every Kubeflow task runs: TFX's container entrypoint, once its input artifacts have types.

KFP 2.x's open-source driver hands a task the artifacts of upstream tasks with an
empty type schema (kubeflow/pipelines backend/src/v2/metadata/client.go reads
them back from ML Metadata with `Schema: ""`), while TFX 1.16's entrypoint picks
each artifact's class from that schema and fails on the empty one. The compiled
spec already declares every input's type: TFX passes the component's input
definitions as --json_serialized_inputs_spec_args (pipeline spec 2.1). This
fills the missing types from there and runs TFX's entrypoint unchanged, so on
Vertex AI, which sends the types, it changes nothing.
"""
import runpy
import sys
from typing import List

from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

TFX_ENTRYPOINT = 'tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor'
INVOCATION_FLAG = '--json_serialized_invocation_args'
INPUTS_SPEC_FLAG = '--json_serialized_inputs_spec_args'


def _has_type(type_schema: pipeline_spec_pb2.ArtifactTypeSchema) -> bool:
  kind = type_schema.WhichOneof('kind')
  return bool(kind and getattr(type_schema, kind))


def restore_input_types(executor_input_json: str, inputs_spec_json: str) -> str:
  """The executor input with each untyped input artifact given its declared type."""
  executor_input = json_format.Parse(
      executor_input_json, pipeline_spec_pb2.ExecutorInput(), ignore_unknown_fields=True)
  inputs_spec = json_format.Parse(
      inputs_spec_json, pipeline_spec_pb2.ComponentInputsSpec(), ignore_unknown_fields=True)
  for name, artifact_list in executor_input.inputs.artifacts.items():
    if name not in inputs_spec.artifacts:
      continue
    for artifact in artifact_list.artifacts:
      if not _has_type(artifact.type):
        artifact.type.CopyFrom(inputs_spec.artifacts[name].artifact_type)
  return json_format.MessageToJson(executor_input)


def main(argv: List[str]) -> None:
  """Runs TFX's entrypoint on `argv` (its flags, then Beam's), with input types restored."""
  args = list(argv)
  if INPUTS_SPEC_FLAG in args and INVOCATION_FLAG in args:
    invocation = args.index(INVOCATION_FLAG) + 1
    args[invocation] = restore_input_types(args[invocation], args[args.index(INPUTS_SPEC_FLAG) + 1])
  sys.argv = [TFX_ENTRYPOINT, *args]
  runpy.run_module(TFX_ENTRYPOINT, run_name='__main__', alter_sys=True)


if __name__ == '__main__':
  main(sys.argv[1:])
