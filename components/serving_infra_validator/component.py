"""ServingInfraValidator: TFX's InfraValidator contract, with `vaetfx serve` instead of Docker.

TFX's InfraValidator needs Docker or Kubernetes to run TF Serving
(tensorflow/tfx#2912, #5485, #5512). This component takes the same inputs
(model, examples) and writes the same standard InfraBlessing artifact, so
TFX's Pusher (or AtomicPusher) gates on it unchanged; the server is this
project's TF-Serving-compatible one, started in a child process, so it runs the
same way on a laptop and inside a Kubeflow container.
"""
from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from vaetfx.components.serving_infra_validator import executor

DEFAULT_NUM_EXAMPLES = 8
DEFAULT_MAX_LOADING_SECONDS = 300  # InfraValidator's _DEFAULT_MAX_LOADING_TIME_SEC.
# Tries when the server, not the model, fails (TFX's ValidationSpec.num_tries is 5): with
# independent failures 3 make a failed run unlikely, and a server that cannot run at all
# fails the run within 3 * max_loading_seconds.
DEFAULT_NUM_TRIES = 3


class ServingInfraValidatorSpec(types.ComponentSpec):
  """InfraValidator's input and output keys; the serving settings are typed properties."""

  PARAMETERS = {
      executor.MODEL_NAME_KEY: ExecutionParameter(type=str),
      executor.NUM_EXAMPLES_KEY: ExecutionParameter(type=int),
      executor.MAX_LOADING_SECONDS_KEY: ExecutionParameter(type=int),
      executor.NUM_TRIES_KEY: ExecutionParameter(type=int),
      # Not read by the executor: it is in TFX's cache key, so editing the validator's or the
      # server's code re-runs it.
      'code_fingerprint': ExecutionParameter(type=str, optional=True),
  }
  INPUTS = {
      standard_component_specs.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      standard_component_specs.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
  }
  OUTPUTS = {
      standard_component_specs.BLESSING_KEY:
          ChannelParameter(type=standard_artifacts.InfraBlessing),
  }


class ServingInfraValidator(base_component.BaseComponent):
  """Blesses a model that a server loads, warms up and answers correctly on every signature.

  The blessing carries the model with TF Serving warmup requests
  (`stamped_model/assets.extra/tf_serving_warmup_requests`): give the Pusher
  this blessing and no model, and the warmed-up model is what it pushes.
  """

  SPEC_CLASS = ServingInfraValidatorSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, model: types.BaseChannel, examples: types.BaseChannel, model_name: str,
               num_examples: int = DEFAULT_NUM_EXAMPLES,
               max_loading_seconds: int = DEFAULT_MAX_LOADING_SECONDS,
               num_tries: int = DEFAULT_NUM_TRIES, code_fingerprint: str = ''):
    """examples: ExampleGen's; the requests carry the first `num_examples` digits of `eval`.

    model_name: the name the model is served and its warmup requests are recorded under.
    max_loading_seconds: how long the server may take to load and warm up the model.
    num_tries: how many times to serve it when the server fails (executor.py: which
      failures are the server's); when all fail, the execution fails.
    code_fingerprint: pipeline/code_fingerprint.py's hash of this component's code.
    """
    if min(num_examples, max_loading_seconds, num_tries) < 1:
      raise ValueError(f'num_examples ({num_examples}), max_loading_seconds '
                       f'({max_loading_seconds}) and num_tries ({num_tries}) must be at least 1')
    spec = ServingInfraValidatorSpec(
        model=model, examples=examples, model_name=model_name, num_examples=num_examples,
        max_loading_seconds=max_loading_seconds, num_tries=num_tries,
        code_fingerprint=code_fingerprint or None,
        blessing=types.Channel(type=standard_artifacts.InfraBlessing))
    super().__init__(spec=spec)
