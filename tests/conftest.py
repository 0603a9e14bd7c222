"""Test entry point: TFX 1.16 is Keras 2, so tf.keras must be tf_keras before TF loads."""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest  # pylint: disable=g-import-not-at-top

from tests import synthetic_mnist  # pylint: disable=g-import-not-at-top


@pytest.fixture(scope='session')
def mnist_splits():
  """200 train and 100 eval drawn digits, shared by every test that only reads them."""
  return synthetic_mnist.make_splits(train_count=200, eval_count=100)


@pytest.fixture(scope='session')
def mnist_idx_dir(tmp_path_factory, mnist_splits):
  """The drawn digits as the four gzip-compressed MNIST IDX files."""
  return synthetic_mnist.write_mnist_idx(str(tmp_path_factory.mktemp('mnist_idx')), mnist_splits)
