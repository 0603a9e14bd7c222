"""Seed 003's plain autoencoder: a deterministic MLP 784-500-300-L-300-500-784 with ReLUs.

The seed trains it on pixel intensities with squared error; here it trains on
Transform's binarized pixels, as the VAEs do, with the Bernoulli likelihood of
models/vae.py: the decoder's 784 outputs are logits, and an image's
reconstruction log-likelihood is log p(x | decode(encode(x))) =
-sum(sigmoid_cross_entropy), in nats per image (higher is better). Training
maximizes it; the Evaluator gates on its held-out mean. It is not an ELBO and
bounds no likelihood of the data: the code has no prior, so nothing is sampled.
"""
import tensorflow as tf

from vaetfx.models import vae as vae_lib
from vaetfx.shared import features

HIDDEN_UNITS = (500, 300)  # The encoder's; the decoder mirrors them.


class Autoencoder(vae_lib.EncoderDecoder):
  """The encoder maps pixels to one point of the code space, float32 [N, L]."""

  def encode(self, pixels: tf.Tensor) -> tf.Tensor:
    return tf.cast(self.encoder(pixels), tf.float32)


def networks(latent_dim: int, dtype):
  """Seed 003's encoder 784-500-300-L and its mirror image, the decoder."""
  return (vae_lib.mlp('encoder', features.NUM_PIXELS, HIDDEN_UNITS, latent_dim, dtype),
          vae_lib.mlp('decoder', latent_dim, HIDDEN_UNITS[::-1], features.NUM_PIXELS, dtype))


def reconstruction_log_likelihood(autoencoder: Autoencoder, pixels: tf.Tensor) -> tf.Tensor:
  """log p(x | decode(encode(x))) per image [N], Bernoulli on the decoder's logits."""
  return vae_lib.bernoulli_log_likelihood(pixels, autoencoder.decode(autoencoder.encode(pixels)))
