"""TFX's Evaluator with this pipeline's eval config, run as the launcher runs it, on a tiny model:
TFMA's mean ELBO is the SavedModel's own ELBO, and the gate blesses exactly as configured."""
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tfx.components.evaluator import executor as evaluator_executor
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs as specs
from tfx.utils import json_utils, proto_utils

from tests import artifacts, model_fixtures
from vaetfx.models import elbo_metric
from vaetfx.pipeline import pipeline
from vaetfx.pipeline.run_summary import overall_mean_elbo


def _artifact(artifact_type, uri):
  artifact = artifact_type()
  artifact.uri = uri
  return artifact


def _evaluate(tmp_path, transformed_mnist, trained_model, elbo_floor, elbo_tolerance=2.0,
              baseline=None):
  model_uri = os.path.dirname(trained_model.serving_model_dir)  # <uri>/Format-Serving
  input_dict = {
      specs.EXAMPLES_KEY: [model_fixtures.examples_artifact(transformed_mnist.raw_examples_dir)],
      specs.MODEL_KEY: [_artifact(standard_artifacts.Model, model_uri)],
  }
  if baseline is not None:
    input_dict[specs.BASELINE_MODEL_KEY] = [_artifact(standard_artifacts.Model, baseline)]
  evaluation = _artifact(standard_artifacts.ModelEvaluation, str(tmp_path / 'evaluation'))
  blessing = _artifact(standard_artifacts.ModelBlessing, str(tmp_path / 'blessing'))
  exec_properties = {
      specs.EVAL_CONFIG_KEY: proto_utils.proto_to_json(
          pipeline.elbo_eval_config(elbo_floor, elbo_tolerance)),
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
                   elbo_floor=-1e6)


def test_tfma_mean_elbo_equals_the_saved_model_elbo(first_evaluation, transformed_mnist,
                                                    trained_model):
  evaluation_uri, _ = first_evaluation
  elbo, labels = _direct_elbo(transformed_mnist, trained_model)
  result = tfma.load_eval_result(evaluation_uri)
  by_slice = {slice_key: metrics[''][''][elbo_metric.MEAN_ELBO]['doubleValue']
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
                          elbo_floor=float(elbo.mean()) + 1.0)
  assert os.path.exists(os.path.join(blessing.uri, 'NOT_BLESSED'))


def test_same_model_as_baseline_passes_the_change_threshold(tmp_path, transformed_mnist,
                                                           trained_model):
  model_uri = os.path.dirname(trained_model.serving_model_dir)
  evaluation_uri, blessing = _evaluate(tmp_path, transformed_mnist, trained_model,
                                       elbo_floor=-1e6, baseline=model_uri)
  elbos = overall_mean_elbo(evaluation_uri)
  assert elbos['candidate'] == pytest.approx(elbos['baseline'])
  assert blessing.get_int_custom_property('blessed') == 1
