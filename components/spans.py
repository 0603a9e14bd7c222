"""The span of an Examples artifact, as TFX's ExampleGen records it.

TFX's file-based ExampleGen driver writes the span as the artifact's custom
property `span` (an int; older TFX wrote a string), not as the Examples type's
declared `span` property, which stays unset: `artifact.span` reads 0 for every
span. TFX's own SpanRangeStrategy reads the custom property, and so does this.
"""
from typing import Optional

from ml_metadata.proto import metadata_store_pb2

SPAN_PROPERTY = 'span'


def span_of(artifact: metadata_store_pb2.Artifact) -> Optional[int]:
  """The span of an Examples artifact (an ML Metadata proto; a TFX Artifact's
  `.mlmd_artifact`), None when it has none."""
  value = artifact.custom_properties.get(SPAN_PROPERTY)
  if value is None:
    return None
  return int(value.string_value) if value.HasField('string_value') else value.int_value
