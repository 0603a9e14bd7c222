"""AnomalyScorer: each example of a split with its score under the model added as a feature.

It replaces TFX's BulkInferrer in the pipeline (and keeps its id, its `examples`
and `model` inputs and its `output_examples` output, which VaeReport reads), to
score through the same code as `vaetfx score` at about the rate of calling the
model directly (see scoring.py). Its own spec makes the split and the score's
name typed execution properties, and carries the code fingerprint TFX's cache needs.
"""
from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from vaetfx.components.anomaly_scorer import executor


class AnomalyScorerSpec(types.ComponentSpec):
  PARAMETERS = {
      executor.SPLIT_KEY: ExecutionParameter(type=str),
      executor.SCORE_KEY_KEY: ExecutionParameter(type=str),
      # Not read by the executor: it is in TFX's cache key, so editing the scorer's code re-runs it.
      executor.CODE_FINGERPRINT_KEY: ExecutionParameter(type=str, optional=True),
  }
  INPUTS = {
      standard_component_specs.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
      standard_component_specs.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
  }
  OUTPUTS = {
      standard_component_specs.OUTPUT_EXAMPLES_KEY:
          ChannelParameter(type=standard_artifacts.Examples),
  }


class AnomalyScorer(base_beam_component.BaseBeamComponent):
  """Scores `split` of `examples` with `model`'s from_examples signature; the output examples
  are the input ones plus the float feature `score_key` (a VAE's `elbo`)."""

  SPEC_CLASS = AnomalyScorerSpec
  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

  def __init__(self, examples: types.BaseChannel, model: types.BaseChannel, split: str,
               score_key: str, code_fingerprint: Optional[str] = None):
    super().__init__(spec=AnomalyScorerSpec(
        examples=examples, model=model, split=split, score_key=score_key,
        code_fingerprint=code_fingerprint,
        output_examples=types.Channel(type=standard_artifacts.Examples)))
