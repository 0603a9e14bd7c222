"""ServingInfraValidator on real exported models, and what AtomicPusher does with its blessing.

Each executor run starts `vaetfx serve` in a child process, as in the pipeline.
"""
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2
from tfx.types import channel, standard_artifacts
from tfx.utils import path_utils

from tests import model_fixtures
from vaetfx.components.atomic_pusher import executor as pusher_executor
from vaetfx.components.atomic_pusher.component import AtomicPusher
from vaetfx.components.serving_infra_validator import checks, executor
from vaetfx.components.serving_infra_validator.component import ServingInfraValidator
from vaetfx.models import export

MODEL_NAME = 'vae'
NUM_EXAMPLES = 4


def _artifact(artifact_class, uri, **int_properties):
  artifact = artifact_class()
  artifact.uri = uri
  for name, value in int_properties.items():
    artifact.set_int_custom_property(name, value)
  return artifact


def _resave_with(exported_model_dir: str, target: str, name: str, replace) -> str:
  """The exported model saved again with signature `name` replaced by replace(original)."""
  loaded = tf.saved_model.load(exported_model_dir)
  signatures = dict(loaded.signatures)
  signatures[name] = replace(signatures[name])
  serving_dir = os.path.join(target, 'Format-Serving')
  tf.saved_model.save(loaded, serving_dir, signatures=signatures)
  return serving_dir


@pytest.fixture(scope='module')
def nan_decode_model(exported_model_dir, tmp_path_factory):
  """Loads, warms up and answers everything, but `decode` answers NaN."""
  def replace(decode):
    spec = decode.structured_input_signature[1]['latent']

    @tf.function(input_signature=[spec])
    def nan_decode(latent):
      return {'images': decode(latent=latent)['images'] * float('nan')}
    return nan_decode
  return _resave_with(exported_model_dir, str(tmp_path_factory.mktemp('nan_decode')), 'decode',
                      replace)


@pytest.fixture(scope='module')
def failing_sample_model(exported_model_dir, tmp_path_factory):
  """Loads in TensorFlow, but `sample` fails whenever it is called: its warmup fails."""
  def replace(sample):
    count_spec, seed_spec = (sample.structured_input_signature[1][key] for key in ('count', 'seed'))

    @tf.function(input_signature=[count_spec, seed_spec])
    def failing_sample(count, seed):
      check = tf.debugging.assert_less(count, 0, message='sample is broken')
      with tf.control_dependencies([check]):
        return sample(count=count, seed=seed)
    return failing_sample
  return _resave_with(exported_model_dir, str(tmp_path_factory.mktemp('failing_sample')),
                      'sample', replace)


def _validate(tmp_path, serving_model_dir, transformed_mnist):
  blessing = _artifact(standard_artifacts.InfraBlessing, str(tmp_path / 'blessing'))
  executor.Executor().Do(
      {'model': [_artifact(standard_artifacts.Model, os.path.dirname(serving_model_dir))],
       'examples': [model_fixtures.examples_artifact(transformed_mnist.raw_examples_dir)]},
      {'blessing': [blessing]},
      {executor.MODEL_NAME_KEY: MODEL_NAME, executor.NUM_EXAMPLES_KEY: NUM_EXAMPLES,
       executor.MAX_LOADING_SECONDS_KEY: 120})
  return blessing


def _push(tmp_path, infra_blessing):
  """AtomicPusher as the pipeline wires it: the model comes from the infra blessing."""
  pushed = _artifact(standard_artifacts.PushedModel, str(tmp_path / 'pushed'))
  serving_dir = str(tmp_path / 'serving')
  pusher_executor.Executor().Do(
      {'model_blessing': [_artifact(standard_artifacts.ModelBlessing, str(tmp_path / 'mb'),
                                    blessed=1)],
       'infra_blessing': [infra_blessing]},
      {'pushed_model': [pushed]},
      {pusher_executor.SERVING_DIR_KEY: serving_dir, pusher_executor.MODEL_NAME_KEY: MODEL_NAME,
       pusher_executor.KEEP_VERSIONS_KEY: 3})
  return pushed, os.path.join(serving_dir, MODEL_NAME)


def _warmup_signatures(saved_model_dir):
  path = path_utils.warmup_file_path(saved_model_dir)
  return [prediction_log_pb2.PredictionLog.FromString(record.numpy())
          .predict_log.request.model_spec.signature_name
          for record in tf.data.TFRecordDataset(path)]


def test_good_model_is_blessed_and_pushed_with_its_warmup_requests(tmp_path, exported_model_dir,
                                                                  transformed_mnist):
  blessing = _validate(tmp_path, exported_model_dir, transformed_mnist)
  assert blessing.get_int_custom_property(executor.BLESSED_KEY) == 1
  assert blessing.get_int_custom_property(executor.MODEL_FLAG_KEY) == 1
  assert os.path.exists(os.path.join(blessing.uri, executor.BLESSED_FILE))
  stamped = path_utils.stamped_model_path(blessing.uri)
  assert _warmup_signatures(stamped) == list(export.SIGNATURE_NAMES)

  pushed, model_dir = _push(tmp_path, blessing)
  assert pushed.get_int_custom_property('pushed') == 1
  version_dir = os.path.join(model_dir, pushed.get_string_custom_property('pushed_version'))
  assert _warmup_signatures(version_dir) == list(export.SIGNATURE_NAMES)
  served = export.load_exported_vae(version_dir)
  assert served.sample(3, seed=1).shape == (3, 28, 28)


def test_model_failing_one_signature_is_not_blessed_and_not_pushed(tmp_path, nan_decode_model,
                                                                  transformed_mnist):
  blessing = _validate(tmp_path, nan_decode_model, transformed_mnist)
  assert blessing.get_int_custom_property(executor.BLESSED_KEY) == 0
  failures = executor.read_failures(blessing.get_string_custom_property(executor.FAILURES_KEY))
  assert failures == [f'decode.images: {NUM_EXAMPLES * 28 * 28} of {NUM_EXAMPLES * 28 * 28} '
                      'values are not finite']
  with open(os.path.join(blessing.uri, executor.NOT_BLESSED_FILE)) as f:
    assert f.read() == failures[0] + '\n'
  assert not os.path.exists(path_utils.stamped_model_path(blessing.uri))

  pushed, model_dir = _push(tmp_path, blessing)
  assert pushed.get_int_custom_property('pushed') == 0
  assert not os.path.exists(model_dir)


def test_model_whose_warmup_fails_never_becomes_available(tmp_path, failing_sample_model,
                                                         transformed_mnist):
  blessing = _validate(tmp_path, failing_sample_model, transformed_mnist)
  assert blessing.get_int_custom_property(executor.BLESSED_KEY) == 0
  [failure] = executor.read_failures(
      blessing.get_string_custom_property(executor.FAILURES_KEY))
  assert failure.startswith('version 1 failed to load: warmup request 3 (sample) failed')
  assert 'sample is broken' in failure


def test_requests_cover_every_exported_signature():
  images = np.zeros((2, 28, 28), np.uint8)
  requests = checks.build_requests(images, [b'', b''], latent_dim=2)
  assert tuple(r.signature_name for r in requests) == export.SIGNATURE_NAMES
  assert all(checks.batch_size(r) == 2 for r in requests)


def test_pusher_needs_a_model_or_an_infra_blessing_that_carries_one():
  model_blessing = channel.Channel(type=standard_artifacts.ModelBlessing)
  with pytest.raises(ValueError, match='needs a model'):
    AtomicPusher(model=None, model_blessing=model_blessing, serving_dir='/s', model_name='vae')
  with pytest.raises(ValueError, match='must be at least 1'):
    ServingInfraValidator(model=channel.Channel(type=standard_artifacts.Model),
                          examples=channel.Channel(type=standard_artifacts.Examples),
                          model_name='vae', num_examples=0)
