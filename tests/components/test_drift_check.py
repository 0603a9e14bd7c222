"""DriftCheck's executor on drawn digits and a model the Trainer's run_fn really exported."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tfx.types import channel, standard_artifacts

from tests import synthetic_mnist
from vaetfx.components.drift_check import executor
from vaetfx.components.drift_check.component import DataDrift, DriftCheck
from vaetfx.components.mnist_example_gen.executor import to_example
from vaetfx.components.served_baseline import executor as served_baseline
from vaetfx.shared import features

THRESHOLD = 0.1
SERVED_VERSION = 7


def write_examples(directory: str, images: np.ndarray, labels: np.ndarray) -> str:
  """An Examples folder as ExampleGen writes it, with the digits in its eval split."""
  split_dir = os.path.join(directory, f'Split-{features.EVAL_SPLIT}')
  os.makedirs(split_dir)
  with tf.io.TFRecordWriter(os.path.join(split_dir, 'data_tfrecord-00000-of-00001.gz'),
                            tf.io.TFRecordOptions(compression_type='GZIP')) as writer:
    for image, label in zip(images, labels):
      writer.write(to_example(image, int(label)))
  return directory


def _examples(uri: str, span: int = 0) -> standard_artifacts.Examples:
  examples = standard_artifacts.Examples()
  examples.uri = uri
  examples.split_names = json.dumps([features.EVAL_SPLIT])
  examples.span = span
  return examples


def _served(exported_model_dir: str, examples_uri: str) -> standard_artifacts.Model:
  """ServedModelImporter's baseline: the served model under Format-Serving/, its provenance."""
  baseline = standard_artifacts.Model()
  baseline.uri = os.path.dirname(exported_model_dir)
  baseline.set_int_custom_property(served_baseline.SERVED_VERSION_KEY, SERVED_VERSION)
  baseline.set_string_custom_property(served_baseline.PROVENANCE_KEY, json.dumps(
      {'data': {'examples_uri': examples_uri, 'span': 1}}))
  return baseline


def _nothing_served() -> standard_artifacts.Model:
  baseline = standard_artifacts.Model()
  baseline.uri = '/nonexistent'
  baseline.set_int_custom_property(served_baseline.SERVED_VERSION_KEY,
                                   served_baseline.NOTHING_SERVED)
  return baseline


def run(tmp_path, new_uri: str, baseline: standard_artifacts.Model, on_drift: str = 'retrain',
        previous_examples_uri: str = '') -> executor.DriftResult:
  drift = DataDrift()
  drift.uri = str(tmp_path / 'drift')
  inputs = {executor.EXAMPLES_KEY: [_examples(new_uri, span=2)],
            executor.BASELINE_MODEL_KEY: [baseline]}
  if previous_examples_uri:
    inputs[executor.PREVIOUS_EXAMPLES_KEY] = [_examples(previous_examples_uri, span=1)]
  executor.Executor().Do(inputs, {executor.DRIFT_KEY: [drift]}, {
      executor.THRESHOLD_KEY: THRESHOLD, executor.ON_DRIFT_KEY: on_drift,
      executor.SCORE_KEY: features.ELBO_KEY, executor.SCORED_EXAMPLES_KEY: 2000,
      executor.SEED_KEY: 0})
  result = executor.read_result(drift.uri)
  assert drift.get_int_custom_property(executor.CHECKED_PROPERTY) == int(result.checked)
  assert drift.get_int_custom_property(executor.DRIFTED_PROPERTY) == int(result.drifted)
  return result


@pytest.fixture(scope='module')
def digits():
  return synthetic_mnist.draw_digits(300, seed=5)


@pytest.fixture(scope='module')
def previous_uri(tmp_path_factory, digits):
  images, labels = digits
  return write_examples(str(tmp_path_factory.mktemp('previous')), images[:150], labels[:150])


def test_nothing_served_is_not_checked_and_says_why(tmp_path, previous_uri):
  result = run(tmp_path, previous_uri, _nothing_served())
  assert not result.checked and not result.drifted
  assert 'nothing is served yet' in result.describe()
  assert not result.picture and not os.path.exists(tmp_path / 'drift' / executor.PICTURE_FILE)


def test_a_served_model_that_is_not_comparable_is_not_checked(tmp_path, previous_uri):
  baseline = _nothing_served()
  baseline.set_string_custom_property(served_baseline.NOT_COMPARED_KEY, 'version 3 is a symlink')
  result = run(tmp_path, previous_uri, baseline)
  assert not result.checked
  assert result.reason == 'the served model is not comparable (version 3 is a symlink)'


def test_the_served_models_data_gone_is_not_checked(tmp_path, previous_uri, exported_model_dir):
  gone = str(tmp_path / 'deleted_examples')
  result = run(tmp_path, previous_uri, _served(exported_model_dir, gone))
  assert not result.checked
  assert f'served version {SERVED_VERSION} was evaluated on ({gone}) is not readable' in (
      result.reason)


def test_new_digits_of_the_same_distribution_are_not_drift(tmp_path, digits, previous_uri,
                                                           exported_model_dir):
  """The same 150 digits in the reverse order: both distances are 0."""
  images, labels = digits
  new_uri = write_examples(str(tmp_path / 'new'), images[:150][::-1], labels[:150][::-1])
  result = run(tmp_path, new_uri, _served(exported_model_dir, previous_uri))
  assert result.checked and not result.drifted
  assert result.label_l_infinity == 0 and result.score_ks == 0 and result.median_shift == 0
  assert result.scored == (150, 150)
  assert result.previous['served_version'] == SERVED_VERSION
  assert 'no drift (threshold 0.1)' in result.describe()
  drift_dir = str(tmp_path / 'drift')
  assert 'L_INFTY' in open(os.path.join(drift_dir, executor.ANOMALIES_FILE)).read()
  assert result.picture == os.path.join(drift_dir, executor.PICTURE_FILE)
  with Image.open(result.picture) as picture:
    assert picture.format == 'PNG' and picture.size[0] > 100


def test_other_digits_drift_on_the_labels(tmp_path, digits, exported_model_dir):
  """Digits 5-9 served, digits 0-4 arrive: the label distributions share nothing (L-inf 0.2)."""
  images, labels = digits
  low, high = labels < 5, labels >= 5
  previous_uri = write_examples(str(tmp_path / 'previous'), images[high], labels[high])
  new_uri = write_examples(str(tmp_path / 'new'), images[low], labels[low])
  result = run(tmp_path, new_uri, _served(exported_model_dir, previous_uri))
  assert result.drifted
  assert result.label_l_infinity == pytest.approx(0.2, abs=0.02)
  assert 'label distribution (L-infinity)' in result.over_threshold
  assert 'DRIFTED: label distribution' in result.describe()


def test_inverted_digits_drift_on_the_served_models_scores_alone(tmp_path, digits, previous_uri,
                                                                 exported_model_dir):
  """The same labels, ink and paper swapped: only the model's view sees it."""
  images, labels = digits
  new_uri = write_examples(str(tmp_path / 'new'), 255 - images[150:], labels[150:])
  result = run(tmp_path, new_uri, _served(exported_model_dir, previous_uri))
  assert result.label_l_infinity <= THRESHOLD
  assert result.over_threshold == ['served model\'s ELBO (Kolmogorov-Smirnov)']
  assert result.score_ks > 0.9 and result.median_shift < -10


def test_stop_raises_with_the_result_written(tmp_path, digits, previous_uri, exported_model_dir):
  images, labels = digits
  new_uri = write_examples(str(tmp_path / 'new'), 255 - images[150:], labels[150:])
  with pytest.raises(executor.DataDrifted, match='DRIFTED: served model\'s ELBO') as raised:
    run(tmp_path, new_uri, _served(exported_model_dir, previous_uri), on_drift='stop')
  assert raised.value.result.drifted
  assert executor.read_result(str(tmp_path / 'drift')).score_ks == raised.value.result.score_ks


def test_the_previous_spans_examples_come_before_the_served_models_data(
    tmp_path, digits, previous_uri, exported_model_dir):
  """With previous_examples (a resolver's previous span), the served model's data is unused:
  here it names a folder that does not exist."""
  result = run(tmp_path, previous_uri, _served(exported_model_dir, str(tmp_path / 'gone')),
               previous_examples_uri=previous_uri)
  assert result.checked and not result.drifted
  assert result.previous['what'] == 'the previous span, 1'


def test_a_file_sorted_by_label_is_sampled_across_it():
  chosen = executor.sample(1000, 100, seed=0)
  labels_sorted = np.repeat(np.arange(10), 100)
  assert len(np.unique(chosen)) == 100 and set(labels_sorted[chosen]) == set(range(10))
  np.testing.assert_array_equal(chosen, executor.sample(1000, 100, seed=0))
  np.testing.assert_array_equal(executor.sample(50, 100, seed=0), np.arange(50))


@pytest.mark.parametrize('settings, message', [
    ({'threshold': 1.5}, 'threshold=1.5'),
    ({'threshold': 0.1, 'on_drift': 'maybe'}, "on_drift='maybe'"),
    ({'threshold': 0.1, 'scored_examples': 0}, 'scored_examples=0'),
])
def test_the_component_refuses_settings_out_of_range(settings, message):
  with pytest.raises(ValueError, match=message):
    DriftCheck(examples=channel.Channel(type=standard_artifacts.Examples),
               baseline_model=channel.Channel(type=standard_artifacts.Model),
               score_key=features.ELBO_KEY, **settings)
