"""Fixtures of the serving tests: a pushed model, a server on a free port, a client, the reference.

The model is the tiny trained VAE of tests/conftest.py (`exported_model_dir`),
pushed as the Pusher pushes it, atomically, into `<serving_dir>/vae/<version>/`.
"""
import numpy as np
import pytest
import tensorflow as tf

from tests import certificates, synthetic_mnist
from tests.serving.helpers import MODEL_NAME, push, running_server
from vaetfx.serving import client
from vaetfx.shared import features


@pytest.fixture(scope='session')
def reference(exported_model_dir):
  """The same SavedModel called in-process: what every served answer must equal."""
  return tf.saved_model.load(exported_model_dir)


@pytest.fixture(scope='session')
def latent_dim(reference) -> int:
  return int(reference.signatures['decode'].structured_input_signature[1]['latent'].shape[1])


@pytest.fixture(scope='session')
def digits():
  """Eight drawn digits, uint8 [8, 28, 28]."""
  return synthetic_mnist.draw_digits(8, seed=3)[0]


@pytest.fixture(scope='session')
def examples(digits):
  """The digits as serialized tf.Examples in ExampleGen's format (one int64 feature of 784)."""
  def one(image):
    feature = tf.train.Feature(int64_list=tf.train.Int64List(value=image.reshape(-1).tolist()))
    return tf.train.Example(features=tf.train.Features(
        feature={features.IMAGE_KEY: feature})).SerializeToString()
  return np.array([one(image) for image in digits], dtype=object)


@pytest.fixture(scope='module')
def serving_dir(exported_model_dir, tmp_path_factory):
  """A serving directory holding version 1 of the model."""
  directory = str(tmp_path_factory.mktemp('serving'))
  push(exported_model_dir, directory, 1)
  return directory


@pytest.fixture(scope='module')
def model_server(serving_dir):
  """A server over version 1, labelled `stable`, shared by the module's tests."""
  with running_server(serving_dir, version_labels={'stable': 1}) as model_server:
    yield model_server


@pytest.fixture
def serving(model_server):
  with client.ServingClient(model_server.address, MODEL_NAME, timeout=30) as serving_client:
    yield serving_client


@pytest.fixture(scope='session')
def certificate(tmp_path_factory):
  """(cert.pem, key.pem) of a self-signed CA for localhost and 127.0.0.1."""
  return certificates.write_self_signed(str(tmp_path_factory.mktemp('tls')), ['localhost'])
