"""TFX's Transform executor, then each transformed Examples artifact given its input's span.

TFX 1.16's Transform writes transformed Examples without the `span` and
`version` properties ExampleGen put on its input, so nothing downstream can
ask for "the transformed data of spans 3 to 5". The rolling window
(components/span_window.py) resolves transformed Examples by span: each span
is transformed once, in the run that ingested it, and later runs reuse it from
ML Metadata instead of transforming every span of the window again.
"""
from typing import Any, Dict, List

from tfx import types
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.transform import executor as transform_executor
from tfx.types import standard_component_specs

# Custom properties, as TFX's ExampleGen driver sets them (example_gen/utils.py's names).
SPAN_PROPERTIES = (example_gen_utils.SPAN_PROPERTY_NAME, example_gen_utils.VERSION_PROPERTY_NAME)


def copy_spans(examples: List[types.Artifact], transformed: List[types.Artifact]) -> None:
  """Gives the i-th transformed artifact the span and version custom properties (as TFX's
  ExampleGen driver sets them) of the i-th input: Transform writes one transformed artifact
  per input artifact, in order."""
  if len(examples) != len(transformed):
    raise ValueError(f'{len(examples)} Examples in but {len(transformed)} transformed out: '
                     'cannot tell which span each holds')
  for source, target in zip(examples, transformed):
    for name in SPAN_PROPERTIES:
      if source.has_custom_property(name):
        target.set_int_custom_property(name, source.get_int_custom_property(name))


class Executor(transform_executor.Executor):
  """Transform, then copy_spans from the `examples` input to `transformed_examples`."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    super().Do(input_dict, output_dict, exec_properties)
    transformed = output_dict.get(standard_component_specs.TRANSFORMED_EXAMPLES_KEY)
    if transformed:
      copy_spans(input_dict[standard_component_specs.EXAMPLES_KEY], transformed)
