"""The bulk tf.Example encoders against tf.train.Example built and parsed field by field."""
import numpy as np
import pytest
import tensorflow as tf

from vaetfx.shared import examples


def _float(value):
  return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))


def test_bulk_serialization_equals_a_tf_example_built_field_by_field():
  rng = np.random.default_rng(17)
  images = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8)  # every byte value, 2-byte varints too
  labels = rng.integers(0, 10, 50, dtype=np.uint8)
  for image, label, record in zip(images, labels, examples.serialize_examples(images, labels)):
    expected = tf.train.Example(features=tf.train.Features(feature={
        'image': tf.train.Feature(int64_list=tf.train.Int64List(value=image.reshape(-1).tolist())),
        'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
    }))
    assert tf.train.Example.FromString(record) == expected


def test_an_added_float_feature_parses_as_if_set_on_the_proto():
  rng = np.random.default_rng(3)
  images = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
  labels = rng.integers(0, 10, 20, dtype=np.uint8)
  scores = rng.normal(-100, 30, 20).astype(np.float32)
  original = examples.serialize_examples(images, labels)
  for before, after, score in zip(original, examples.with_float_feature(original, 'elbo', scores),
                                  scores):
    expected = tf.train.Example.FromString(before)
    expected.features.feature['elbo'].CopyFrom(_float(score))
    assert tf.train.Example.FromString(after) == expected


def test_an_existing_feature_of_that_name_is_replaced_not_repeated():
  example = tf.train.Example(features=tf.train.Features(feature={
      'elbo': _float(1.0), 'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[4]))}))
  [rescored] = examples.with_float_feature([example.SerializeToString()], 'elbo', np.array([-7.5]))
  parsed = tf.io.parse_single_example(rescored, {'elbo': tf.io.FixedLenFeature([], tf.float32),
                                                 'label': tf.io.FixedLenFeature([], tf.int64)})
  assert float(parsed['elbo']) == -7.5 and int(parsed['label']) == 4


def test_no_examples_give_none_and_a_count_mismatch_is_refused():
  assert examples.with_float_feature([], 'elbo', np.zeros(0)) == []
  with pytest.raises(ValueError, match='2 examples but 1 values'):
    examples.with_float_feature([b'', b''], 'elbo', np.zeros(1))
