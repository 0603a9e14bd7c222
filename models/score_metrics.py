"""TFMA metrics `mean_elbo` and `mean_reconstruction_log_likelihood`: the mean per-example
score the model itself predicts (a VAE's ELBO, the plain autoencoder's reconstruction
log-likelihood), each under its own name.

TFMA's built-in metrics need a label (Keras wrappers) or return 0 without one
(MeanPrediction), and `tfma.metrics.Mean` has no model name in its key, so a
change threshold against the baseline never finds it. These metrics average the
model's score output (ModelSpec.prediction_key: the kind's score_key) per model,
label-free, so the Evaluator can gate both on a floor and against the served model.
"""
from typing import Any, Dict, Iterable, List, Optional

import apache_beam as beam
import numpy as np
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import metric_types, metric_util

MEAN_ELBO = 'mean_elbo'
MEAN_RECONSTRUCTION_LOG_LIKELIHOOD = 'mean_reconstruction_log_likelihood'
GATED_METRICS = (MEAN_ELBO, MEAN_RECONSTRUCTION_LOG_LIKELIHOOD)


def overall_means(evaluation_uri: str) -> Dict[str, Dict[str, float]]:
  """Every unsliced metric's value by metric name, then by model name ('candidate',
  'baseline', or '' without a baseline), read in one pass over the Evaluator's output."""
  means = {}
  for metrics_for_slice in tfma.load_metrics(evaluation_uri):
    if metrics_for_slice.slice_key.single_slice_keys:
      continue
    for entry in metrics_for_slice.metric_keys_and_values:
      if not entry.key.is_diff:
        means.setdefault(entry.key.name, {})[entry.key.model_name] = (
            entry.value.double_value.value)
  return means


def gated_scores(evaluation_uri: str) -> Dict[str, Any]:
  """{'metric', 'candidate', 'baseline'}: the gated metric the evaluation holds (the model's
  kind decided which) and its overall values; baseline None when there was none."""
  means = overall_means(evaluation_uri)
  metric = next((name for name in GATED_METRICS if means.get(name)), MEAN_ELBO)
  values = means.get(metric, {})
  return {'metric': metric, 'candidate': values.get('candidate', values.get('')),
          'baseline': values.get('baseline')}


class MeanElbo(tfma.metrics.Metric):
  """Mean of the model's per-example ELBO prediction, in nats (higher is better).

  code_fingerprint: a hash of this module's source (pipeline/code_fingerprint.py),
  unused by the computation. The Evaluator's cache key sees only its eval config,
  where TFMA keeps this metric's constructor arguments (MetricConfig.config), so
  carrying the hash there re-runs the evaluation when this code changes.
  """

  def __init__(self, name: str = MEAN_ELBO, code_fingerprint: str = ''):
    super().__init__(metric_util.merge_per_key_computations(_mean_prediction), name=name,
                     code_fingerprint=code_fingerprint)


class MeanReconstructionLogLikelihood(MeanElbo):
  """Mean of the autoencoder's per-example reconstruction log-likelihood prediction, in nats
  (higher is better): the same computation as MeanElbo under the autoencoder's metric name."""

  def __init__(self, name: str = MEAN_RECONSTRUCTION_LOG_LIKELIHOOD, code_fingerprint: str = ''):
    super().__init__(name=name, code_fingerprint=code_fingerprint)


def _mean_prediction(name: str,
               eval_config: Optional[tfma.EvalConfig] = None,
               model_name: str = '',
               output_name: str = '',
               sub_key: Optional[metric_types.SubKey] = None,
               example_weighted: bool = False,
               **unused_kwargs) -> metric_types.MetricComputations:
  key = metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name,
                               sub_key=sub_key, example_weighted=example_weighted)
  return [metric_types.MetricComputation(
      keys=[key], preprocessors=None, combiner=_MeanPredictionCombiner(key, eval_config))]


class _MeanPredictionCombiner(beam.CombineFn):
  """Accumulates [sum of weighted predictions, sum of weights]."""

  def __init__(self, key: metric_types.MetricKey, eval_config: Optional[tfma.EvalConfig]):
    self._key = key
    self._eval_config = eval_config

  def create_accumulator(self) -> List[float]:
    return [0.0, 0.0]

  def add_input(self, accumulator: List[float],
                element: metric_types.StandardMetricInputs) -> List[float]:
    for _, prediction, weight in metric_util.to_label_prediction_example_weight(
        element, eval_config=self._eval_config, model_name=self._key.model_name,
        output_name=self._key.output_name, example_weighted=self._key.example_weighted,
        allow_none=True):
      accumulator[0] += float(prediction) * float(weight)
      accumulator[1] += float(weight)
    return accumulator

  def merge_accumulators(self, accumulators: Iterable[List[float]]) -> List[float]:
    total = [0.0, 0.0]
    for prediction_sum, weight_sum in accumulators:
      total[0] += prediction_sum
      total[1] += weight_sum
    return total

  def extract_output(self, accumulator: List[float]) -> Dict[metric_types.MetricKey, Any]:
    prediction_sum, weight_sum = accumulator
    return {self._key: prediction_sum / weight_sum if weight_sum else float(np.nan)}


metric_types.register_metric(MeanElbo)
metric_types.register_metric(MeanReconstructionLogLikelihood)
