"""ExampleGen's held-out digits, read back, and an exported model run over them.

Shared by the components that look at digits through a model (the report, the
infra validator, the drift check), so each reads the Examples the same way.
"""
import itertools
import os
from typing import Dict, List, Tuple

import numpy as np
import tensorflow as tf
from tfx.dsl.io import fileio

from vaetfx.models import export
from vaetfx.shared import features, tfrecords

BATCH_SIZE = 500
DIGIT_SPEC = {
    features.IMAGE_KEY: tf.io.FixedLenFeature([features.NUM_PIXELS], tf.int64),
    features.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
}


def read_records(split_uri: str, count: int = -1) -> List[bytes]:
  """The first `count` (-1: all) serialized tf.Examples of a split folder, its files in name
  order, read as the pipeline's scorer reads them (shared/tfrecords.py, not tf.data)."""
  files = sorted(fileio.glob(os.path.join(split_uri, '*')))
  if not files:
    raise FileNotFoundError(f'{split_uri}: no example files to draw held-out digits from')
  records = itertools.chain.from_iterable(tfrecords.read_records(path) for path in files)
  return list(itertools.islice(records, count if count >= 0 else None))


def read_split(split_uri: str, spec: Dict[str, tf.io.FixedLenFeature],
               count: int = -1) -> Dict[str, np.ndarray]:
  """The first `count` (-1: all) tf.Examples of a split folder, parsed by `spec`."""
  return parse_records(read_records(split_uri, count), spec)


def parse_records(records: List[bytes],
                  spec: Dict[str, tf.io.FixedLenFeature]) -> Dict[str, np.ndarray]:
  """Serialized tf.Examples parsed by `spec`, in one call (for MNIST's 10,000 held-out digits
  0.01-0.03 s, against 0.06-0.10 s in batches of 500)."""
  parsed = tf.io.parse_example(tf.constant(records, tf.string), spec)
  return {key: parsed[key].numpy() for key in spec}


def as_images(pixels: np.ndarray) -> np.ndarray:
  return pixels.reshape(-1, features.IMAGE_SIZE, features.IMAGE_SIZE).astype(np.uint8)


def digits_of(records: List[bytes]) -> Tuple[np.ndarray, np.ndarray]:
  """Serialized ExampleGen tf.Examples as (images uint8 [N, 28, 28], labels)."""
  parsed = parse_records(records, DIGIT_SPEC)
  return as_images(parsed[features.IMAGE_KEY]), parsed[features.LABEL_KEY]


def read_heldout_digits(split_uri: str, count: int) -> Tuple[np.ndarray, np.ndarray]:
  """The first `count` examples of ExampleGen's TFRecords: (images uint8 [N, 28, 28], labels)."""
  return digits_of(read_records(split_uri, count))


def reconstruct_in_batches(vae: export.ExportedModel, images: np.ndarray) -> Dict[str, np.ndarray]:
  """serving_default's outputs for every image, a batch at a time to bound memory."""
  batches = [vae.reconstruct(images[start:start + BATCH_SIZE])
             for start in range(0, len(images), BATCH_SIZE)]
  return {key: np.concatenate([batch[key] for batch in batches]) for key in batches[0]}
