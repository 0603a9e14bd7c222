"""The pipeline definition, shared by every orchestrator: a pure create_pipeline(...).

Every setting is an argument; runners (local_runner, kubeflow_runner) decide them.
Module code is referenced by dotted names inside the installed `vaetfx` package,
so it travels with the package instead of being staged as a module file.
"""
from typing import Any, Dict, List, Optional, Sequence

import tensorflow_model_analysis as tfma
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from vaetfx.components.atomic_pusher.component import AtomicPusher
from vaetfx.components.mnist_example_gen.component import MnistExampleGen
from vaetfx.components.serving_infra_validator.component import ServingInfraValidator
from vaetfx.components.vae_report.component import VaeReport
from vaetfx.models import elbo_metric, features

PREPROCESSING_FN = 'vaetfx.models.preprocessing.preprocessing_fn'
RUN_FN = 'vaetfx.models.trainer.run_fn'
EXAMPLES_SIGNATURE = 'from_examples'


def elbo_eval_config(elbo_floor: float, elbo_tolerance: float) -> tfma.EvalConfig:
  """Bless when the held-out mean ELBO is >= elbo_floor and at most elbo_tolerance
  nats below the last blessed model's (TFX drops the change threshold on a first run).

  The model has no label: TFMA reads its `elbo` output through the tf.Example
  signature and averages it with the label-free MeanElbo metric.
  """
  threshold = tfma.MetricThreshold(
      value_threshold=tfma.GenericValueThreshold(lower_bound={'value': elbo_floor}),
      change_threshold=tfma.GenericChangeThreshold(
          direction=tfma.MetricDirection.HIGHER_IS_BETTER,
          absolute={'value': -elbo_tolerance}))
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(signature_name=EXAMPLES_SIGNATURE, model_type='tf_generic',
                                  prediction_key='elbo')],
      slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=[features.LABEL_KEY])],
      metrics_specs=[tfma.MetricsSpec(metrics=[
          tfma.MetricConfig(class_name=elbo_metric.MeanElbo.__name__,
                            module=elbo_metric.__name__, threshold=threshold)])])


def create_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    data_root: str,
    serving_dir: str,
    trainer_custom_config: Dict[str, Any],
    elbo_floor: float,
    elbo_tolerance: float,
    model_name: str,
    keep_versions: int,
    likelihood_examples: int,
    likelihood_samples: int,
    compare_with_baseline: bool = True,
    digits: Sequence[int] = (),
    beam_pipeline_args: Optional[List[str]] = None,
    metadata_connection_config: Optional[metadata_store_pb2.ConnectionConfig] = None,
    enable_cache: bool = True,
    trainer_platform_config: Optional[Any] = None,
) -> tfx.dsl.Pipeline:
  """MNIST -> validation -> Transform -> Trainer -> Evaluator gate and infra validation -> atomic
  push, plus a report.

  compare_with_baseline: gate against the last blessed model too (see configs.GateConfig).

  likelihood_examples, likelihood_samples: the report's held-out log-likelihood
  (see configs.ReportConfig).

  trainer_platform_config: an orchestrator's resource request for the Trainer
  (Kubeflow V2: a PipelineContainerSpec.ResourceSpec asking for GPUs).
  """
  example_gen = MnistExampleGen(input_base=data_root, digits=digits)
  statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs['examples'])
  schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs['statistics'])
  example_validator = tfx.components.ExampleValidator(
      statistics=statistics_gen.outputs['statistics'], schema=schema_gen.outputs['schema'])
  transform = tfx.components.Transform(
      examples=example_gen.outputs['examples'],
      schema=schema_gen.outputs['schema'],
      preprocessing_fn=PREPROCESSING_FN,
      disable_statistics=True)  # StatisticsGen already describes the raw data.
  trainer = tfx.components.Trainer(
      run_fn=RUN_FN,
      examples=transform.outputs['transformed_examples'],
      transform_graph=transform.outputs['transform_graph'],
      schema=schema_gen.outputs['schema'],
      custom_config=trainer_custom_config)
  if trainer_platform_config is not None:
    trainer.with_platform_config(trainer_platform_config)
  baseline_components = []
  if compare_with_baseline:
    baseline_components.append(tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id('latest_blessed_model_resolver'))
  evaluator = tfx.components.Evaluator(
      examples=example_gen.outputs['examples'],
      model=trainer.outputs['model'],
      baseline_model=baseline_components[0].outputs['model'] if baseline_components else None,
      schema=schema_gen.outputs['schema'],
      eval_config=elbo_eval_config(elbo_floor, elbo_tolerance),
      example_splits=[features.EVAL_SPLIT])
  report = VaeReport(model=trainer.outputs['model'], model_run=trainer.outputs['model_run'],
                     examples=example_gen.outputs['examples'],
                     likelihood_examples=likelihood_examples,
                     likelihood_samples=likelihood_samples)
  infra_validator = ServingInfraValidator(model=trainer.outputs['model'],
                                          examples=example_gen.outputs['examples'],
                                          model_name=model_name)
  # No `model`: as with TFX's Pusher, the model pushed is the infra blessing's
  # copy, which carries the TF Serving warmup requests.
  pusher = AtomicPusher(model=None,
                        model_blessing=evaluator.outputs['blessing'],
                        infra_blessing=infra_validator.outputs['blessing'],
                        serving_dir=serving_dir, model_name=model_name,
                        keep_versions=keep_versions)

  components = [example_gen, statistics_gen, schema_gen, example_validator, transform, trainer,
                *baseline_components, evaluator, infra_validator, report, pusher]
  return tfx.dsl.Pipeline(
      pipeline_name=pipeline_name,
      pipeline_root=pipeline_root,
      components=components,
      enable_cache=enable_cache,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=beam_pipeline_args or [],
  )
