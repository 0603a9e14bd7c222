"""Reading what components wrote, for assertions."""
import glob
import os
from typing import List

import tensorflow as tf


def read_examples(examples_uri: str, split: str) -> List[tf.train.Example]:
  """All tf.Examples of one split of an Examples artifact (gzipped TFRecords)."""
  files = sorted(glob.glob(os.path.join(examples_uri, f'Split-{split}', '*')))
  assert files, f'no files in split {split!r} of {examples_uri}'
  dataset = tf.data.TFRecordDataset(files, compression_type='GZIP')
  return [tf.train.Example.FromString(record.numpy()) for record in dataset]
