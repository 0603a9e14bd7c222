"""The rolling window: a TFX resolver strategy that picks the transformed data of the newest K spans.

TFX 1.16's SpanRangeStrategy (RollingRange) anchors the window at the highest
span ML Metadata holds, not at the span this run ingested, and passes on every
artifact of each span in range: a span ingested twice (its files rewritten,
or another --digits) would be trained on twice, old data and new. This one
takes the window [newest_span - num_spans + 1, newest_span] and, for each span
in it, the one artifact a producer most recently output (a cached execution
counts: it re-outputs its artifact), which is the one this run, or the data-half
run of that span just before it (pipeline/local_runner.py), produced with this
run's settings. A span ML Metadata lacks is left out; the spans found are in
ascending order, so the same window gives the same Trainer cache key.

The Trainer's execution records the artifacts it was given as its inputs in
ML Metadata, so the lineage says which spans trained which model.
"""
from typing import Dict, List, Optional

import ml_metadata as mlmd
from ml_metadata.proto import metadata_store_pb2
from tfx import types
from tfx.components.example_gen import utils as example_gen_utils
from tfx.dsl.components.common import resolver

from vaetfx.shared import spans

SPAN = example_gen_utils.SPAN_PROPERTY_NAME
_OUTPUT_EVENTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)


def span_of(artifact: metadata_store_pb2.Artifact) -> Optional[int]:
  """The span of an Examples artifact (an ML Metadata proto; a TFX Artifact's `.mlmd_artifact`),
  None when it has none. TFX's ExampleGen drivers record it as the custom property `span` (an
  int; older TFX wrote a string), not as the Examples type's declared `span` property, which
  stays unset (`artifact.span` reads 0 for every span); TFX's SpanRangeStrategy reads the same."""
  value = artifact.custom_properties.get(SPAN)
  if value is None:
    return None
  return int(value.string_value) if value.HasField('string_value') else value.int_value


def last_output_execution(store: mlmd.MetadataStore, artifact_ids: List[int]) -> Dict[int, int]:
  """{artifact id: the id of the newest execution that output it}; executions are numbered in
  the order they were registered, so a higher id is a later (re-)output."""
  latest: Dict[int, int] = {}
  for event in store.get_events_by_artifact_ids(artifact_ids):
    if event.type in _OUTPUT_EVENTS:
      latest[event.artifact_id] = max(latest.get(event.artifact_id, 0), event.execution_id)
  return latest


def pick_window(artifacts: List[types.Artifact], window_spans: List[int],
                last_output: Dict[int, int]) -> List[types.Artifact]:
  """For each span of `window_spans` (in that order), the artifact of that span most recently
  output; spans without one are skipped."""
  picked = []
  for span in window_spans:
    candidates = [artifact for artifact in artifacts if span_of(artifact.mlmd_artifact) == span]
    if candidates:
      picked.append(max(candidates, key=lambda a: (last_output.get(a.id, 0), a.id)))
  return picked


class SpanWindowStrategy(resolver.ResolverStrategy):
  """Resolves each input channel to its artifacts of spans newest_span-num_spans+1..newest_span,
  one per span (see the module docstring). The newest span must be there: this run made it."""

  def __init__(self, newest_span: int, num_spans: int):
    if num_spans < 1:
      raise ValueError(f'num_spans={num_spans}: expected 1 or more')
    self._spans = spans.window(newest_span, num_spans)

  def resolve_artifacts(
      self, store: mlmd.MetadataStore, input_dict: Dict[str, List[types.Artifact]]
  ) -> Optional[Dict[str, List[types.Artifact]]]:
    ids = [artifact.id for artifacts in input_dict.values() for artifact in artifacts]
    last_output = last_output_execution(store, ids) if ids else {}
    resolved = {key: pick_window(artifacts, self._spans, last_output)
                for key, artifacts in input_dict.items()}
    newest = self._spans[-1]
    for key, artifacts in resolved.items():
      if not artifacts or span_of(artifacts[-1].mlmd_artifact) != newest:
        raise RuntimeError(f'the rolling window of spans {self._spans} found no {key!r} of '
                           f'span {newest}, which this run ingested')
    return resolved
