"""WarmStartBase: the served model the Trainer starts from, as its `base_model` input.

TFX's Trainer hands run_fn the path of its `base_model` input
(fn_args.base_model); this component decides what that is (executor.py says
how, and why its cache key is the data and not the serving folder).
"""
from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from vaetfx.components.warm_start_base import executor
from vaetfx.shared.model_name import check_model_name


class WarmStartBaseSpec(types.ComponentSpec):
  PARAMETERS = {
      executor.SERVING_DIR_KEY: ExecutionParameter(type=str),
      executor.MODEL_NAME_KEY: ExecutionParameter(type=str),
      executor.KIND_KEY: ExecutionParameter(type=str),
      executor.LATENT_DIM_KEY: ExecutionParameter(type=int),
      executor.WARM_START_KEY: ExecutionParameter(type=int),
      # Not read by the executor: it is in TFX's cache key, so editing its code re-runs it.
      'code_fingerprint': ExecutionParameter(type=str, optional=True),
  }
  INPUTS = {standard_component_specs.EXAMPLES_KEY:
                ChannelParameter(type=standard_artifacts.Examples)}
  OUTPUTS = {executor.BASE_MODEL_KEY: ChannelParameter(type=standard_artifacts.Model)}


class WarmStartBase(base_component.BaseComponent):
  """Outputs `base_model`: a copy of the version to start from, or an empty Model (cold)."""

  SPEC_CLASS = WarmStartBaseSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, examples: types.BaseChannel, serving_dir: str, model_name: str,
               model_kind: str, latent_dim: int, warm_start: bool = True,
               code_fingerprint: str = ''):
    """examples: the run's data (ExampleGen's), whose input fingerprint tells new data from
    data a served model has seen. model_kind, latent_dim: what the Trainer builds."""
    spec = WarmStartBaseSpec(
        examples=examples, serving_dir=serving_dir, model_name=check_model_name(model_name),
        model_kind=model_kind, latent_dim=latent_dim, warm_start=int(warm_start),
        code_fingerprint=code_fingerprint or None,
        base_model=types.Channel(type=standard_artifacts.Model))
    super().__init__(spec=spec)
