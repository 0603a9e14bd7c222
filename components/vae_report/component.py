"""VaeReport: PNG pictures and an index.html of what the trained VAE does, as a pipeline output.

A component of its own, rather than part of the Trainer or Evaluator, so the
report of every candidate is kept in the pipeline root and tracked in ML
Metadata beside the model it shows, blessed or not.
"""
from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from vaetfx.components.vae_report import executor
from vaetfx.models import iwae, kinds

DEFAULT_NUM_EXAMPLES = 2000
DEFAULT_SEED = 0


class VaeReportArtifact(types.Artifact):
  """A folder with index.html and the PNG files it shows.

  The dotted name is what Kubeflow V2 requires of a custom type's schema title
  (namespace.Name, tfx/orchestration/kubeflow/v2/compiler_utils.py).
  """
  TYPE_NAME = 'vaetfx.VaeReport'


class VaeReportSpec(types.ComponentSpec):
  """Input keys are the producers' output keys, so wiring reads `model=trainer.outputs['model']`."""

  PARAMETERS = {
      executor.NUM_EXAMPLES_KEY: ExecutionParameter(type=int),
      executor.SEED_KEY: ExecutionParameter(type=int),
      # Not read by the executor: it is in TFX's cache key, so editing the report's code re-runs it.
      'code_fingerprint': ExecutionParameter(type=str, optional=True),
      executor.LIKELIHOOD_EXAMPLES_KEY: ExecutionParameter(type=int),
      executor.LIKELIHOOD_SAMPLES_KEY: ExecutionParameter(type=int),
      executor.MODEL_KIND_KEY: ExecutionParameter(type=str),
  }
  INPUTS = {
      executor.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
      executor.MODEL_RUN_KEY: ChannelParameter(type=standard_artifacts.ModelRun),
      executor.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples),
      # BulkInferrer's held-out examples with their `elbo`; without them, no anomaly pictures.
      executor.SCORED_EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples,
                                                     optional=True),
  }
  OUTPUTS = {
      executor.REPORT_KEY: ChannelParameter(type=VaeReportArtifact),
  }


class VaeReport(base_component.BaseComponent):
  """Draws held-out digits from the `eval` split of `examples` through the Trainer's `model`."""

  SPEC_CLASS = VaeReportSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, model: types.BaseChannel, model_run: types.BaseChannel,
               examples: types.BaseChannel, model_kind: str, likelihood_examples: int,
               likelihood_samples: int, num_examples: int = DEFAULT_NUM_EXAMPLES,
               seed: int = DEFAULT_SEED,
               code_fingerprint: str = '', scored_examples: Optional[types.BaseChannel] = None):
    """model_kind: the --model the Trainer trained (models/kinds.py), whose pictures are drawn.

    num_examples: held-out digits encoded for the latent-space plot (the first ones read).

    seed: the prior samples' seed, so re-drawing a report gives the same picture,
    and the seed of the log-likelihood's draws.

    likelihood_examples, likelihood_samples: the held-out log-likelihood (IWAE
    bound, models/iwae.py) of the first `likelihood_examples` held-out digits
    for K = 1, 10, ..., likelihood_samples (a power of ten); 0 examples skips it.

    code_fingerprint: pipeline/code_fingerprint.py's hash of this component's code.

    scored_examples: BulkInferrer's output examples of the `eval` split, each
    with its `elbo`, for the lowest-scoring digits and the scores per digit.
    """
    if num_examples < 1:
      raise ValueError(f'num_examples must be at least 1, got {num_examples}')
    if likelihood_examples < 0:
      raise ValueError(f'likelihood_examples must be >= 0, got {likelihood_examples}')
    iwae.sample_counts(likelihood_samples)
    kinds.kind(model_kind)
    spec = VaeReportSpec(model=model, model_run=model_run, examples=examples,
                         model_kind=model_kind,
                         num_examples=num_examples, seed=seed,
                         code_fingerprint=code_fingerprint or None,
                         likelihood_examples=likelihood_examples,
                         likelihood_samples=likelihood_samples,
                         scored_examples=scored_examples,
                         report=types.Channel(type=VaeReportArtifact))
    super().__init__(spec=spec)
