"""DriftCheck's executor on drawn digits and a model the Trainer's run_fn really exported."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from PIL import Image
from tfx.types import channel, standard_artifacts

from tests import synthetic_mnist
from vaetfx.components.drift_check import driver, executor
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
        previous_span_uri: str = '') -> executor.DriftResult:
  """The executor as TFX runs it; previous_span_uri: the Examples the driver found (span 1)."""
  drift = DataDrift()
  drift.uri = str(tmp_path / 'drift')
  inputs = {executor.EXAMPLES_KEY: [_examples(new_uri, span=2)],
            executor.BASELINE_MODEL_KEY: [baseline]}
  executor.Executor().Do(inputs, {executor.DRIFT_KEY: [drift]}, {
      executor.THRESHOLD_KEY: THRESHOLD, executor.ON_DRIFT_KEY: on_drift,
      executor.SCORE_KEY: features.ELBO_KEY, executor.SCORED_EXAMPLES_KEY: 2000,
      executor.SEED_KEY: 0, executor.PREVIOUS_SPAN_KEY: json.dumps(
          {'examples_uri': previous_span_uri, 'span': 1}) if previous_span_uri else ''})
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
  assert result.not_checked == ['the served model is not comparable (version 3 is a symlink)']


def test_the_served_models_data_gone_is_not_checked(tmp_path, previous_uri, exported_model_dir):
  gone = str(tmp_path / 'deleted_examples')
  result = run(tmp_path, previous_uri, _served(exported_model_dir, gone))
  assert not result.checked
  assert result.not_checked == [
      f'the data served version {SERVED_VERSION} was evaluated on ({gone}) is not readable']


def test_new_digits_of_the_same_distribution_are_not_drift(tmp_path, digits, previous_uri,
                                                           exported_model_dir):
  """The same 150 digits in the reverse order: both distances are 0."""
  images, labels = digits
  new_uri = write_examples(str(tmp_path / 'new'), images[:150][::-1], labels[:150][::-1])
  result = run(tmp_path, new_uri, _served(exported_model_dir, previous_uri))
  assert result.checked and not result.drifted
  assert result.label_l_infinity == 0 and result.score_ks == 0 and result.median_shift == 0
  assert result.scored == (150, 150)
  assert result.scores_against['served_version'] == SERVED_VERSION
  assert result.labels_against == result.scores_against
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


def test_labels_are_compared_with_the_previous_span_and_scores_with_the_served_data(
    tmp_path, digits, exported_model_dir):
  """Span 1 held digits 5-9; the served model was evaluated on digits 0-4, which arrive again:
  the labels drift from span 1's, the served model's scores do not move."""
  images, labels = digits
  high, low = labels >= 5, labels < 5
  span_uri = write_examples(str(tmp_path / 'span1'), images[high], labels[high])
  served_uri = write_examples(str(tmp_path / 'served'), images[low], labels[low])
  result = run(tmp_path, served_uri, _served(exported_model_dir, served_uri),
               previous_span_uri=span_uri)
  assert result.labels_against == {'examples_uri': span_uri, 'span': 1,
                                   'what': 'the previous span, 1'}
  assert result.scores_against['examples_uri'] == served_uri
  assert result.label_l_infinity > THRESHOLD and result.score_ks == 0
  assert result.over_threshold == ['label distribution (L-infinity)']
  assert 'labels L-infinity 0.' in result.describe() and 'against the previous span, 1' in (
      result.describe())


def test_a_previous_span_with_nothing_served_checks_the_labels_alone(tmp_path, digits,
                                                                     previous_uri):
  images, labels = digits
  new_uri = write_examples(str(tmp_path / 'new'), images[150:], labels[150:])
  result = run(tmp_path, new_uri, _nothing_served(), previous_span_uri=previous_uri)
  assert result.checked and result.label_l_infinity is not None and result.score_ks is None
  assert result.not_checked == ['the served model\'s ELBO: nothing is served yet, so there is '
                                'no previous data to compare with']
  assert not result.picture


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


def _store_with_spans():
  """ML Metadata holding Examples as TFX attributes them to ExampleGen's node context: spans
  1, 2 (twice) and 3 of pipeline p, a newer span 2 of pipeline q, a deleted newer span 2 of p,
  and a span-less Examples of p (another producer's)."""
  config = metadata_store_pb2.ConnectionConfig()
  config.fake_database.SetInParent()
  store = metadata_store.MetadataStore(config)
  type_id = store.put_artifact_type(metadata_store_pb2.ArtifactType(
      name='Examples', properties={'span': metadata_store_pb2.INT}))  # declared, left unset
  node_type = store.put_context_type(metadata_store_pb2.ContextType(name='node'))
  contexts = dict(zip('pq', store.put_contexts([
      metadata_store_pb2.Context(type_id=node_type, name=f'{pipeline}.MnistExampleGen')
      for pipeline in 'pq'])))
  for pipeline, span, state, uri in (('p', 1, 'LIVE', 'p1'), ('p', 2, 'LIVE', 'p2-old'),
                                     ('p', 2, 'LIVE', 'p2'), ('p', 3, 'LIVE', 'p3'),
                                     ('q', 2, 'LIVE', 'q2'), ('p', 2, 'DELETED', 'p2-deleted'),
                                     ('p', None, 'LIVE', 'no-span')):
    artifact = metadata_store_pb2.Artifact(
        type_id=type_id, uri=uri, state=getattr(metadata_store_pb2.Artifact, state))
    # As TFX's ExampleGen driver records it; older TFX wrote a string.
    if span is None:
      pass
    elif uri == 'p1':
      artifact.custom_properties['span'].string_value = str(span)
    else:
      artifact.custom_properties['span'].int_value = span
    [artifact_id] = store.put_artifacts([artifact])
    store.put_attributions_and_associations([metadata_store_pb2.Attribution(
        artifact_id=artifact_id, context_id=contexts[pipeline])], [])
  return store


def test_the_driver_finds_the_newest_live_examples_of_the_largest_earlier_span_of_its_pipeline():
  store = _store_with_spans()
  assert driver.previous_span(store, 'p.MnistExampleGen', 3).uri == 'p2'
  assert driver.previous_span(store, 'p.MnistExampleGen', 2).uri == 'p1'
  assert driver.previous_span(store, 'p.MnistExampleGen', 1) is None
  assert driver.previous_span(store, 'q.MnistExampleGen', 3).uri == 'q2'
  assert driver.previous_span(store, 'other.MnistExampleGen', 3) is None
