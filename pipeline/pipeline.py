"""The pipeline definition, shared by every orchestrator: a pure create_pipeline(...).

Every setting is an argument; runners (local_runner, kubeflow_runner) decide them.
Module code is referenced by dotted names inside the installed `vaetfx` package,
so it travels with the package instead of being staged as a module file.
"""
import json
from typing import Any, Dict, List, Mapping, Optional, Sequence

import tensorflow_model_analysis as tfma
from ml_metadata.proto import metadata_store_pb2
from tfx import v1 as tfx

from vaetfx.components.atomic_pusher.component import AtomicPusher
from vaetfx.components.mnist_example_gen.component import MnistExampleGen
from vaetfx.components.served_baseline.component import (ServedBaselineEvaluator,
                                                         ServedModelImporter)
from vaetfx.components.serving_infra_validator.component import ServingInfraValidator
from vaetfx.components.vae_report.component import VaeReport
from vaetfx.models import elbo_metric, features, hparams

PREPROCESSING_FN = 'vaetfx.models.preprocessing.preprocessing_fn'
RUN_FN = 'vaetfx.models.trainer.run_fn'
EXAMPLES_SIGNATURE = 'from_examples'


OVERALL_SLICE = tfma.SlicingSpec()
DIGIT_SLICES = tfma.SlicingSpec(feature_keys=[features.LABEL_KEY])
# A component runs after the AtomicPusher and may fail without taking the push with it.
OPTIONAL_COMPONENTS = ('BulkInferrer', 'VaeReport')
# The exported model's per-image ELBO, the anomaly score, as BulkInferrer's output column.
ANOMALY_SCORE_KEY = features.ELBO_KEY
# The plain autoencoder's: its reconstruction log-likelihood, gated and scored alike.
AUTOENCODER_SCORE_KEY = features.RECONSTRUCTION_LOG_LIKELIHOOD_KEY


def gated_score(is_autoencoder: bool):
  """(the exported per-image score, the TFMA metric averaging it) of a kind of model.

  A VAE is gated on its ELBO, the autoencoder on its reconstruction
  log-likelihood, each under its own metric name: a baseline of the other kind
  has no such output, so the two are never compared (ServedModelImporter refuses
  a served model scored otherwise).
  """
  if is_autoencoder:
    return AUTOENCODER_SCORE_KEY, elbo_metric.MeanReconstructionLogLikelihood
  return ANOMALY_SCORE_KEY, elbo_metric.MeanElbo


def _at_most_below_baseline(tolerance: float) -> tfma.GenericChangeThreshold:
  return tfma.GenericChangeThreshold(direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                                     absolute={'value': -tolerance})


def elbo_eval_config(elbo_floor: float, elbo_tolerance: float,
                     digit_tolerance: Optional[float] = None,
                     code_fingerprint: str = '', is_autoencoder: bool = False) -> tfma.EvalConfig:
  """Bless when the held-out mean ELBO is >= elbo_floor and at most elbo_tolerance
  nats below the served model's (TFX drops the change threshold when none is served);
  with digit_tolerance, also when no digit's mean ELBO is more than that below the
  baseline's on that digit.

  The model has no label: TFMA reads its `elbo` output through the tf.Example
  signature and averages it with the label-free MeanElbo metric, overall and per
  digit. A threshold on MetricConfig.threshold would apply to every slice (the
  per-digit ones too), so each is tied to its slices with per_slice_thresholds.
  code_fingerprint rides in the metric's config (see elbo_metric.MeanElbo).
  For the autoencoder, the same rule holds for its mean reconstruction
  log-likelihood (gated_score), in nats per image too.
  """
  score_key, metric = gated_score(is_autoencoder)
  thresholds = [tfma.PerSliceMetricThreshold(
      slicing_specs=[OVERALL_SLICE],
      threshold=tfma.MetricThreshold(
          value_threshold=tfma.GenericValueThreshold(lower_bound={'value': elbo_floor}),
          change_threshold=_at_most_below_baseline(elbo_tolerance)))]
  if digit_tolerance is not None:
    thresholds.append(tfma.PerSliceMetricThreshold(
        slicing_specs=[DIGIT_SLICES],
        threshold=tfma.MetricThreshold(change_threshold=_at_most_below_baseline(digit_tolerance))))
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(signature_name=EXAMPLES_SIGNATURE, model_type='tf_generic',
                                  prediction_key=score_key)],
      slicing_specs=[OVERALL_SLICE, DIGIT_SLICES],
      metrics_specs=[tfma.MetricsSpec(metrics=[
          tfma.MetricConfig(class_name=metric.__name__,
                            module=elbo_metric.__name__,
                            config=json.dumps({'code_fingerprint': code_fingerprint}),
                            per_slice_thresholds=thresholds)])])


def anomaly_scorer(examples: tfx.dsl.Channel, model: tfx.dsl.Channel,
                   score_key: str = ANOMALY_SCORE_KEY) -> tfx.components.BulkInferrer:
  """TFX's BulkInferrer scoring the held-out split with the trained model on Beam.

  Each output example is a held-out one (image, label) with its ELBO under the
  model added as the `elbo` feature (`score_key`: the autoencoder's
  reconstruction log-likelihood): low means unlike the training data. It goes
  through the from_examples signature, as the Evaluator scores it.

  Every candidate is scored, blessed or not, as the report draws every
  candidate: with the blessing as an input, the scoring and the report would
  re-run on every run, since the Evaluator re-runs once it has a baseline,
  where now they are cached with the model they describe.
  """
  return tfx.components.BulkInferrer(
      examples=examples, model=model,
      data_spec=tfx.proto.DataSpec(example_splits=[features.EVAL_SPLIT]),
      model_spec=tfx.proto.ModelSpec(model_signature_name=[EXAMPLES_SIGNATURE]),
      output_example_spec=tfx.proto.OutputExampleSpec(output_columns_spec=[
          tfx.proto.OutputColumnsSpec(predict_output=tfx.proto.PredictOutput(output_columns=[
              tfx.proto.PredictOutputCol(output_key=score_key,
                                         output_column=score_key)]))]))


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
    on_incomparable_baseline: str = 'stop',
    digits: Sequence[int] = (),
    data_pattern: str = '*',
    span: int = 0,
    beam_pipeline_args: Optional[List[str]] = None,
    metadata_connection_config: Optional[metadata_store_pb2.ConnectionConfig] = None,
    enable_cache: bool = True,
    trainer_platform_config: Optional[Any] = None,
    digit_tolerance: Optional[float] = None,
    code_fingerprints: Optional[Mapping[str, str]] = None,
) -> tfx.dsl.Pipeline:
  """MNIST -> validation -> Transform -> Trainer -> Evaluator gate and infra validation -> atomic
  push -> anomaly scores of the held-out split (BulkInferrer) -> report.

  on_incomparable_baseline: what to do when the model TF Serving serves from
  `<serving_dir>/<model_name>` cannot be the gate's baseline (see
  configs.GateConfig): 'stop' the run before training, or gate on the 'floor'.

  digit_tolerance: also refuse a model more than this many nats below the
  baseline on any one digit; None gates on the overall mean only.

  likelihood_examples, likelihood_samples: the report's held-out log-likelihood
  (see configs.ReportConfig).

  data_pattern, span: MnistExampleGen's split pattern under data_root ('*', or
  'span-{SPAN}/*' for a folder of span folders) and the span to read (0: the newest).

  code_fingerprints: {component id: hash of the code it runs}
  (code_fingerprint.component_fingerprints()), put among each component's
  execution properties so that TFX's cache (and KFP's) re-runs it when its code
  changes. Without them, an edit to the package's code is served from the cache.

  The scoring and the report run after the push (an ordering, not a data
  dependency), so a failure in either never keeps a blessed model from being served.

  trainer_platform_config: an orchestrator's resource request for the Trainer
  (Kubeflow V2: a PipelineContainerSpec.ResourceSpec asking for GPUs).
  """
  fingerprints = dict(code_fingerprints or {})
  training = hparams.TrainingHparams.from_custom_config(trainer_custom_config)
  is_autoencoder = training.is_autoencoder
  score_key = training.score_key
  example_gen = MnistExampleGen(input_base=data_root, digits=digits, pattern=data_pattern, span=span,
                                code_fingerprint=fingerprints.get('MnistExampleGen', ''))
  statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs['examples'])
  schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs['statistics'])
  example_validator = tfx.components.ExampleValidator(
      statistics=statistics_gen.outputs['statistics'], schema=schema_gen.outputs['schema'])
  transform = tfx.components.Transform(
      examples=example_gen.outputs['examples'],
      schema=schema_gen.outputs['schema'],
      preprocessing_fn=PREPROCESSING_FN,
      custom_config={hparams.CODE_FINGERPRINT_KEY: fingerprints.get('Transform', '')},
      disable_statistics=True)  # StatisticsGen already describes the raw data.
  trainer = tfx.components.Trainer(
      run_fn=RUN_FN,
      examples=transform.outputs['transformed_examples'],
      transform_graph=transform.outputs['transform_graph'],
      schema=schema_gen.outputs['schema'],
      custom_config={**trainer_custom_config,
                     hparams.CODE_FINGERPRINT_KEY: fingerprints.get('Trainer', '')})
  if trainer_platform_config is not None:
    trainer.with_platform_config(trainer_platform_config)
  # The baseline is what TF Serving serves, read when the run runs; before the Trainer, so a
  # served model that cannot be compared stops the run before any training.
  served_model = ServedModelImporter(
      serving_dir=serving_dir, model_name=model_name, score_key=score_key,
      on_incomparable=on_incomparable_baseline,
      code_fingerprint=fingerprints.get('ServedModelImporter', ''))
  trainer.add_upstream_node(served_model)
  evaluator = ServedBaselineEvaluator(
      examples=example_gen.outputs['examples'],
      model=trainer.outputs['model'],
      baseline_model=served_model.outputs['baseline_model'],
      schema=schema_gen.outputs['schema'],
      eval_config=elbo_eval_config(elbo_floor, elbo_tolerance, digit_tolerance,
                                   fingerprints.get('Evaluator', ''), is_autoencoder),
      example_splits=[features.EVAL_SPLIT]).with_id('Evaluator')
  infra_validator = ServingInfraValidator(
      model=trainer.outputs['model'], examples=example_gen.outputs['examples'],
      model_name=model_name, code_fingerprint=fingerprints.get('ServingInfraValidator', ''))
  # No `model`: as with TFX's Pusher, the model pushed is the infra blessing's
  # copy, which carries the TF Serving warmup requests.
  pusher = AtomicPusher(model=None,
                        model_blessing=evaluator.outputs['blessing'],
                        infra_blessing=infra_validator.outputs['blessing'],
                        serving_dir=serving_dir, model_name=model_name,
                        keep_versions=keep_versions,
                        code_fingerprint=fingerprints.get('AtomicPusher', ''),
                        model_evaluation=evaluator.outputs['evaluation'],
                        examples=example_gen.outputs['examples'],
                        provenance=json.dumps({
                            'pipeline_name': pipeline_name,
                            'model': {'kind': training.model, 'score_key': score_key,
                                      'hparams': trainer_custom_config},
                            'code_fingerprint': fingerprints.get('Trainer', ''),
                            'data': {'root': data_root, 'digits': list(digits)}},
                            sort_keys=True))
  bulk_inferrer = anomaly_scorer(example_gen.outputs['examples'], trainer.outputs['model'],
                                 score_key)
  bulk_inferrer.add_upstream_node(pusher)
  report = VaeReport(model=trainer.outputs['model'], model_run=trainer.outputs['model_run'],
                     examples=example_gen.outputs['examples'],
                     likelihood_examples=likelihood_examples,
                     likelihood_samples=likelihood_samples,
                     scored_examples=bulk_inferrer.outputs['output_examples'],
                     code_fingerprint=fingerprints.get('VaeReport', ''))
  report.add_upstream_node(pusher)

  components = [served_model, example_gen, statistics_gen, schema_gen, example_validator,
                transform, trainer, evaluator, infra_validator, pusher, bulk_inferrer, report]
  return tfx.dsl.Pipeline(
      pipeline_name=pipeline_name,
      pipeline_root=pipeline_root,
      components=components,
      enable_cache=enable_cache,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=beam_pipeline_args or [],
  )
