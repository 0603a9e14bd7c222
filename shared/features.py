"""Feature names and shapes shared by ExampleGen, Transform, Trainer and serving.

ExampleGen writes each image as ONE int64 feature of 784 values (row-major
28x28 pixels, 0..255) instead of 784 scalar features or a bytes blob:
- TFDV computes statistics for one feature, not 784, so StatisticsGen stays cheap;
- the value count is fixed, so SchemaGen pins it at 784 and ExampleValidator
  flags a wrongly sized image;
- tf.Example has no uint8 type, and int64 is what the serving signature can feed
  to the Transform layer from a uint8 [N, 28, 28] request with a cast and a
  reshape (a bytes feature would need an encode op TensorFlow does not have).
"""
from typing import Optional

IMAGE_KEY = 'image'
LABEL_KEY = 'label'
PIXELS_KEY = 'pixels'  # Transform's output: binarized pixels, float32 {0, 1}.

IMAGE_SIZE = 28
NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE
BINARIZE_THRESHOLD = 0.5

# The per-image score each kind of model exports (a signature output, BulkInferrer's column,
# the Trainer's history key) and its name in words: the VAEs' ELBO and the plain
# autoencoder's reconstruction log-likelihood, in nats; low means unlike the training data.
ELBO_KEY = 'elbo'
RECONSTRUCTION_LOG_LIKELIHOOD_KEY = 'reconstruction_log_likelihood'
SCORE_NAMES = {ELBO_KEY: 'ELBO', RECONSTRUCTION_LOG_LIKELIHOOD_KEY: 'reconstruction log-likelihood'}


def score_key(output_names) -> Optional[str]:
  """Which of SCORE_NAMES a signature's outputs hold (so which kind of model it is), or None."""
  return next((key for key in SCORE_NAMES if key in output_names), None)

TRAIN_SPLIT = 'train'
EVAL_SPLIT = 'eval'
