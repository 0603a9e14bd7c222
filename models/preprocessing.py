"""Transform's preprocessing_fn: scale pixels to [0, 1] and binarize at 0.5.

It runs in Transform over the whole data set and again inside the serving
signature (Trainer exports the Transform graph with the model), so training and
serving binarize identically.
"""
import tensorflow as tf

from vaetfx.shared import features


def binarize(raw_pixels: tf.Tensor) -> tf.Tensor:
  """uint8-range pixels -> float32 {0, 1}: 1 where pixel / 255 >= 0.5, as the seeds do."""
  scaled = tf.cast(raw_pixels, tf.float32) / 255.0
  return tf.cast(scaled >= features.BINARIZE_THRESHOLD, tf.float32)


def preprocessing_fn(inputs):
  """Maps the raw `image` feature to `pixels`; the label is left to the raw examples."""
  return {features.PIXELS_KEY: binarize(inputs[features.IMAGE_KEY])}
