"""Stock TFX's side of bench/data_bench.py: the Transform module file a TFX user writes.

The images arrive as TFX's MNIST example keeps them, one bytes feature of the
784 raw pixels per image; the binarization is the product's (pixel / 255 >= 0.5).
It is given to stock Transform as a `module_file`, as TFX's templates do.
"""
import tensorflow as tf

IMAGE_RAW_KEY = 'image_raw'
LABEL_KEY = 'label'
PIXELS_KEY = 'pixels'
NUM_PIXELS = 784


def preprocessing_fn(inputs):
  """Raw pixel bytes -> float32 {0, 1}: 1 where pixel / 255 >= 0.5."""
  raw = tf.reshape(inputs[IMAGE_RAW_KEY], [-1])
  pixels = tf.reshape(tf.io.decode_raw(raw, tf.uint8), [-1, NUM_PIXELS])
  scaled = tf.cast(pixels, tf.float32) / 255.0
  return {PIXELS_KEY: tf.cast(scaled >= 0.5, tf.float32)}
