"""Seed 003's plain autoencoder: its architecture, its training defaults, what run_fn writes
for it, and its SavedModel's signatures (no `sample`)."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests import artifacts
from vaetfx.models import autoencoder, export, kinds, preprocessing, vae
from vaetfx.models.hparams import TrainingHparams
from vaetfx.shared import features

RLL = features.RECONSTRUCTION_LOG_LIKELIHOOD_KEY


@pytest.fixture(scope='module')
def model(trained_autoencoder):
  return export.load_exported_model(trained_autoencoder.serving_model_dir)


@pytest.fixture(scope='module')
def images(mnist_splits):
  return mnist_splits['eval'][0][:6]


def test_the_seed_architecture():
  network = kinds.AUTOENCODER.build(TrainingHparams(model='ae', latent_dim=2))
  assert [layer.units for layer in network.encoder.layers] == [500, 300, 2]
  assert [layer.units for layer in network.decoder.layers] == [300, 500, 784]
  layers = network.encoder.layers + network.decoder.layers
  activations = [layer.activation.__name__ for layer in layers]
  assert activations == ['relu', 'relu', 'linear'] * 2


def test_training_defaults_follow_the_model_unless_given():
  ae = TrainingHparams(model='ae')
  assert {name: getattr(ae, name) for name in kinds.AUTOENCODER.defaults} == {
      'epochs': 10, 'batch_size': 50, 'learning_rate': 1e-3, 'learning_rate_schedule': 'constant'}
  conv = TrainingHparams()
  assert {name: getattr(conv, name) for name in kinds.CONV.defaults} == kinds.VAE_DEFAULTS
  given = TrainingHparams(model='ae', epochs=3, learning_rate=4e-3)
  assert (given.epochs, given.learning_rate, given.batch_size) == (3, 4e-3, 50)
  # The custom_config carries the resolved values: the Trainer's cache key sees them.
  assert TrainingHparams.from_custom_config({'model': 'ae'}).to_custom_config()['epochs'] == 10
  assert TrainingHparams.from_custom_config(ae.to_custom_config()) == ae


def test_history_names_the_reconstruction_log_likelihood_never_the_elbo(trained_autoencoder):
  with open(os.path.join(trained_autoencoder.model_run_dir, 'history.json')) as f:
    history = json.load(f)
  assert history['hparams']['model'] == 'ae' and history['hparams']['batch_size'] == 50
  assert not any('elbo' in key for epoch in history['epochs'] for key in epoch)
  assert not any('elbo' in key for key in history)
  assert all(epoch[f'train_{RLL}'] < 0 and epoch[f'eval_{RLL}'] < 0 for epoch in history['epochs'])
  # Better than a coin per pixel (784 ln 2 nats) after two epochs on 200 digits.
  assert -784 * np.log(2) < history[f'final_eval_{RLL}'] < 0


def test_signatures_are_reconstruct_encode_decode_and_from_examples_without_sample(model):
  assert set(model.signatures) == set(kinds.AUTOENCODER.signatures)
  assert not model.variational and model.score_key == RLL
  with pytest.raises(export.NoSuchSignature, match="no 'sample' signature"):
    model.sample(3)


def test_outputs_are_the_code_its_decoding_and_the_bernoulli_log_likelihood(model, images):
  reconstructed = model.reconstruct(images)
  assert {key: value.shape for key, value in reconstructed.items()} == {
      'reconstruction': (6, 28, 28), 'latent': (6, 2), RLL: (6,)}
  code = model.encode(images)['latent']
  np.testing.assert_allclose(code, reconstructed['latent'], atol=1e-5)
  decoded = model.decode(code)
  np.testing.assert_allclose(decoded, reconstructed['reconstruction'], atol=1e-5)
  pixels = preprocessing.binarize(images.reshape(6, -1)).numpy()
  probabilities = np.clip(decoded.reshape(6, -1).astype(np.float64), 1e-7, 1 - 1e-7)
  expected = np.sum(pixels * np.log(probabilities) + (1 - pixels) * np.log1p(-probabilities), -1)
  np.testing.assert_allclose(reconstructed[RLL], expected, rtol=1e-3)


def test_from_examples_scores_as_serving_default(model, transformed_mnist, mnist_splits):
  examples = artifacts.read_examples(transformed_mnist.raw_examples_dir, 'eval')[:6]
  from_examples = model.from_examples([e.SerializeToString() for e in examples])
  images = np.array([np.array(e.features.feature['image'].int64_list.value, np.uint8)
                     .reshape(28, 28) for e in examples])
  np.testing.assert_allclose(from_examples[RLL], model.reconstruct(images)[RLL], rtol=1e-5)


def test_reconstruction_log_likelihood_is_bernoulli_on_the_logits():
  network = kinds.AUTOENCODER.build(TrainingHparams(model='ae', latent_dim=3))
  pixels = tf.constant(np.random.default_rng(0).integers(0, 2, (4, 784)), tf.float32)
  logits = network.decode(network.encode(pixels))
  expected = -tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(pixels, logits), -1)
  np.testing.assert_allclose(autoencoder.reconstruction_log_likelihood(network, pixels),
                             expected, rtol=1e-6)
  np.testing.assert_allclose(expected, vae.bernoulli_log_likelihood(pixels, logits), rtol=1e-6)
