"""The pipeline definition, shared by every orchestrator: a pure create_pipeline(...).

Every setting is an argument; runners (local_runner, kubeflow_runner) decide them.
Module code is referenced by dotted names inside the installed `vaetfx` package,
so it travels with the package instead of being staged as a module file.
"""
import json
from typing import Any, List, Mapping, Optional, Sequence

import tensorflow_model_analysis as tfma
from ml_metadata.proto import metadata_store_pb2
from tfx.components import ExampleValidator, SchemaGen, StatisticsGen, Trainer
from tfx.dsl.components.common.resolver import Resolver
from tfx.orchestration.pipeline import Pipeline
from tfx.types import standard_artifacts
from tfx.types.channel import Channel

from vaetfx.components.anomaly_scorer.component import AnomalyScorer
from vaetfx.components.atomic_pusher.component import AtomicPusher
from vaetfx.components.drift_check.component import DriftCheck
from vaetfx.components.mnist_example_gen.component import MnistExampleGen, span_parameter
from vaetfx.components.served_baseline.component import (ServedBaselineEvaluator,
                                                         ServedModelImporter)
from vaetfx.components.serving_infra_validator.component import ServingInfraValidator
from vaetfx.components.span_transform.component import SpanTransform
from vaetfx.components.span_window import SpanWindowStrategy
from vaetfx.components.vae_report.component import VaeReport
from vaetfx.components.warm_start_base.component import WarmStartBase
from vaetfx.models import score_metrics, hparams, kinds
from vaetfx.pipeline import code_fingerprint, configs
from vaetfx.shared import features

PREPROCESSING_FN = 'vaetfx.models.preprocessing.preprocessing_fn'
RUN_FN = 'vaetfx.models.trainer.run_fn'
EXAMPLES_SIGNATURE = 'from_examples'


OVERALL_SLICE = tfma.SlicingSpec()
DIGIT_SLICES = tfma.SlicingSpec(feature_keys=[features.LABEL_KEY])
# A component runs after the AtomicPusher and may fail without taking the push with it.
SCORER_ID = 'BulkInferrer'
OPTIONAL_COMPONENTS = (SCORER_ID, 'VaeReport')
# The last components of the data half: with their upstream nodes, what a span costs to ingest.
DATA_HALF = ('ExampleValidator', 'Transform')
# The rolling window's resolver (components/span_window.py).
SPAN_WINDOW = 'SpanWindow'


def _at_most_below_baseline(tolerance: float) -> tfma.GenericChangeThreshold:
  return tfma.GenericChangeThreshold(direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                                     absolute={'value': -tolerance})


def gate_eval_config(gate: configs.GateConfig, kind: kinds.ModelKind,
                     code_fingerprint: str = '') -> tfma.EvalConfig:
  """Bless when the held-out mean score (the kind's: a VAE's ELBO, an autoencoder's
  reconstruction log-likelihood, nats per image) is >= gate.score_floor and at most
  gate.score_tolerance nats below the served model's (TFX drops the change threshold when
  none is served); with gate.digit_tolerance, also when no digit's mean is more than that
  below the baseline's on that digit.

  The model has no label: TFMA reads the score output through the tf.Example
  signature and averages it with the kind's label-free metric (models/score_metrics.py),
  overall and per digit. A threshold on MetricConfig.threshold would apply to
  every slice (the per-digit ones too), so each is tied to its slices with
  per_slice_thresholds. code_fingerprint rides in the metric's config (see
  score_metrics.MeanElbo). A baseline of another kind has no such output, so the
  two are never compared (ServedModelImporter refuses a served model scored otherwise).
  """
  thresholds = [tfma.PerSliceMetricThreshold(
      slicing_specs=[OVERALL_SLICE],
      threshold=tfma.MetricThreshold(
          value_threshold=tfma.GenericValueThreshold(lower_bound={'value': gate.score_floor}),
          change_threshold=_at_most_below_baseline(gate.score_tolerance)))]
  if gate.digit_tolerance is not None:
    thresholds.append(tfma.PerSliceMetricThreshold(
        slicing_specs=[DIGIT_SLICES],
        threshold=tfma.MetricThreshold(
            change_threshold=_at_most_below_baseline(gate.digit_tolerance))))
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(signature_name=EXAMPLES_SIGNATURE, model_type='tf_generic',
                                  prediction_key=kind.score_key)],
      slicing_specs=[OVERALL_SLICE, DIGIT_SLICES],
      metrics_specs=[tfma.MetricsSpec(metrics=[
          tfma.MetricConfig(class_name=kind.tfma_metric_class,
                            module=score_metrics.__name__,
                            config=json.dumps({'code_fingerprint': code_fingerprint}),
                            per_slice_thresholds=thresholds)])])


def anomaly_scorer(examples: Channel, model: Channel, score_key: str,
                   code_fingerprint: str = '') -> AnomalyScorer:
  """The held-out split scored with the trained model on Beam, as `vaetfx score` scores.

  Each output example is a held-out one (image, label) with its ELBO under the
  model added as the `elbo` feature (`score_key`: the autoencoder's
  reconstruction log-likelihood): low means unlike the training data. It goes
  through the from_examples signature, as the Evaluator scores it. Its id is
  BulkInferrer, the name of the step since TFX's BulkInferrer did it.

  Every candidate is scored, blessed or not, as the report draws every
  candidate: with the blessing as an input, the scoring and the report would
  re-run on every run, since the Evaluator re-runs once it has a baseline,
  where now they are cached with the model they describe.
  """
  return AnomalyScorer(examples=examples, model=model, split=features.EVAL_SPLIT,
                       score_key=score_key,
                       code_fingerprint=code_fingerprint).with_id(SCORER_ID)


def training_examples(config: configs.PipelineConfig, transform: Any) -> List[Any]:
  """The Trainer's examples: this run's transformed span, or with config.train_spans K > 1
  the rolling window's resolver, which finds the transformed Examples of the newest K spans in
  ML Metadata (each span transformed once, in the run that ingested it). [] for the former.

  The resolver reads a plain Channel of Transform's output, not the OutputChannel: TFX
  compiles an OutputChannel to this pipeline run's artifacts only, where the older spans are
  not. It is ordered after Transform, so this run's span is among them.
  """
  if config.train_spans == 1:
    return []
  span_window = Resolver(
      strategy_class=SpanWindowStrategy,
      config={'newest_span': config.span, 'num_spans': config.train_spans},
      examples=Channel(type=standard_artifacts.Examples,
                               producer_component_id=transform.id,
                               output_key='transformed_examples')).with_id(SPAN_WINDOW)
  span_window.add_upstream_node(transform)
  return [span_window]


def _depends_on(component) -> List[str]:
  """The ids of the components `component` reads the outputs of or is ordered after (the
  pipeline wires upstream_nodes from input channels only once it is built)."""
  return [*(node_id for channel in component.inputs.values()
            for node_id in channel.get_data_dependent_node_ids()),
          *(node.id for node in component.upstream_nodes)]


def upstream_closure(components: Sequence[Any], last: Sequence[str]) -> List[Any]:
  """The components of `last` and every component they depend on, in `components`' order,
  without their ordering edges to the components left out."""
  by_id = {component.id: component for component in components}
  keep, pending = set(), list(last)
  while pending:
    component_id = pending.pop()
    if component_id not in keep:
      keep.add(component_id)
      pending.extend(_depends_on(by_id[component_id]))
  kept = [component for component in components if component.id in keep]
  for component in kept:  # an explicit ordering edge to a left-out component would not compile
    for node in list(component.downstream_nodes):
      if node.id not in keep:
        component.remove_downstream_node(node)
  return kept


def create_pipeline(
    config: configs.PipelineConfig,
    code_fingerprints: Mapping[str, str],
    metadata_connection_config: Optional[metadata_store_pb2.ConnectionConfig] = None,
    trainer_platform_config: Optional[Any] = None,
    last_components: Sequence[str] = (),
) -> Pipeline:
  """MNIST -> validation and drift check -> Transform -> Trainer -> Evaluator gate and infra
  validation -> atomic push -> anomaly scores of the held-out split (AnomalyScorer) -> report,
  as `config` sets them.

  code_fingerprints: {component id: hash of the code it runs}
  (code_fingerprint.component_fingerprints()), put among each component's
  execution properties so that TFX's cache (and KFP's) re-runs it when its code
  changes. A component running our code without an entry is an error here:
  its cached results would outlive edits to that code.

  The Trainer starts from the served model's weights when it fits and this data is new to it
  (WarmStartBase: a warm start), else from scratch (config.hparams.warm_start turns it off).
  The baseline is what TF Serving serves from `<serving_dir>/<model_name>`,
  read when the run runs (ServedModelImporter); a served model that cannot be
  compared stops the run before training unless config.gate says 'floor'.
  The scoring and the report run after the push (an ordering, not a data
  dependency), so a failure in either never keeps a blessed model from being served.

  metadata_connection_config: the local runner's ML Metadata (Kubeflow brings its own).
  trainer_platform_config: an orchestrator's resource request for the Trainer
  (Kubeflow V2: a PipelineContainerSpec.ResourceSpec asking for GPUs).
  last_components: run only these and what they depend on (DATA_HALF: ingest a span); the
  components keep their ids and properties, so their cache keys are the whole pipeline's.
  """
  fingerprints = dict(code_fingerprints)  # Every entry checked once the components exist.
  kind = config.hparams.kind
  trainer_custom_config = config.hparams.to_custom_config()
  span = (span_parameter(configs.SPAN_PARAMETER, config.span) if config.span_at_run_time
          else config.span)
  example_gen = MnistExampleGen(input_base=config.data_dir, digits=config.digits,
                                pattern=config.data_pattern, span=span,
                                code_fingerprint=fingerprints.get('MnistExampleGen', ''))
  statistics_gen = StatisticsGen(examples=example_gen.outputs['examples'])
  schema_gen = SchemaGen(statistics=statistics_gen.outputs['statistics'])
  example_validator = ExampleValidator(
      statistics=statistics_gen.outputs['statistics'], schema=schema_gen.outputs['schema'])
  transform = SpanTransform(
      examples=example_gen.outputs['examples'],
      schema=schema_gen.outputs['schema'],
      preprocessing_fn=PREPROCESSING_FN,
      custom_config={hparams.CODE_FINGERPRINT_KEY: fingerprints.get('Transform', '')},
      disable_statistics=True).with_id('Transform')  # StatisticsGen describes the raw data.
  span_window = training_examples(config, transform)
  train_examples = (span_window[0].outputs['examples'] if span_window
                    else transform.outputs['transformed_examples'])
  # What the Trainer starts from: the served model when it fits and the data is new to it.
  warm_start_base = WarmStartBase(
      examples=example_gen.outputs['examples'], serving_dir=config.serving_dir,
      model_name=config.push.model_name, model_kind=kind.name,
      latent_dim=config.hparams.latent_dim, warm_start=config.hparams.warm_start,
      code_fingerprint=fingerprints.get('WarmStartBase', ''))
  trainer = Trainer(
      run_fn=RUN_FN,
      examples=train_examples,
      transform_graph=transform.outputs['transform_graph'],
      schema=schema_gen.outputs['schema'],
      base_model=warm_start_base.outputs['base_model'],
      custom_config={**trainer_custom_config,
                     hparams.CODE_FINGERPRINT_KEY: fingerprints.get('Trainer', '')})
  if trainer_platform_config is not None:
    trainer.with_platform_config(trainer_platform_config)
  # The baseline is what TF Serving serves, read when the run runs; before the Trainer, so a
  # served model that cannot be compared stops the run before any training.
  served_model = ServedModelImporter(
      serving_dir=config.serving_dir, model_name=config.push.model_name,
      score_key=kind.score_key, on_incomparable=config.gate.on_incomparable_baseline,
      code_fingerprint=fingerprints.get('ServedModelImporter', ''))
  trainer.add_upstream_node(served_model)
  # The new data against the previous span's and the served model's, before the Trainer, which
  # waits for it: with on_drift 'stop', drift ends the run here.
  drift_check = DriftCheck(
      examples=example_gen.outputs['examples'],
      baseline_model=served_model.outputs['baseline_model'], score_key=kind.score_key,
      threshold=config.drift.drift_threshold, on_drift=config.drift.on_drift,
      code_fingerprint=fingerprints.get('DriftCheck', ''))
  trainer.add_upstream_node(drift_check)
  evaluator = ServedBaselineEvaluator(
      examples=example_gen.outputs['examples'],
      model=trainer.outputs['model'],
      baseline_model=served_model.outputs['baseline_model'],
      schema=schema_gen.outputs['schema'],
      eval_config=gate_eval_config(config.gate, kind, fingerprints.get('Evaluator', '')),
      example_splits=[features.EVAL_SPLIT]).with_id('Evaluator')
  infra_validator = ServingInfraValidator(
      model=trainer.outputs['model'], examples=example_gen.outputs['examples'],
      model_name=config.push.model_name,
      code_fingerprint=fingerprints.get('ServingInfraValidator', ''))
  # No `model`: as with TFX's Pusher, the model pushed is the infra blessing's
  # copy, which carries the TF Serving warmup requests.
  pusher = AtomicPusher(model=None,
                        model_blessing=evaluator.outputs['blessing'],
                        infra_blessing=infra_validator.outputs['blessing'],
                        serving_dir=config.serving_dir, model_name=config.push.model_name,
                        keep_versions=config.push.keep_versions,
                        code_fingerprint=fingerprints.get('AtomicPusher', ''),
                        model_evaluation=evaluator.outputs['evaluation'],
                        examples=example_gen.outputs['examples'],
                        train_examples=train_examples,
                        base_model=warm_start_base.outputs['base_model'],
                        provenance=json.dumps({
                            'pipeline_name': config.pipeline_name,
                            'model': {'kind': kind.name, 'score_key': kind.score_key,
                                      'hparams': trainer_custom_config},
                            'code_fingerprint': fingerprints.get('Trainer', ''),
                            'data': {'root': config.data_dir, 'digits': list(config.digits)}},
                            sort_keys=True))
  bulk_inferrer = anomaly_scorer(example_gen.outputs['examples'], trainer.outputs['model'],
                                 kind.score_key, fingerprints.get(SCORER_ID, ''))
  bulk_inferrer.add_upstream_node(pusher)
  report = VaeReport(model=trainer.outputs['model'], model_run=trainer.outputs['model_run'],
                     examples=example_gen.outputs['examples'], model_kind=kind.name,
                     likelihood_examples=config.report.likelihood_examples,
                     likelihood_samples=config.report.likelihood_samples,
                     scored_examples=bulk_inferrer.outputs['output_examples'],
                     code_fingerprint=fingerprints.get('VaeReport', ''))
  report.add_upstream_node(pusher)

  components = [served_model, example_gen, statistics_gen, schema_gen, example_validator,
                drift_check, transform, *span_window, warm_start_base, trainer, evaluator,
                infra_validator, pusher, bulk_inferrer, report]
  code_fingerprint.check_covered([component.id for component in components], fingerprints)
  if last_components:
    components = upstream_closure(components, last_components)
  return Pipeline(
      pipeline_name=config.pipeline_name,
      pipeline_root=config.pipeline_root,
      components=components,
      enable_cache=config.enable_cache,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=config.beam.pipeline_args(),
  )
