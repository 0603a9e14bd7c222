"""AtomicPusher: TFX's Pusher inputs and output, pushing into `<serving_dir>/<model_name>/<version>/`.

It has its own spec rather than TFX's PusherSpec so that the serving directory,
model name and number of kept versions are typed execution properties, visible
in ML Metadata and checked when the pipeline is built, instead of keys in an
untyped custom_config.
"""
from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from vaetfx.components import served_state_driver
from vaetfx.components.atomic_pusher import driver, executor
from vaetfx.shared.model_name import check_model_name

DEFAULT_KEEP_VERSIONS = 3


class AtomicPusherSpec(types.ComponentSpec):
  """Inputs and output keys are the stock Pusher's, so the pushed_model channel reads the same."""

  PARAMETERS = {
      executor.SERVING_DIR_KEY: ExecutionParameter(type=str),
      executor.MODEL_NAME_KEY: ExecutionParameter(type=str),
      executor.KEEP_VERSIONS_KEY: ExecutionParameter(type=int),
      executor.PROVENANCE_KEY: ExecutionParameter(type=str, optional=True),
      # Filled by the driver when the component runs; never set when the pipeline is built.
      served_state_driver.SERVED_STATE_KEY: ExecutionParameter(type=str, optional=True),
      # Not read by the executor: it is in TFX's cache key, so editing the Pusher's code re-runs it.
      executor.CODE_FINGERPRINT_KEY: ExecutionParameter(type=str, optional=True),
  }
  INPUTS = {
      standard_component_specs.MODEL_KEY:
          ChannelParameter(type=standard_artifacts.Model, optional=True),
      standard_component_specs.MODEL_BLESSING_KEY:
          ChannelParameter(type=standard_artifacts.ModelBlessing),
      standard_component_specs.INFRA_BLESSING_KEY:
          ChannelParameter(type=standard_artifacts.InfraBlessing, optional=True),
      # For the provenance record: the gate's scores and the data the model saw.
      executor.EVALUATION_KEY:
          ChannelParameter(type=standard_artifacts.ModelEvaluation, optional=True),
      standard_component_specs.EXAMPLES_KEY:
          ChannelParameter(type=standard_artifacts.Examples, optional=True),
      # The Examples the Trainer was given: the spans the model was trained on.
      executor.TRAIN_EXAMPLES_KEY:
          ChannelParameter(type=standard_artifacts.Examples, optional=True),
      # For the provenance record: the version the Trainer started from (WarmStartBase).
      standard_component_specs.BASE_MODEL_KEY:
          ChannelParameter(type=standard_artifacts.Model, optional=True),
  }
  OUTPUTS = {
      standard_component_specs.PUSHED_MODEL_KEY:
          ChannelParameter(type=standard_artifacts.PushedModel),
  }


class AtomicPusher(base_component.BaseComponent):
  """Pushes a blessed model as a new integer version; an unblessed one leaves serving untouched.

  The blessing is a required input: without one there is nothing to gate on,
  and this component exists to push only what the Evaluator blessed.
  """

  SPEC_CLASS = AtomicPusherSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
  # A cached push is reused only while its model is still the served one (driver.py).
  DRIVER_CLASS = driver.PushedStateDriver

  def __init__(self, model: Optional[types.BaseChannel], model_blessing: types.BaseChannel,
               serving_dir: str, model_name: str,
               keep_versions: int = DEFAULT_KEEP_VERSIONS,
               infra_blessing: Optional[types.BaseChannel] = None, code_fingerprint: str = '',
               model_evaluation: Optional[types.BaseChannel] = None,
               examples: Optional[types.BaseChannel] = None,
               train_examples: Optional[types.BaseChannel] = None, provenance: str = '',
               base_model: Optional[types.BaseChannel] = None):
    """serving_dir: TF Serving's --model_base_path is `<serving_dir>/<model_name>`.

    keep_versions: how many versions, the new one included, stay in place;
    older ones are removed after a successful push.

    infra_blessing: an InfraBlessing (InfraValidator, ServingInfraValidator)
    the model must also have. As in TFX's Pusher, with no `model` the model is
    the one the blessing carries, with its TF Serving warmup requests.

    code_fingerprint: pipeline/code_fingerprint.py's hash of this component's code.

    model_evaluation, examples, train_examples, provenance: what each pushed version's
    provenance record tells (the Evaluator's scores, ExampleGen's data and its span, the
    spans the Trainer's examples hold, and a JSON object of the rest: pipeline name, model
    kind and hyperparameters, code fingerprint, data folder).
    base_model: WarmStartBase's, whose version the record names as the model's start.
    """
    if model is None and infra_blessing is None:
      raise ValueError('AtomicPusher needs a model, or an infra_blessing that carries one')
    if keep_versions < 1:
      raise ValueError(f'keep_versions must be at least 1 (the pushed version), got {keep_versions}')
    check_model_name(model_name)
    spec = AtomicPusherSpec(
        model=model,
        model_blessing=model_blessing,
        infra_blessing=infra_blessing,
        serving_dir=serving_dir,
        model_name=model_name,
        keep_versions=keep_versions,
        code_fingerprint=code_fingerprint or None,
        model_evaluation=model_evaluation, examples=examples, train_examples=train_examples,
        provenance=provenance or None, base_model=base_model,
        pushed_model=types.Channel(type=standard_artifacts.PushedModel))
    super().__init__(spec=spec)
