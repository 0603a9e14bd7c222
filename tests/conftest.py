"""Test entry point: TFX 1.16 is Keras 2, so tf.keras must be tf_keras before TF loads."""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest  # pylint: disable=g-import-not-at-top

from tests import gcs_emulator, synthetic_mnist  # pylint: disable=g-import-not-at-top


@pytest.fixture(scope='session')
def mnist_splits():
  """200 train and 100 eval drawn digits, shared by every test that only reads them."""
  return synthetic_mnist.make_splits(train_count=200, eval_count=100)


@pytest.fixture(scope='session')
def mnist_idx_dir(tmp_path_factory, mnist_splits):
  """The drawn digits as the four gzip-compressed MNIST IDX files."""
  return synthetic_mnist.write_mnist_idx(str(tmp_path_factory.mktemp('mnist_idx')), mnist_splits)


@pytest.fixture(scope='session')
def transformed_mnist(tmp_path_factory, mnist_splits):
  """ExampleGen's and Transform's outputs for the drawn digits (tests/model_fixtures.py)."""
  # Imported here, not above: it loads TFX, TFT and Beam, which most tests never need.
  from tests import model_fixtures  # pylint: disable=g-import-not-at-top
  return model_fixtures.write_transformed_mnist(
      str(tmp_path_factory.mktemp('transformed_mnist')), mnist_splits)


@pytest.fixture(scope='session')
def transform_output_dir(transformed_mnist):
  """A genuine TFTransformOutput directory (transform_fn/, transformed_metadata/)."""
  return transformed_mnist.transform_graph_dir


@pytest.fixture(scope='session')
def trained_model(tmp_path_factory, transformed_mnist):
  """run_fn's outputs for a tiny model (model_fixtures.TINY_HPARAMS, latent_dim 2)."""
  from tests import model_fixtures  # pylint: disable=g-import-not-at-top
  return model_fixtures.train_tiny_model(
      transformed_mnist, str(tmp_path_factory.mktemp('trained_model')))


@pytest.fixture(scope='session')
def exported_model_dir(trained_model):
  """The tiny model's serving SavedModel, with every signature of models/export.py."""
  return trained_model.serving_model_dir


@pytest.fixture(scope='session')
def trained_autoencoder(tmp_path_factory, transformed_mnist):
  """run_fn's outputs for a tiny plain autoencoder (model_fixtures.TINY_AUTOENCODER_HPARAMS)."""
  from tests import model_fixtures  # pylint: disable=g-import-not-at-top
  return model_fixtures.train_tiny_model(
      transformed_mnist, str(tmp_path_factory.mktemp('trained_autoencoder')),
      model_fixtures.TINY_AUTOENCODER_HPARAMS)


@pytest.fixture(scope='session')
def ram_fileio_root():
  """A fresh ram:// folder that TFX's fileio reaches through TensorFlow's in-memory filesystem.

  A non-local URI inside this process: a component that writes with a local
  file call instead of fileio / tf.io.gfile cannot put anything there. TFX does
  not map ram:// by itself, so TensorFlow's fileio plugin is registered for it.
  """
  import uuid  # pylint: disable=g-import-not-at-top
  from tfx.dsl.io import filesystem_registry  # pylint: disable=g-import-not-at-top
  from tfx.dsl.io.plugins import tensorflow_gfile  # pylint: disable=g-import-not-at-top

  class RamFilesystem(tensorflow_gfile.TensorflowFilesystem):
    SUPPORTED_SCHEMES = ['ram://']

  filesystem_registry.DEFAULT_FILESYSTEM_REGISTRY.register(RamFilesystem, priority=20)
  return f'ram://{uuid.uuid4().hex}'


@pytest.fixture(scope='module')
def gcs(tmp_path_factory):
  """The emulated bucket gcs_emulator.TEST_BUCKET, in its own mount and network namespace
  (tests/gcs_emulator.py); one per test file, so files on different workers do not share it."""
  reason = gcs_emulator.GcsNamespace.unavailable_reason()
  if reason:
    pytest.skip(f'the GCS emulator needs a private mount and network namespace: {reason}')
  work_dir = tmp_path_factory.mktemp('gcs')
  namespace = gcs_emulator.GcsNamespace(str(work_dir / 'buckets'), [gcs_emulator.TEST_BUCKET],
                                        str(work_dir))
  namespace.start()
  yield namespace
  namespace.stop()


# The slowest test files (each a few minutes on one worker; `make test` lists its slowest tests)
# are handed out first: started last, one of them would run alone after the rest had finished.
# (`make test` passes --no-loadscope-reorder: xdist would otherwise hand out the files with the
# most tests first, whatever their time.)
SLOWEST_FILES = ('tests/vaetfx/test_run_on_gcs.py', 'tests/pipeline/test_kubeflow_runner.py')


def pytest_collection_modifyitems(items):
  """Moves the tests of SLOWEST_FILES to the front, keeping every other order as collected (every
  xdist worker sorts alike, so they agree on the collection)."""
  items.sort(key=lambda item: item.nodeid.split('::')[0] not in SLOWEST_FILES)
