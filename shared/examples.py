"""Serialized tf.Examples in bulk: MNIST's images as ExampleGen writes them, and a score added.

Both are built by tfx_bsl's C++ encoder (the one Transform writes its output
with) from Arrow columns, never a tf.train.Example per image in Python: about
10x faster. They live here, below the components and the commands, because
ExampleGen, `vaetfx score` and the pipeline's scorer all need them and `vaetfx
score` should not import TFX for them. pyarrow and tfx_bsl load on first use.
"""
from typing import List, Sequence

import numpy as np

from vaetfx.shared import features

# gzip level of the TFRecord files of examples written (ExampleGen's, the scorer's): level 1
# measured 3x faster to write than zlib's default level 6 on MNIST's tf.Examples, for files 14%
# larger (5.5 vs 4.8 MB for 22,699 images).
GZIP_LEVEL = 1


def _list_column(values: np.ndarray, arrow_type):
  """[N, K] values -> an Arrow list column of N rows of K values (int64_list or float_list)."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  rows, width = values.shape
  offsets = pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32))
  return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1), type=arrow_type))


def _encode(columns, names) -> List[bytes]:
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  from tfx_bsl.coders import example_coder  # pylint: disable=g-import-not-at-top
  return example_coder.RecordBatchToExamplesEncoder().encode(
      pa.RecordBatch.from_arrays(columns, names))


def serialize_examples(images: np.ndarray, labels: np.ndarray) -> List[bytes]:
  """Serialized tf.Examples: `image` int64[784] (see shared/features.py for why) and `label`."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  return _encode([_list_column(images.reshape(len(images), -1).astype(np.int64), pa.int64()),
                  _list_column(labels.reshape(-1, 1).astype(np.int64), pa.int64())],
                 [features.IMAGE_KEY, features.LABEL_KEY])


def to_example(image: np.ndarray, label: int) -> bytes:
  """One serialized tf.Example, as serialize_examples writes it."""
  return serialize_examples(image[np.newaxis], np.array([label]))[0]


def with_float_feature(serialized: Sequence[bytes], name: str,
                       values: np.ndarray) -> List[bytes]:
  """Each serialized tf.Example with the float feature `name` = values[i] added, unparsed.

  The bytes of an Example holding only that feature are appended to each: a
  protobuf parser merges concatenated messages, and of two entries for one key
  of a map (an Example's features) keeps the later, so an existing `name` is
  replaced. Parsing 10,000 MNIST Examples into Python protos to add one float
  would cost more than scoring them.
  """
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  if len(serialized) != len(values):
    raise ValueError(f'{len(serialized)} examples but {len(values)} values of {name!r}')
  suffixes = _encode([_list_column(np.asarray(values, np.float32).reshape(-1, 1), pa.float32())],
                     [name]) if len(values) else []
  return [example + suffix for example, suffix in zip(serialized, suffixes)]
