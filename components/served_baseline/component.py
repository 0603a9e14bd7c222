"""ServedModelImporter: the model TF Serving serves, as the Evaluator's baseline Model.

TFX's LatestBlessedModelStrategy resolver finds the last model this pipeline
blessed in its own ML Metadata; TF Serving serves whatever is newest in the
serving folder, pushed by any pipeline or person. This component reads the
folder when it runs (its driver puts what is served into the cache key), so the
gate compares with what clients get, on the local runner and on Kubeflow alike
(a container task, which KFP's open-source backend runs, where it refuses
resolvers).
"""
from tfx import types
from tfx.components import Evaluator
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from vaetfx.components import served_state_driver
from vaetfx.components.served_baseline import executor
from vaetfx.shared.model_name import check_model_name


class ServedModelImporterSpec(types.ComponentSpec):
  PARAMETERS = {
      executor.SERVING_DIR_KEY: ExecutionParameter(type=str),
      executor.MODEL_NAME_KEY: ExecutionParameter(type=str),
      executor.SCORE_KEY: ExecutionParameter(type=str),
      executor.ON_INCOMPARABLE_KEY: ExecutionParameter(type=str),
      # Filled by the driver when the component runs; never set when the pipeline is built.
      served_state_driver.SERVED_STATE_KEY: ExecutionParameter(type=str, optional=True),
      # Not read by the executor: it is in TFX's cache key, so editing its code re-runs it.
      'code_fingerprint': ExecutionParameter(type=str, optional=True),
  }
  INPUTS = {}
  OUTPUTS = {executor.BASELINE_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model)}


class ServedModelImporter(base_component.BaseComponent):
  """Outputs `baseline_model`: a copy of the served version, or an empty Model when none is."""

  SPEC_CLASS = ServedModelImporterSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
  DRIVER_CLASS = served_state_driver.ServedStateDriver

  def __init__(self, serving_dir: str, model_name: str, score_key: str,
               on_incomparable: str = 'stop', code_fingerprint: str = ''):
    """score_key: the candidate's per-image score (features.ELBO_KEY, ...): a served model
    scored otherwise is of another kind and cannot be compared.

    on_incomparable: 'stop' fails the run when the served model cannot be compared (foreign,
    another kind); 'floor' gates on the floor alone.
    """
    if on_incomparable not in executor.ON_INCOMPARABLE_CHOICES:
      raise ValueError(f'on_incomparable={on_incomparable!r}: expected one of '
                       f'{executor.ON_INCOMPARABLE_CHOICES}')
    spec = ServedModelImporterSpec(
        serving_dir=serving_dir, model_name=check_model_name(model_name), score_key=score_key,
        on_incomparable=on_incomparable, code_fingerprint=code_fingerprint or None,
        baseline_model=types.Channel(type=standard_artifacts.Model))
    super().__init__(spec=spec)


class ServedBaselineEvaluator(Evaluator):
  """TFX's Evaluator, whose baseline is a ServedModelImporter's (executor.EvaluatorExecutor)."""

  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.EvaluatorExecutor)
