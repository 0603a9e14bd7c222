"""Held-out log-likelihood: the importance-weighted bound of Burda et al. (IWAE, 2016).

For an image x and K draws z_k ~ q(z|x) from the encoder,

  L_K(x) = log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x)

is a lower bound on log p(x) that rises with K towards it; L_1 is the ELBO.
VAE papers report L_K for large K (usually 5000) as the model's held-out
log-likelihood, in nats per image. It is computed in log space with a
log-sum-exp, since p(x|z) of a whole image underflows float32.

All K values come from one set of K_max draws per image: L_K for a smaller K is
the mean of L_K over the K_max / K disjoint groups of K draws, an unbiased
estimate of the same bound with less noise, at no extra decoding. Each image
draws its noise from its own seed (`seed`, its index), so the result depends on
the seed and the subset only, never on batching.

Each K's mean comes with its standard error over the images (standard_error),
the uncertainty that matters: digits differ by tens of nats, while the Monte
Carlo error of the mean is a tenth of a nat or less (docs/pipeline.md).
"""
import dataclasses
import time
from concurrent import futures
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from vaetfx.models import preprocessing, vae as vae_lib
from vaetfx.shared import features, validation

RESULTS_FILE = 'heldout_log_likelihood.json'  # HeldoutLikelihood.to_json(), in the report.
# Decoded latents per call: bounds memory (the conv decoder's activations are
# about 0.1 MB per latent) while keeping calls large enough to be efficient.
LATENTS_PER_CALL = 2000
# Batches in flight at once, each one call from its own thread, so that where one
# batch leaves a core idle (its noise, its encoder call, the gaps between ops that
# TensorFlow's intra-op pool does not fill) the other's ops can use it: one at a
# time, the bound took about 21 CPU-s in 12.1 s of wall on 2 cores, idle
# (docs/measurements.md, "After the Trainer"). Memory: this many calls' activations
# at once. Each image's noise has its own seed and the batches are gathered in
# order, so the bounds do not depend on which thread computed them.
CONCURRENT_CALLS = 2

Encode = Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]]
DecodeLogits = Callable[[tf.Tensor], tf.Tensor]


def sample_counts(max_samples: int) -> Tuple[int, ...]:
  """K = 1, 10, 100, ... up to max_samples, which must be a power of ten (each K divides it)."""
  powers_of_ten = validation.PowersOfTen()
  if not powers_of_ten.contains(max_samples):
    raise ValueError(f'max_samples={max_samples}: expected {powers_of_ten.describe()}')
  return tuple(10 ** power for power in range(len(str(max_samples))))


def image_noise(seed: int, index: int, samples: int, latent_dim: int) -> np.ndarray:
  """Image `index`'s standard-normal draws [samples, latent_dim], from its own seed."""
  return np.random.default_rng([seed, index]).standard_normal(
      (samples, latent_dim), dtype=np.float32)


def log_importance_weights(decode_logits: DecodeLogits, pixels: tf.Tensor, mean: tf.Tensor,
                           logvar: tf.Tensor, noise: tf.Tensor) -> tf.Tensor:
  """log p(x|z_k) + log p(z_k) - log q(z_k|x) for z_k = mean + std * noise_k: [N, K].

  pixels [N, 784] binarized; mean, logvar [N, L]; noise [N, K, L];
  decode_logits maps [M, L] latents to [M, 784] Bernoulli logits.
  """
  mean, logvar = mean[:, tf.newaxis], logvar[:, tf.newaxis]
  latent = mean + tf.exp(0.5 * logvar) * noise
  samples, latent_dim = tf.shape(noise)[1], tf.shape(noise)[2]
  logits = tf.reshape(decode_logits(tf.reshape(latent, [-1, latent_dim])),
                      [-1, samples, features.NUM_PIXELS])
  log_likelihood = vae_lib.bernoulli_log_likelihood(
      tf.broadcast_to(pixels[:, tf.newaxis], tf.shape(logits)), logits)
  return (log_likelihood + vae_lib.log_normal_pdf(latent, 0.0, 0.0)
          - vae_lib.log_normal_pdf(latent, mean, logvar))


def iwae_bounds(log_weights: tf.Tensor, counts: Sequence[int]) -> Dict[int, tf.Tensor]:
  """L_K per image [N] for each K in `counts`, from log weights [N, K_max] (K divides K_max).

  L_K of a group of K draws is logsumexp(log w) - log K; groups are averaged.
  """
  max_samples = log_weights.shape[1]
  bounds = {}
  for count in counts:
    groups = tf.reshape(log_weights, [-1, max_samples // count, count])
    per_group = tf.reduce_logsumexp(groups, axis=-1) - tf.math.log(float(count))
    bounds[count] = tf.reduce_mean(per_group, axis=-1)
  return bounds


def standard_error(values: np.ndarray) -> Optional[float]:
  """The standard error of the mean of `values`: their sample standard deviation (ddof 1) over
  sqrt(N), in float64; None for fewer than two values, where it is undefined."""
  if len(values) < 2:
    return None
  return float(np.std(np.asarray(values, np.float64), ddof=1) / np.sqrt(len(values)))


def format_bound(value: float, error: Optional[float]) -> str:
  """'-70.45 ± 1.52': a bound with its standard error, or the bound alone without one."""
  return f'{value:.2f}' if error is None else f'{value:.2f} ± {error:.2f}'


@dataclasses.dataclass(frozen=True)
class HeldoutLikelihood:
  """L_K in nats per image for each K: per image, their mean, and the mean of each digit."""
  bounds: Dict[int, np.ndarray]  # K -> [N]
  labels: np.ndarray  # [N]
  seed: int
  seconds: float

  @property
  def overall(self) -> Dict[int, float]:
    return {count: float(np.mean(values)) for count, values in self.bounds.items()}

  @property
  def standard_errors(self) -> Dict[int, Optional[float]]:
    """Each K's standard error of `overall` over the choice of images (how much the mean would
    move on another N held-out digits); the Monte Carlo error of each image's L_K is apart."""
    return {count: standard_error(values) for count, values in self.bounds.items()}

  @property
  def by_digit(self) -> Dict[int, Dict[int, float]]:
    return {int(digit): {count: float(np.mean(values[self.labels == digit]))
                         for count, values in self.bounds.items()}
            for digit in np.unique(self.labels)}

  def to_json(self) -> Dict:
    """JSON-safe: string keys (K, digit), as json.dump would make them anyway."""
    return {
        'num_examples': int(len(self.labels)),
        'seed': self.seed,
        'seconds': round(self.seconds, 2),
        'samples': sorted(self.bounds),
        'overall': {str(k): v for k, v in self.overall.items()},
        'standard_error': {str(k): v for k, v in self.standard_errors.items()},
        'by_digit': {str(digit): {str(k): v for k, v in bounds.items()}
                     for digit, bounds in self.by_digit.items()},
        'digit_counts': {str(int(digit)): int(count)
                         for digit, count in zip(*np.unique(self.labels, return_counts=True))},
    }


def heldout_log_likelihood(encode: Encode, decode_logits: DecodeLogits, images: np.ndarray,
                           labels: np.ndarray, max_samples: int, seed: int,
                           concurrent_calls: int = CONCURRENT_CALLS) -> HeldoutLikelihood:
  """L_K for K = 1, 10, ..., max_samples of uint8 images [N, 28, 28], in batches.

  encode: uint8 images -> (latent mean, log-variance) arrays, the model's own
  Transform included; the likelihood is of the images binarized as Transform
  does (models/preprocessing.py), which is what the model was trained on.
  Each batch is one call of one tf.function, from the pixels to its bounds
  [n, len(counts)], so the only work outside the decoder per batch is one
  encoder call, the batch's noise and one conversion to numpy. `concurrent_calls`
  batches run at once, from as many threads (TensorFlow releases the GIL).
  """
  counts = sample_counts(max_samples)
  batch_size = max(1, LATENTS_PER_CALL // max_samples)
  start_time = time.perf_counter()

  @tf.function(reduce_retracing=True)
  def batch_bounds(raw_pixels, mean, logvar, noise):
    pixels = preprocessing.binarize(tf.reshape(raw_pixels, [-1, features.NUM_PIXELS]))
    bounds = iwae_bounds(log_importance_weights(decode_logits, pixels, mean, logvar, noise),
                         counts)
    return tf.stack([bounds[count] for count in counts], axis=1)

  def bounds_of(start):
    batch = images[start:start + batch_size]
    mean, logvar = encode(batch)
    noise = np.stack([image_noise(seed, index, max_samples, mean.shape[1])
                      for index in range(start, start + len(batch))])
    return batch_bounds(batch, mean, logvar, noise).numpy()

  with futures.ThreadPoolExecutor(concurrent_calls) as pool:
    stacked = np.concatenate(list(pool.map(bounds_of, range(0, len(images), batch_size))))
  return HeldoutLikelihood({count: stacked[:, column] for column, count in enumerate(counts)},
                           np.asarray(labels), seed, time.perf_counter() - start_time)
