"""TFX's Evaluator with this pipeline's eval config, run as the launcher runs it, on a tiny model:
TFMA's mean ELBO is the SavedModel's own ELBO, and the gate blesses exactly as configured.

The per-slice rules use stand-in models whose ELBO is a fixed number per digit,
so "better overall, worse on one digit" is exact rather than hoped for."""
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tfx.components.evaluator import executor as evaluator_executor
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs as specs
from tfx.utils import json_utils, path_utils, proto_utils

from tests import artifacts, model_fixtures
from vaetfx.models import score_metrics, kinds
from vaetfx.pipeline import configs, pipeline
from vaetfx.pipeline.run_summary import gate_failures, overall_mean_elbo
from vaetfx.shared import features

WORSE_DIGIT = 3


def _artifact(artifact_type, uri):
  artifact = artifact_type()
  artifact.uri = uri
  return artifact


def _evaluate(tmp_path, transformed_mnist, trained_model, score_floor, score_tolerance=2.0,
              baseline=None, digit_tolerance=None):
  return _run_evaluator(tmp_path, transformed_mnist.raw_examples_dir,
                        os.path.dirname(trained_model.serving_model_dir),  # <uri>/Format-Serving
                        pipeline.gate_eval_config(
                            configs.GateConfig(score_floor, score_tolerance,
                                               digit_tolerance=digit_tolerance), kinds.CONV),
                        baseline)


def _run_evaluator(tmp_path, examples_uri, model_uri, eval_config, baseline=None):
  input_dict = {
      specs.EXAMPLES_KEY: [model_fixtures.examples_artifact(examples_uri)],
      specs.MODEL_KEY: [_artifact(standard_artifacts.Model, model_uri)],
  }
  if baseline is not None:
    input_dict[specs.BASELINE_MODEL_KEY] = [_artifact(standard_artifacts.Model, baseline)]
  evaluation = _artifact(standard_artifacts.ModelEvaluation, str(tmp_path / 'evaluation'))
  blessing = _artifact(standard_artifacts.ModelBlessing, str(tmp_path / 'blessing'))
  exec_properties = {
      specs.EVAL_CONFIG_KEY: proto_utils.proto_to_json(eval_config),
      specs.EXAMPLE_SPLITS_KEY: json_utils.dumps(['eval']),
  }
  evaluator_executor.Executor().Do(
      input_dict, {specs.EVALUATION_KEY: [evaluation], specs.BLESSING_KEY: [blessing]},
      exec_properties)
  return evaluation.uri, blessing


def _direct_elbo(transformed_mnist, trained_model):
  """Per-example ELBO and label, from the SavedModel's tf.Example signature, without TFMA."""
  examples = artifacts.read_examples(transformed_mnist.raw_examples_dir, 'eval')
  from_examples = tf.saved_model.load(trained_model.serving_model_dir).signatures['from_examples']
  elbo = from_examples(examples=tf.constant([e.SerializeToString() for e in examples]))['elbo']
  labels = np.array([e.features.feature['label'].int64_list.value[0] for e in examples])
  return elbo.numpy(), labels


@pytest.fixture(scope='module')
def first_evaluation(tmp_path_factory, transformed_mnist, trained_model):
  return _evaluate(tmp_path_factory.mktemp('eval'), transformed_mnist, trained_model,
                   score_floor=-1e6)


def test_tfma_mean_elbo_equals_the_saved_model_elbo(first_evaluation, transformed_mnist,
                                                    trained_model):
  evaluation_uri, _ = first_evaluation
  elbo, labels = _direct_elbo(transformed_mnist, trained_model)
  result = tfma.load_eval_result(evaluation_uri)
  by_slice = {slice_key: metrics[''][''][score_metrics.MEAN_ELBO]['doubleValue']
              for slice_key, metrics in result.slicing_metrics}
  assert by_slice[()] == pytest.approx(elbo.mean(), rel=1e-5)
  assert overall_mean_elbo(evaluation_uri) == {'': pytest.approx(elbo.mean(), rel=1e-5)}
  for digit in np.unique(labels):
    assert by_slice[(('label', digit),)] == pytest.approx(elbo[labels == digit].mean(), rel=1e-5)


def test_first_model_above_the_floor_is_blessed(first_evaluation):
  _, blessing = first_evaluation
  assert os.path.exists(os.path.join(blessing.uri, 'BLESSED'))
  assert blessing.get_int_custom_property('blessed') == 1


def test_floor_above_the_model_is_not_blessed(tmp_path, transformed_mnist, trained_model):
  elbo, _ = _direct_elbo(transformed_mnist, trained_model)
  _, blessing = _evaluate(tmp_path, transformed_mnist, trained_model,
                          score_floor=float(elbo.mean()) + 1.0)
  assert os.path.exists(os.path.join(blessing.uri, 'NOT_BLESSED'))


def test_same_model_as_baseline_passes_the_change_threshold(tmp_path, transformed_mnist,
                                                           trained_model):
  model_uri = os.path.dirname(trained_model.serving_model_dir)
  evaluation_uri, blessing = _evaluate(tmp_path, transformed_mnist, trained_model,
                                       score_floor=-1e6, baseline=model_uri)
  elbos = overall_mean_elbo(evaluation_uri)
  assert elbos['candidate'] == pytest.approx(elbos['baseline'])
  assert blessing.get_int_custom_property('blessed') == 1


class _ElboByDigit(tf.Module):
  """A stand-in model: its `elbo` for an example is a fixed number for the example's digit."""

  def __init__(self, elbo_by_digit):
    super().__init__()
    self.elbo_by_digit = tf.constant(elbo_by_digit, tf.float32)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='examples')])
  def from_examples(self, examples):
    labels = tf.io.parse_example(examples, {'label': tf.io.FixedLenFeature([], tf.int64)})['label']
    return {'elbo': tf.gather(self.elbo_by_digit, labels)}


def _elbo_by_digit_model(uri, elbo_by_digit):
  module = _ElboByDigit(elbo_by_digit)
  tf.saved_model.save(module, path_utils.serving_model_path(uri),
                      signatures={pipeline.EXAMPLES_SIGNATURE: module.from_examples})
  return uri


@pytest.fixture(scope='module')
def per_digit_models(tmp_path_factory):
  """A baseline at -100 nats on every digit; a candidate 3 nats worse everywhere; one 1 nat
  better on every digit but WORSE_DIGIT, where it is 3 nats worse (better on the mean)."""
  root = tmp_path_factory.mktemp('per_digit_models')
  one_digit_worse = [-99.0] * 10
  one_digit_worse[WORSE_DIGIT] = -103.0
  return {name: _elbo_by_digit_model(str(root / name), elbos) for name, elbos in (
      ('baseline', [-100.0] * 10), ('worse', [-103.0] * 10),
      ('one_digit_worse', one_digit_worse))}


def _gate(tmp_path, transformed_mnist, per_digit_models, candidate, digit_tolerance=None):
  evaluation_uri, blessing = _run_evaluator(
      tmp_path, transformed_mnist.raw_examples_dir, per_digit_models[candidate],
      pipeline.gate_eval_config(configs.GateConfig(score_floor=-1e6, score_tolerance=2.0,
                                                   digit_tolerance=digit_tolerance), kinds.CONV),
      baseline=per_digit_models['baseline'])
  return evaluation_uri, blessing.get_int_custom_property('blessed') == 1


def test_candidate_worse_than_the_baseline_by_more_than_the_tolerance_is_refused(
    tmp_path, transformed_mnist, per_digit_models):
  evaluation_uri, blessed = _gate(tmp_path, transformed_mnist, per_digit_models, 'worse')
  assert not blessed
  # The tolerance gates the mean only: one failure, over all digits, though every digit lost 3.
  assert gate_failures(evaluation_uri) == [
      "mean_elbo over all digits is 3.00 nats below the baseline's, more than the 2.00 allowed"]


def test_better_on_the_mean_but_worse_on_one_digit_is_blessed_by_default(
    tmp_path, transformed_mnist, transformed_mnist_labels, per_digit_models):
  evaluation_uri, blessed = _gate(tmp_path, transformed_mnist, per_digit_models,
                                  'one_digit_worse')
  assert blessed and not gate_failures(evaluation_uri)
  # The per-digit results stay in the evaluation.
  by_digit = {
      metrics.slice_key.single_slice_keys[0].int64_value: entry.value.double_value.value
      for metrics in tfma.load_metrics(evaluation_uri) if metrics.slice_key.single_slice_keys
      for entry in metrics.metric_keys_and_values
      if entry.key.model_name == 'candidate' and not entry.key.is_diff}
  assert set(by_digit) == set(transformed_mnist_labels)
  assert by_digit[WORSE_DIGIT] == pytest.approx(-103.0)


def test_better_on_the_mean_but_worse_on_one_digit_is_refused_with_a_digit_tolerance(
    tmp_path, transformed_mnist, per_digit_models):
  evaluation_uri, blessed = _gate(tmp_path, transformed_mnist, per_digit_models,
                                  'one_digit_worse', digit_tolerance=1.0)
  assert not blessed
  assert gate_failures(evaluation_uri) == [
      f"mean_elbo on digit {WORSE_DIGIT} is 3.00 nats below the baseline's, "
      'more than the 1.00 allowed']


def test_a_floor_failure_names_the_slice_and_the_floor(tmp_path, transformed_mnist,
                                                       per_digit_models):
  evaluation_uri, blessing = _run_evaluator(
      tmp_path, transformed_mnist.raw_examples_dir, per_digit_models['baseline'],
      pipeline.gate_eval_config(configs.GateConfig(score_floor=-90.0, score_tolerance=2.0,
                                                   digit_tolerance=0.5), kinds.CONV))
  assert blessing.get_int_custom_property('blessed') == 0
  assert gate_failures(evaluation_uri) == [
      'mean_elbo over all digits is -100.00 nats, below the floor of -90.00']


@pytest.fixture(scope='module')
def transformed_mnist_labels(transformed_mnist):
  examples = artifacts.read_examples(transformed_mnist.raw_examples_dir, 'eval')
  return [e.features.feature['label'].int64_list.value[0] for e in examples]


def test_autoencoder_is_gated_on_its_mean_reconstruction_log_likelihood(
    tmp_path, transformed_mnist, trained_autoencoder):
  model_uri = os.path.dirname(trained_autoencoder.serving_model_dir)
  examples = artifacts.read_examples(transformed_mnist.raw_examples_dir, 'eval')
  from_examples = tf.saved_model.load(trained_autoencoder.serving_model_dir).signatures[
      'from_examples']
  scores = from_examples(examples=tf.constant([e.SerializeToString() for e in examples]))[
      features.RECONSTRUCTION_LOG_LIKELIHOOD_KEY].numpy()
  eval_config = pipeline.gate_eval_config(configs.GateConfig(float(scores.mean()) - 1.0, 2.0),
                                          kinds.AUTOENCODER)
  evaluation_uri, blessing = _run_evaluator(tmp_path, transformed_mnist.raw_examples_dir,
                                            model_uri, eval_config, baseline=model_uri)
  metric = score_metrics.MEAN_RECONSTRUCTION_LOG_LIKELIHOOD
  assert score_metrics.gated_scores(evaluation_uri) == {
      'metric': metric, 'candidate': pytest.approx(scores.mean(), rel=1e-5),
      'baseline': pytest.approx(scores.mean(), rel=1e-5)}
  assert overall_mean_elbo(evaluation_uri, metric) == {
      'candidate': pytest.approx(scores.mean(), rel=1e-5),
      'baseline': pytest.approx(scores.mean(), rel=1e-5)}
  assert overall_mean_elbo(evaluation_uri) == {}  # No ELBO anywhere.
  assert blessing.get_int_custom_property('blessed') == 1

