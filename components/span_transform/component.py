"""SpanTransform: TFX's Transform component, run by executor.py so its output keeps spans."""
from tfx.components.transform.component import Transform
from tfx.dsl.components.base import executor_spec

from vaetfx.components.span_transform import executor


class SpanTransform(Transform):
  """TFX's Transform (same properties, inputs and outputs) whose transformed Examples carry the
  span and version of the Examples they were made from."""

  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
