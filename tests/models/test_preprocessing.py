"""The 0.5 binarization of preprocessing_fn against plain numpy, at and around its boundary."""
import numpy as np
import tensorflow as tf

from vaetfx.models import preprocessing
from vaetfx.shared import features


def _numpy_binarize(pixels):
  """The seeds' own preprocessing: /255 then >= .5 becomes 1, else 0."""
  scaled = pixels.astype('float32') / 255.
  return np.where(scaled >= .5, 1.0, 0.0).astype('float32')


def test_boundary_pixels():
  pixels = np.array([[0, 1, 126, 127, 128, 129, 254, 255]], np.int64)
  got = preprocessing.preprocessing_fn({features.IMAGE_KEY: tf.constant(pixels)})
  np.testing.assert_array_equal(got[features.PIXELS_KEY].numpy(), [[0, 0, 0, 0, 1, 1, 1, 1]])
  np.testing.assert_array_equal(got[features.PIXELS_KEY].numpy(), _numpy_binarize(pixels))


def test_threshold_itself_is_inclusive():
  scaled = tf.constant([0.5 - 1e-7, 0.5, 0.5 + 1e-7]) * 255.0
  np.testing.assert_array_equal(preprocessing.binarize(scaled).numpy(), [0, 1, 1])


def test_drawn_digits_match_numpy(mnist_splits):
  images = mnist_splits['train'][0].reshape(-1, features.NUM_PIXELS).astype(np.int64)
  assert {127, 128} & set(np.unique(images)), 'anti-aliased digits should reach the boundary'
  got = preprocessing.preprocessing_fn({features.IMAGE_KEY: tf.constant(images)})
  np.testing.assert_array_equal(got[features.PIXELS_KEY].numpy(), _numpy_binarize(images))
