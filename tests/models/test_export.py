"""The exported SavedModel: its signatures, their shapes, the Transform inside, and bad input."""
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from tests import artifacts
from vaetfx.models import export, preprocessing
from vaetfx.shared import features

LATENT_DIM = 2  # model_fixtures.TINY_HPARAMS
IMAGE = [-1, 28, 28]
# What `saved_model_cli show --all` must list: {signature: ({input: (dtype, shape)}, {output: ...})}.
DOCUMENTED_SIGNATURES = {
    'serving_default': (
        {'images': (tf.uint8, IMAGE)},
        {'reconstruction': (tf.float32, IMAGE), 'latent_mean': (tf.float32, [-1, LATENT_DIM]),
         'latent_logvar': (tf.float32, [-1, LATENT_DIM]), 'elbo': (tf.float32, [-1])}),
    'encode': (
        {'images': (tf.uint8, IMAGE)},
        {'latent_mean': (tf.float32, [-1, LATENT_DIM]),
         'latent_logvar': (tf.float32, [-1, LATENT_DIM])}),
    'decode': ({'latent': (tf.float32, [-1, LATENT_DIM])}, {'images': (tf.float32, IMAGE)}),
    'sample': ({'count': (tf.int32, []), 'seed': (tf.int64, [])}, {'images': (tf.float32, IMAGE)}),
    'from_examples': (
        {'examples': (tf.string, [-1])},
        {'reconstruction': (tf.float32, IMAGE), 'latent_mean': (tf.float32, [-1, LATENT_DIM]),
         'latent_logvar': (tf.float32, [-1, LATENT_DIM]), 'elbo': (tf.float32, [-1])}),
}


@pytest.fixture(scope='module')
def model(exported_model_dir):
  return export.load_exported_model(exported_model_dir)


@pytest.fixture(scope='module')
def images(mnist_splits):
  return mnist_splits['eval'][0][:5]


def _tensor_specs(tensor_infos):
  return {name: (tf.as_dtype(info.dtype), [d.size for d in info.tensor_shape.dim])
          for name, info in tensor_infos.items()}


def test_signature_defs_are_named_typed_and_shaped(exported_model_dir):
  saved_model = saved_model_pb2.SavedModel()
  with open(os.path.join(exported_model_dir, 'saved_model.pb'), 'rb') as f:
    saved_model.ParseFromString(f.read())
  signature_defs = saved_model.meta_graphs[0].signature_def
  for name, (inputs, outputs) in DOCUMENTED_SIGNATURES.items():
    assert _tensor_specs(signature_defs[name].inputs) == inputs, name
    assert _tensor_specs(signature_defs[name].outputs) == outputs, name


def test_every_signature_returns_the_documented_shapes(model, images):
  count = len(images)
  reconstructed = model.reconstruct(images)
  assert reconstructed['reconstruction'].shape == (count, 28, 28)
  assert reconstructed['latent_mean'].shape == reconstructed['latent_logvar'].shape == (count, 2)
  assert reconstructed['elbo'].shape == (count,)
  assert np.all(reconstructed['elbo'] < 0)
  probabilities = reconstructed['reconstruction']
  assert np.all((probabilities >= 0) & (probabilities <= 1))
  assert {k: v.shape for k, v in model.encode(images).items()} == {
      'latent_mean': (count, 2), 'latent_logvar': (count, 2)}
  assert model.decode(np.zeros((3, 2))).shape == (3, 28, 28)
  assert model.sample(4).shape == (4, 28, 28)
  assert model.sample(0).shape == (0, 28, 28)
  assert model.latent_dim == LATENT_DIM


def test_reconstruction_is_the_decoded_latent_mean(model, images):
  reconstruction = model.reconstruct(images)['reconstruction']
  np.testing.assert_allclose(reconstruction,
                             model.decode(model.encode(images)['latent_mean']), atol=1e-6)


def test_signature_binarizes_like_preprocessing(model, mnist_splits):
  """Pixels 127 and 128 straddle the threshold: each image must act as its binarized self."""
  rng = np.random.default_rng(0)
  raw = rng.choice(np.array([0, 1, 126, 127, 128, 129, 254, 255], np.uint8), size=(4, 28, 28))
  raw = np.concatenate([raw, mnist_splits['eval'][0][:4]])
  binarized = preprocessing.binarize(raw).numpy().astype(np.uint8) * 255
  for key, value in model.reconstruct(raw).items():
    np.testing.assert_array_equal(value, model.reconstruct(binarized)[key], err_msg=key)
  shifted = np.where(raw == 127, 128, raw).astype(np.uint8)
  assert not np.allclose(model.encode(shifted)['latent_mean'], model.encode(raw)['latent_mean'])


def test_from_examples_matches_serving_default_and_ignores_batching(model, transformed_mnist):
  examples = artifacts.read_examples(transformed_mnist.raw_examples_dir, 'eval')[:6]
  serialized = [example.SerializeToString() for example in examples]
  images = np.array([e.features.feature[features.IMAGE_KEY].int64_list.value for e in examples],
                    np.uint8).reshape(-1, 28, 28)
  from_examples = model.from_examples(serialized)
  for key, value in model.reconstruct(images).items():
    np.testing.assert_allclose(from_examples[key], value, atol=1e-5, err_msg=key)
  one_at_a_time = np.concatenate([model.from_examples(serialized[i:i + 1])['elbo']
                                  for i in range(len(serialized))])
  np.testing.assert_allclose(one_at_a_time, from_examples['elbo'], rtol=1e-5)
  np.testing.assert_array_equal(model.from_examples(serialized)['elbo'], from_examples['elbo'])


def test_sample_seed_is_deterministic_and_negative_seed_is_fresh(model, exported_model_dir):
  np.testing.assert_array_equal(model.sample(3, seed=7), model.sample(3, seed=7))
  assert not np.array_equal(model.sample(3, seed=7), model.sample(3, seed=8))
  assert not np.array_equal(model.sample(3), model.sample(3))
  first_draws = [export.load_exported_model(exported_model_dir).sample(3) for _ in range(2)]
  assert not np.array_equal(*first_draws), 'every fresh load repeats the same "random" draw'


@pytest.mark.parametrize('bad_images', [
    np.zeros((3, 27, 28), np.uint8),
    np.zeros((28, 28, 3), np.uint8),
    np.zeros((28, 28), np.uint8),
], ids=['27x28', '28x3', 'rank2'])
@pytest.mark.parametrize('signature', ['serving_default', 'encode'])
def test_wrong_image_shape_fails_clearly(model, signature, bad_images):
  with pytest.raises(tf.errors.InvalidArgumentError, match=r'images: expected uint8 \[N, 28, 28\]'):
    model.signatures[signature](images=tf.constant(bad_images))


def test_wrong_dtype_fails_clearly(model):
  with pytest.raises(tf.errors.InvalidArgumentError, match='expected to be a uint8 tensor'):
    model.signatures['serving_default'](images=tf.zeros([2, 28, 28], tf.float32))
  with pytest.raises(tf.errors.InvalidArgumentError, match='expected to be a uint8 tensor'):
    model.reconstruct(np.zeros((2, 28, 28), np.float32))


def test_negative_sample_count_fails_clearly(model):
  with pytest.raises(tf.errors.InvalidArgumentError, match='count must be >= 0'):
    model.sample(-1)
