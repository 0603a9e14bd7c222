"""The IWAE bound against a plain numpy computation, and its determinism and properties."""
import threading

import numpy as np
import pytest
import tensorflow as tf

from vaetfx.models import export
from vaetfx.models import iwae

LATENT_DIM = 3
NUM_PIXELS = 784


def _linear_model(seed=0):
  """A decoder (logits = z W + b) and an encoder (mean, logvar affine in the pixels), in
  TensorFlow for iwae and in numpy for the reference."""
  rng = np.random.default_rng(seed)
  weights = rng.normal(0, 2.0, (LATENT_DIM, NUM_PIXELS)).astype(np.float32)
  bias = rng.normal(0, 1.0, NUM_PIXELS).astype(np.float32)
  encoder = rng.normal(0, 0.01, (NUM_PIXELS, 2 * LATENT_DIM)).astype(np.float32)

  def numpy_pixels(images):
    return (images.reshape(len(images), -1) / 255.0 >= 0.5).astype(np.float64)

  def encode(images):
    params = numpy_pixels(images).astype(np.float32) @ encoder
    return params[:, :LATENT_DIM], params[:, LATENT_DIM:] - 1.0

  def decode_logits(latent):
    return tf.matmul(latent, weights) + bias

  return encode, decode_logits, numpy_pixels, weights.astype(np.float64), bias.astype(np.float64)


def _numpy_log_weights(pixels, mean, logvar, noise, weights, bias):
  """log p(x|z) + log p(z) - log q(z|x), written out in float64 numpy, [N, K]."""
  latent = mean[:, None] + np.exp(0.5 * logvar)[:, None] * noise
  logits = latent @ weights + bias
  log_sigmoid = lambda t: -np.logaddexp(0.0, -t)
  log_likelihood = np.sum(pixels[:, None] * log_sigmoid(logits)
                          + (1 - pixels[:, None]) * log_sigmoid(-logits), axis=-1)
  log_prior = np.sum(-0.5 * (latent ** 2 + np.log(2 * np.pi)), axis=-1)
  log_posterior = np.sum(-0.5 * ((latent - mean[:, None]) ** 2 / np.exp(logvar)[:, None]
                                 + logvar[:, None] + np.log(2 * np.pi)), axis=-1)
  return log_likelihood + log_prior - log_posterior


def _numpy_bound(log_weights, count):
  """Mean over disjoint groups of `count` draws of log(mean(exp(log w))), with the max trick."""
  groups = log_weights.reshape(len(log_weights), -1, count)
  peak = groups.max(axis=-1, keepdims=True)
  per_group = peak[..., 0] + np.log(np.mean(np.exp(groups - peak), axis=-1))
  return per_group.mean(axis=-1)


@pytest.fixture(scope='module')
def digits():
  rng = np.random.default_rng(7)
  images = (rng.random((13, 28, 28)) < 0.2).astype(np.uint8) * 255
  return images, rng.integers(0, 3, 13)


def test_bounds_match_a_plain_numpy_computation(digits):
  images, labels = digits
  encode, decode_logits, numpy_pixels, weights, bias = _linear_model()
  result = iwae.heldout_log_likelihood(encode, decode_logits, images, labels, 100, seed=3)
  mean, logvar = (array.astype(np.float64) for array in encode(images))
  noise = np.stack([iwae.image_noise(3, i, 100, LATENT_DIM) for i in range(len(images))])
  log_weights = _numpy_log_weights(numpy_pixels(images), mean, logvar, noise, weights, bias)
  # Thousands of nats per image on this model: log p(x|z) is far from 0, so a float32
  # sum over 784 pixels carries about 1e-4 relative error.
  assert sorted(result.bounds) == [1, 10, 100]
  for count in (1, 10, 100):
    np.testing.assert_allclose(result.bounds[count], _numpy_bound(log_weights, count), rtol=2e-5)
  assert result.overall[100] == pytest.approx(np.mean(_numpy_bound(log_weights, 100)), rel=2e-5)
  for digit in np.unique(labels):
    assert result.by_digit[digit][10] == pytest.approx(
        np.mean(_numpy_bound(log_weights, 10)[labels == digit]), rel=2e-5)


def test_log_sum_exp_stays_finite_where_the_weights_underflow():
  log_weights = tf.constant([[-5000.0, -5001.0, -4999.0, -5002.0]])
  bounds = iwae.iwae_bounds(log_weights, (1, 2, 4))
  with np.errstate(divide='ignore'):
    naive = np.log(np.mean(np.exp(np.float32(log_weights.numpy()))))
  assert not np.isfinite(naive)
  expected = _numpy_bound(log_weights.numpy().astype(np.float64), 4)
  np.testing.assert_allclose(bounds[4].numpy(), expected, rtol=1e-6)
  assert bounds[1].numpy() <= bounds[2].numpy() <= bounds[4].numpy()


def test_same_seed_same_numbers_whatever_the_batch_size(digits, monkeypatch):
  images, labels = digits
  encode, decode_logits, *_ = _linear_model()
  first = iwae.heldout_log_likelihood(encode, decode_logits, images, labels, 10, seed=5)
  monkeypatch.setattr(iwae, 'LATENTS_PER_CALL', 30)  # 3 images per call, not 200.
  rebatched = iwae.heldout_log_likelihood(encode, decode_logits, images, labels, 10, seed=5)
  other_seed = iwae.heldout_log_likelihood(encode, decode_logits, images, labels, 10, seed=6)
  for count in (1, 10):
    # The same samples; float32 sums of other batch shapes may round differently (oneDNN picks
    # kernels by shape: 6e-5 nats of ~100 seen on an AVX-512 machine), a different seed does not.
    np.testing.assert_allclose(first.bounds[count], rebatched.bounds[count], rtol=1e-6)
    assert not np.allclose(first.bounds[count], other_seed.bounds[count], rtol=1e-3)


def test_concurrent_batches_give_one_at_a_time_numbers_in_image_order(digits, monkeypatch):
  """Batches run two at a time from two threads: the first two meet at a barrier (so they
  really overlap), and the first is held until the second has finished, so that
  results gathered in completion order would come out shuffled."""
  images, labels = digits
  encode, decode_logits, *_ = _linear_model()
  monkeypatch.setattr(iwae, 'LATENTS_PER_CALL', 30)  # 3 images per call: 5 batches.
  alone = iwae.heldout_log_likelihood(encode, decode_logits, images, labels, 10, seed=5,
                                      concurrent_calls=1)
  both_started = threading.Barrier(2, timeout=60)
  second_done = threading.Event()
  calls = []

  def overlapping_encode(batch):
    call = len(calls)
    calls.append(call)
    if call < 2:
      both_started.wait()
    if call == 0:
      assert second_done.wait(timeout=60)
    result = encode(batch)
    if call == 1:
      second_done.set()
    return result

  together = iwae.heldout_log_likelihood(overlapping_encode, decode_logits, images, labels, 10,
                                         seed=5, concurrent_calls=2)
  assert len(calls) == 5
  for count in (1, 10):
    np.testing.assert_allclose(together.bounds[count], alone.bounds[count], rtol=1e-6)
  np.testing.assert_array_equal(together.labels, labels)


def test_bound_rises_with_k_and_stays_below_zero_on_a_trained_model(exported_model_dir,
                                                                    mnist_splits):
  """On average over images L_1 <= L_10 <= L_100 (Burda et al., theorem 1), and log p(x) <= 0."""
  images, labels = mnist_splits['eval']
  vae = export.load_exported_model(exported_model_dir)

  def encode(batch):
    encoded = vae.encode(batch)
    return encoded['latent_mean'], encoded['latent_logvar']

  result = iwae.heldout_log_likelihood(encode, vae.decode_logits, images[:40], labels[:40],
                                       100, seed=0)
  overall = result.overall
  assert overall[1] < overall[10] < overall[100] < 0
  assert set(result.by_digit) == {int(digit) for digit in np.unique(labels[:40])}


def test_sample_counts_are_powers_of_ten():
  assert iwae.sample_counts(1) == (1,)
  assert iwae.sample_counts(1000) == (1, 10, 100, 1000)
  for bad in (0, 50, 200):
    with pytest.raises(ValueError, match='power of ten'):
      iwae.sample_counts(bad)


def test_standard_error_is_the_sample_std_over_sqrt_n_of_the_per_image_bounds():
  per_image = {1: np.array([-90.0, -80.5, -70.25, -101.0], np.float32),
               10: np.array([-85.0, -79.0, -69.5, -95.0], np.float32)}
  result = iwae.HeldoutLikelihood(per_image, np.array([0, 1, 1, 2]), seed=0, seconds=1.0)
  for count, values in per_image.items():
    values = values.astype(np.float64)
    expected = np.sqrt(np.sum((values - values.mean()) ** 2) / (len(values) - 1) / len(values))
    assert result.standard_errors[count] == pytest.approx(expected, rel=1e-12)
  assert result.to_json()['standard_error'] == {
      str(count): error for count, error in result.standard_errors.items()}
  assert result.standard_errors[1] > result.standard_errors[10]  # These digits spread less.


def test_standard_error_is_left_out_for_a_single_image_and_zero_for_equal_ones():
  single = iwae.HeldoutLikelihood({1: np.array([-90.0])}, np.array([3]), seed=0, seconds=1.0)
  assert single.standard_errors == {1: None}
  assert single.to_json()['standard_error'] == {'1': None}
  equal = iwae.HeldoutLikelihood({1: np.full(5, -42.5, np.float32)}, np.zeros(5), 0, 1.0)
  assert equal.standard_errors[1] == 0.0


def test_format_bound_states_the_error_only_when_there_is_one():
  assert iwae.format_bound(-70.454, 1.516) == '-70.45 ± 1.52'
  assert iwae.format_bound(-70.454, None) == '-70.45'


def test_reported_standard_error_matches_numpy_on_the_computed_bounds(digits):
  images, labels = digits
  encode, decode_logits, *_ = _linear_model()
  result = iwae.heldout_log_likelihood(encode, decode_logits, images, labels, 10, seed=3)
  for count in (1, 10):
    values = result.bounds[count].astype(np.float64)
    assert result.to_json()['standard_error'][str(count)] == pytest.approx(
        np.std(values, ddof=1) / np.sqrt(len(values)), rel=1e-9)
