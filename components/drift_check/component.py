"""DriftCheck: the new data against the previous span and the served model, before training.

A component of its own between ExampleGen and the Trainer (the Trainer waits for
it), so that drift is measured on every new span, kept in ML Metadata as a
`vaetfx.DataDrift` artifact beside the Examples it describes, cached with them,
and can stop the run before any training (on_drift='stop').
"""
from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from vaetfx.components.drift_check import driver, executor

# Images scored on each side: enough for a Kolmogorov-Smirnov statistic whose noise is
# below the threshold's scale (docs/measurements.md), few enough to cost seconds.
DEFAULT_SCORED_EXAMPLES = 2000
DEFAULT_SEED = 0


class DataDrift(types.Artifact):
  """A folder with drift.json, TFDV's anomalies of the labels and the scores' histograms.

  The dotted name is what Kubeflow V2 requires of a custom type's schema title.
  """
  TYPE_NAME = 'vaetfx.DataDrift'


class DriftCheckSpec(types.ComponentSpec):
  PARAMETERS = {
      executor.THRESHOLD_KEY: ExecutionParameter(type=float),
      executor.ON_DRIFT_KEY: ExecutionParameter(type=str),
      executor.SCORE_KEY: ExecutionParameter(type=str),
      executor.SCORED_EXAMPLES_KEY: ExecutionParameter(type=int),
      executor.SEED_KEY: ExecutionParameter(type=int),
      # Filled by the driver when the component runs; never set when the pipeline is built.
      executor.PREVIOUS_SPAN_KEY: ExecutionParameter(type=str, optional=True),
      # Not read by the executor: it is in TFX's cache key, so editing its code re-runs it.
      'code_fingerprint': ExecutionParameter(type=str, optional=True),
  }
  INPUTS = {
      executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
      # ServedModelImporter's: the served model, its provenance naming its data.
      executor.BASELINE_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
  }
  OUTPUTS = {executor.DRIFT_KEY: ChannelParameter(type=DataDrift)}


class DriftCheck(base_component.BaseComponent):
  """Outputs `drift`: whether `examples` drifted from the previous data, and by how much."""

  SPEC_CLASS = DriftCheckSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
  # The previous span's Examples, found in ML Metadata when the component runs (driver.py).
  DRIVER_CLASS = driver.PreviousSpanDriver

  def __init__(self, examples: types.BaseChannel, baseline_model: types.BaseChannel,
               score_key: str, threshold: float, on_drift: str = 'retrain',
               scored_examples: int = DEFAULT_SCORED_EXAMPLES, seed: int = DEFAULT_SEED,
               code_fingerprint: str = ''):
    """score_key: the served model's per-image score output (models/kinds.py).

    threshold: drift when either distance (labels' L-infinity, scores' Kolmogorov-Smirnov),
    both in [0, 1], is above it. on_drift: 'retrain' records it and goes on; 'stop' fails
    this component (executor.DataDrifted), so nothing after it, the Trainer first, runs.

    scored_examples, seed: at most that many held-out images of each side are scored, drawn
    with that seed.
    """
    if on_drift not in executor.ON_DRIFT_CHOICES:
      raise ValueError(f'on_drift={on_drift!r}: expected one of {executor.ON_DRIFT_CHOICES}')
    if not 0 <= threshold <= 1:
      raise ValueError(f'threshold={threshold}: expected a distance from 0 to 1')
    if scored_examples < 1:
      raise ValueError(f'scored_examples={scored_examples}: expected 1 or more')
    spec = DriftCheckSpec(examples=examples, baseline_model=baseline_model, threshold=threshold,
                          on_drift=on_drift, score_key=score_key,
                          scored_examples=scored_examples, seed=seed,
                          code_fingerprint=code_fingerprint or None,
                          drift=types.Channel(type=DataDrift))
    super().__init__(spec=spec)
