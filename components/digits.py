"""ExampleGen's held-out digits, read back, and an exported model run over them.

Shared by the components that look at digits through a model (the report, the
infra validator, the drift check), so each reads the Examples the same way.
"""
import os
from typing import Dict, Tuple

import numpy as np
import tensorflow as tf
from tfx.dsl.io import fileio

from vaetfx.models import export
from vaetfx.shared import features

BATCH_SIZE = 500
DIGIT_SPEC = {
    features.IMAGE_KEY: tf.io.FixedLenFeature([features.NUM_PIXELS], tf.int64),
    features.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
}


def read_split(split_uri: str, spec: Dict[str, tf.io.FixedLenFeature],
               count: int = -1) -> Dict[str, np.ndarray]:
  """The first `count` (-1: all) gzipped tf.Examples of a split folder, parsed by `spec`."""
  files = sorted(fileio.glob(os.path.join(split_uri, '*')))
  if not files:
    raise FileNotFoundError(f'{split_uri}: no example files to draw held-out digits from')
  records = tf.data.TFRecordDataset(files, compression_type='GZIP').take(count).batch(BATCH_SIZE)
  batches = [tf.io.parse_example(batch, spec) for batch in records]
  return {key: np.concatenate([batch[key].numpy() for batch in batches]) for key in spec}


def as_images(pixels: np.ndarray) -> np.ndarray:
  return pixels.reshape(-1, features.IMAGE_SIZE, features.IMAGE_SIZE).astype(np.uint8)


def read_heldout_digits(split_uri: str, count: int) -> Tuple[np.ndarray, np.ndarray]:
  """The first `count` examples of ExampleGen's gzipped TFRecords: (images uint8 [N, 28, 28], labels)."""
  parsed = read_split(split_uri, DIGIT_SPEC, count)
  return as_images(parsed[features.IMAGE_KEY]), parsed[features.LABEL_KEY]


def reconstruct_in_batches(vae: export.ExportedModel, images: np.ndarray) -> Dict[str, np.ndarray]:
  """serving_default's outputs for every image, a batch at a time to bound memory."""
  batches = [vae.reconstruct(images[start:start + BATCH_SIZE])
             for start in range(0, len(images), BATCH_SIZE)]
  return {key: np.concatenate([batch[key] for batch in batches]) for key in batches[0]}
