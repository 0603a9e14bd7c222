"""The plain autoencoder served: `vaetfx query` reconstructs, encodes, decodes and scores it, and
`sample`, which it has not, fails with a message that says why."""
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.serving.helpers import push, running_server
from vaetfx import cli
from vaetfx.serving import client, status

RLL = 'reconstruction_log_likelihood'


@pytest.fixture(scope='module')
def served_autoencoder(trained_autoencoder, tmp_path_factory):
  directory = str(tmp_path_factory.mktemp('serving_ae'))
  push(trained_autoencoder.serving_model_dir, directory, 1)
  with running_server(directory) as model_server:
    yield model_server.address


@pytest.fixture(scope='module')
def reference(trained_autoencoder):
  return tf.saved_model.load(trained_autoencoder.serving_model_dir)


def test_client_calls_every_signature_the_autoencoder_has(served_autoencoder, reference, digits):
  with client.ServingClient(served_autoencoder) as serving:
    outputs = serving.reconstruct(digits)
    expected = reference.signatures['serving_default'](images=tf.constant(digits))
    assert set(outputs) == {'reconstruction', 'latent', RLL}
    np.testing.assert_allclose(outputs[RLL], expected[RLL].numpy(), rtol=1e-4, atol=1e-3)
    code, variance = serving.encode(digits)
    assert variance is None and code.shape == (8, 2)
    np.testing.assert_allclose(code, outputs['latent'], atol=1e-5)
    np.testing.assert_allclose(serving.decode(code), outputs['reconstruction'], atol=1e-5)
    assert serving.score_key() == RLL
    np.testing.assert_allclose(serving.score(digits), outputs[RLL], atol=1e-5)
    with pytest.raises(status.ServingError, match='has no `sample` signature: a plain autoencoder'):
      serving.sample(3)


def test_query_commands(served_autoencoder, digits, tmp_path, capsys):
  def query(*args):
    return cli.main(['query', *args, '--server', served_autoencoder])

  images = str(tmp_path / 'digits.npy')
  np.save(images, digits)
  assert query('reconstruct', images, '-o', str(tmp_path / 'pairs.png')) == 0
  assert 'mean reconstruction log-likelihood' in capsys.readouterr().out
  codes = str(tmp_path / 'codes.npz')
  assert query('encode', images, '-o', codes) == 0
  assert np.load(codes)['latent'].shape == (8, 2)
  capsys.readouterr()
  assert query('encode', images) == 0
  header, *rows = capsys.readouterr().out.strip().splitlines()
  assert header == "# image, latent[2] (an autoencoder's code)" and len(rows[0].split()) == 3
  for source in (['--input', codes], ['--latent=2,-4']):  # The seed's chosen code point.
    decoded = str(tmp_path / 'decoded.png')
    assert query('decode', *source, '-o', decoded) == 0
    assert os.path.getsize(decoded) > 0
  capsys.readouterr()
  assert query('score', images) == 0
  assert capsys.readouterr().out.splitlines()[0] == f'image\t{RLL}'
  assert query('sample', '--count', '2') == 1
  assert 'has no `sample` signature' in capsys.readouterr().err
