"""`vaetfx serve` as users run it (a process, stopped by SIGTERM) and `vaetfx query` writing files.
"""
import os
import signal
import subprocess
import sys

import numpy as np
import portpicker
import pytest
from PIL import Image

from tests import synthetic_mnist
from tests.serving.helpers import MODEL_NAME
from vaetfx import cli
from vaetfx.serving import client


@pytest.fixture(scope='module')
def served(serving_dir):
  """`vaetfx serve` in its own process; yields its address, then checks SIGTERM stops it cleanly."""
  port = portpicker.pick_unused_port()
  process = subprocess.Popen(
      [sys.executable, '-m', 'vaetfx.cli', 'serve', '--model-dir',
       os.path.join(serving_dir, MODEL_NAME), '--port', str(port)],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  address = f'127.0.0.1:{port}'
  try:
    with client.ServingClient(address) as serving:
      serving.wait_until_available(timeout=120)
    yield address
  finally:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
  assert process.returncode == 0, output
  assert 'Stopping: letting requests in flight finish' in output


@pytest.fixture(scope='module')
def image_files(tmp_path_factory, digits):
  """The same digits as two PNGs, a .npy and a gzipped IDX file."""
  directory = tmp_path_factory.mktemp('inputs')
  pngs = []
  for i in range(2):
    pngs.append(str(directory / f'digit{i}.png'))
    Image.fromarray(digits[i]).save(pngs[-1])
  npy = str(directory / 'digits.npy')
  np.save(npy, digits)
  idx = synthetic_mnist.write_file(str(directory / 'digits-idx3-ubyte'),
                                   synthetic_mnist.idx_bytes(digits), compress=True)
  return {'png': pngs, 'npy': [npy], 'idx': [idx]}


def _query(address, *args):
  return cli.main(['query', *args, '--server', address])


def _png_shape(path):
  with Image.open(path) as image:
    return image.size


@pytest.mark.parametrize('kind', ['png', 'npy', 'idx'])
def test_reconstruct_writes_a_grid_of_pairs(served, image_files, tmp_path, kind):
  output = str(tmp_path / 'out' / 'reconstructions.png')
  assert _query(served, 'reconstruct', *image_files[kind], '-o', output) == 0
  count = {'png': 2, 'npy': 8, 'idx': 8}[kind]
  columns = 2 * int(np.ceil(np.sqrt(count)))
  assert _png_shape(output)[0] == columns * 30 + 2


def test_encode_then_decode_and_sample_write_pngs(served, image_files, tmp_path, capsys,
                                                  latent_dim):
  latents = str(tmp_path / 'latents.npy')
  assert _query(served, 'encode', *image_files['npy'], '-o', latents) == 0
  assert np.load(latents).shape == (8, latent_dim)
  capsys.readouterr()
  assert _query(served, 'encode', *image_files['png']) == 0
  header, *rows = capsys.readouterr().out.strip().splitlines()
  assert header.startswith('# image') and len(rows) == 2
  assert len(rows[0].split()) == 1 + 2 * latent_dim
  for source in (['--input', latents], ['--latent=' + ','.join(['-0.5'] * latent_dim)]):
    output = str(tmp_path / 'decoded.png')
    assert _query(served, 'decode', *source, '-o', output) == 0
    assert os.path.getsize(output) > 0
  samples = str(tmp_path / 'samples.png')
  assert _query(served, 'sample', '--count', '9', '--seed', '3', '-o', samples) == 0
  assert _png_shape(samples) == (3 * 30 + 2, 3 * 30 + 2)


def test_score_prints_one_elbo_per_image(served, image_files, capsys):
  assert _query(served, 'score', *image_files['idx'], '--threshold', '1e9') == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0] == 'image\telbo' and len(lines) == 1 + 8 + 1
  assert all(line.endswith('anomalous') for line in lines[1:-1])


def test_failures_exit_with_a_message(served, image_files, tmp_path, capsys):
  assert _query(served, 'score', *image_files['npy'], '--version', '99') == 1
  assert 'model vae version 99 is not loaded' in capsys.readouterr().err
  assert _query('127.0.0.1:1', 'sample', '--timeout', '5') == 1
  assert 'cannot reach a model server' in capsys.readouterr().err
  not_images = tmp_path / 'not-images.npy'
  np.save(not_images, np.zeros((2, 3)))
  assert _query(served, 'score', str(not_images)) == 2
  assert 'expected [N, 28, 28]' in capsys.readouterr().err


def test_query_answers_without_loading_tensorflows_runtime(served, tmp_path):
  """The client needs TF Serving's protos only; TensorFlow's runtime would cost seconds a call."""
  output = tmp_path / 'samples.png'
  check = ('import sys; from vaetfx import cli; '
           f'code = cli.main(["query", "sample", "--count", "3", "--seed", "1", "--server", '
           f'"{served}", "-o", "{output}"]); '
           'assert "tensorflow.python" not in sys.modules, "TensorFlow was loaded"; '
           'sys.exit(code)')
  result = subprocess.run([sys.executable, '-c', check], capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 0, result.stderr
  assert _png_shape(output) == (2 * 30 + 2, 2 * 30 + 2)  # 3 digits on a 2x2 grid
