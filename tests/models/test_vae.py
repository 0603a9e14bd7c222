"""The ELBO of models/vae.py against an independent numpy computation, for fixed weights and noise."""
import numpy as np
import pytest
import tensorflow as tf

from vaetfx.models import kinds, vae as vae_lib
from vaetfx.models.hparams import TrainingHparams
from vaetfx.shared import features

LATENT_DIM = 3
LOG_2PI = np.log(2 * np.pi)


def _log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


def _numpy_log_likelihood(pixels, logits):
  """sum of x log(sigmoid(l)) + (1 - x) log(1 - sigmoid(l)), written out rather than fused."""
  return np.sum(pixels * _log_sigmoid(logits) + (1 - pixels) * _log_sigmoid(-logits), axis=-1)


def _numpy_kl(estimator, mean, logvar, latent):
  """Seed 002's closed form, or seed 000's single-sample log q(z|x) - log p(z)."""
  if estimator == 'analytic':
    return -0.5 * np.sum(1 + logvar - mean ** 2 - np.exp(logvar), axis=-1)
  log_q = np.sum(-0.5 * ((latent - mean) ** 2 / np.exp(logvar) + logvar + LOG_2PI), axis=-1)
  log_p = np.sum(-0.5 * (latent ** 2 + LOG_2PI), axis=-1)
  return log_q - log_p


def _numpy_mlp(vae, pixels):
  """Seed 002's MLP forward pass in numpy from the model's weights: (mean, logvar, decode)."""
  w1, b1, w2, b2 = (v.numpy().astype(np.float64) for v in vae.encoder.variables)
  w3, b3, w4, b4 = (v.numpy().astype(np.float64) for v in vae.decoder.variables)
  encoded = np.maximum(pixels @ w1 + b1, 0) @ w2 + b2
  decode = lambda latent: np.maximum(latent @ w3 + b3, 0) @ w4 + b4
  return encoded[:, :LATENT_DIM], encoded[:, LATENT_DIM:], decode


def _keras_conv(vae, pixels):
  """The conv model's networks as fixed functions; the ELBO arithmetic on top is numpy's."""
  encoded = vae.encoder(pixels.astype(np.float32)).numpy().astype(np.float64)
  decode = lambda latent: vae.decoder(latent.astype(np.float32)).numpy().astype(np.float64)
  return encoded[:, :LATENT_DIM], encoded[:, LATENT_DIM:], decode


@pytest.fixture(scope='module')
def pixels(mnist_splits):
  images = mnist_splits['eval'][0][:6].reshape(-1, features.NUM_PIXELS)
  return (images >= 128).astype(np.float64)


def _vae(model):
  tf.keras.utils.set_random_seed(7)
  return kinds.kind(model).build(TrainingHparams(model=model, latent_dim=LATENT_DIM))


@pytest.mark.parametrize('estimator', ['analytic', 'monte_carlo'])
@pytest.mark.parametrize('model, numpy_networks', [('mlp', _numpy_mlp), ('conv', _keras_conv)])
def test_elbo_terms_match_numpy(pixels, model, numpy_networks, estimator):
  vae = _vae(model)
  noise = np.random.default_rng(3).standard_normal((len(pixels), LATENT_DIM))
  log_likelihood, kl = vae_lib.elbo_terms(
      vae, tf.constant(pixels, tf.float32), tf.constant(noise, tf.float32), estimator)

  mean, logvar, decode = numpy_networks(vae, pixels)
  latent = mean + np.exp(0.5 * logvar) * noise
  np.testing.assert_allclose(log_likelihood, _numpy_log_likelihood(pixels, decode(latent)),
                             rtol=1e-4)
  np.testing.assert_allclose(kl, _numpy_kl(estimator, mean, logvar, latent), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('model, numpy_networks', [('mlp', _numpy_mlp), ('conv', _keras_conv)])
def test_fixed_noise_elbo_matches_numpy_and_ignores_batching(pixels, model, numpy_networks):
  vae = _vae(model)
  table = vae_lib.eval_noise(4, LATENT_DIM)
  x = tf.constant(pixels, tf.float32)
  mean_tf, logvar_tf = vae.encode(x)
  elbo = vae_lib.fixed_noise_elbo(vae.decode, x, mean_tf, logvar_tf, table).numpy()

  rows = (pixels.astype(np.int64) @ vae_lib.PIXEL_HASH_WEIGHTS) % vae_lib.EVAL_NOISE_ROWS
  assert len(set(rows)) == len(pixels), 'each image should get its own draws'
  mean, logvar, decode = numpy_networks(vae, pixels)
  expected = [  # An image's K draws decoded as one batch [K, L].
      np.mean(_numpy_log_likelihood(pixels[i], decode(mean[i] + np.exp(0.5 * logvar[i]) * draws)))
      for i, draws in enumerate(table[rows])
  ] - _numpy_kl('analytic', mean, logvar, None)
  np.testing.assert_allclose(elbo, expected, rtol=1e-4)

  one_at_a_time = [vae_lib.fixed_noise_elbo(vae.decode, x[i:i + 1], mean_tf[i:i + 1],
                                            logvar_tf[i:i + 1], table).numpy()[0]
                   for i in range(len(pixels))]
  np.testing.assert_allclose(one_at_a_time, elbo, rtol=1e-5)


def test_eval_noise_is_a_fixed_table():
  table = vae_lib.eval_noise(4, 2)
  assert table.shape == (vae_lib.EVAL_NOISE_ROWS, 4, 2) and table.dtype == np.float32
  np.testing.assert_array_equal(table, vae_lib.eval_noise(4, 2))


@pytest.mark.parametrize('estimator', ['analytic', 'monte_carlo'])
def test_all_zero_and_all_one_images_give_finite_loss_and_gradients(estimator):
  vae = _vae('conv')
  pixels = tf.constant(np.stack([np.zeros(features.NUM_PIXELS), np.ones(features.NUM_PIXELS)]),
                       tf.float32)
  saturating = [tf.fill([features.NUM_PIXELS], value) for value in (-1e4, 1e4)]
  assert np.all(np.isfinite(vae_lib.bernoulli_log_likelihood(pixels, tf.stack(saturating))))
  with tf.GradientTape() as tape:
    log_likelihood, kl = vae_lib.elbo_terms(vae, pixels, tf.zeros([2, LATENT_DIM]), estimator)
    loss = tf.reduce_mean(kl - log_likelihood)
  gradients = tape.gradient(loss, vae.trainable_variables)
  assert np.isfinite(loss.numpy())
  assert all(np.all(np.isfinite(g.numpy())) for g in gradients)


def test_mixed_precision_computes_in_float16_and_returns_float32(pixels):
  hparams = TrainingHparams(latent_dim=LATENT_DIM, mixed_precision=True)
  vae = hparams.kind.build(hparams)
  assert {layer.compute_dtype for layer in vae.decoder.layers} == {'float16'}
  assert {v.dtype for v in vae.variables} == {tf.float32}
  mean, logvar = vae.encode(tf.constant(pixels, tf.float32))
  assert mean.dtype == logvar.dtype == vae.decode(mean).dtype == tf.float32


def test_float32_copy_has_the_same_weights_and_outputs(pixels):
  hparams = TrainingHparams(latent_dim=LATENT_DIM, mixed_precision=True)
  vae = hparams.kind.build(hparams)
  copy = vae_lib.float32_copy(vae, hparams)
  assert {layer.compute_dtype for layer in copy.decoder.layers} == {'float32'}
  for original, copied in zip(vae.variables, copy.variables):
    np.testing.assert_array_equal(original.numpy(), copied.numpy())
  x = tf.constant(pixels, tf.float32)
  np.testing.assert_allclose(copy.encode(x)[0], vae.encode(x)[0], atol=2e-2)
