"""The query commands' file handling: every input format, the checks, the PNG grid."""
import numpy as np
import pytest
from PIL import Image

from tests import synthetic_mnist
from vaetfx.serving import images


def test_reads_every_format_in_order(tmp_path, digits):
  Image.fromarray(digits[0]).save(tmp_path / 'light-on-dark.png')
  Image.fromarray(255 - digits[1]).resize((56, 56)).save(tmp_path / 'dark-on-paper.png')
  np.save(tmp_path / 'floats.npy', digits[2:4] / 255.0)
  idx = synthetic_mnist.write_file(str(tmp_path / 'images-idx3-ubyte'),
                                   synthetic_mnist.idx_bytes(digits[4:]), compress=True)
  paths = [str(tmp_path / name) for name in ('light-on-dark.png', 'dark-on-paper.png',
                                             'floats.npy')] + [idx]
  read = images.read_images(paths)
  assert read.dtype == np.uint8 and read.shape == (8, 28, 28)
  np.testing.assert_array_equal(read[0], digits[0])
  assert read[1].mean() < 127, 'a dark digit on paper is inverted to MNIST\'s light on black'
  np.testing.assert_array_equal(read[2:], digits[2:])
  assert len(images.read_images(paths, limit=3)) == 3


@pytest.mark.parametrize('content, message', [
    (np.zeros((2, 3)), r'expected \[N, 28, 28\]'),
    (np.full((1, 28, 28), 300), 'pixels must be uint8'),
])
def test_bad_arrays_name_the_file(tmp_path, content, message):
  path = str(tmp_path / 'bad.npy')
  np.save(path, content)
  with pytest.raises(images.InputFileError, match=message):
    images.read_images([path])


def test_unreadable_files_name_the_file(tmp_path):
  (tmp_path / 'notes.txt').write_text('not an IDX file')
  for path in (str(tmp_path / 'notes.txt'), str(tmp_path / 'missing.png')):
    with pytest.raises(images.InputFileError, match=path):
      images.read_images([path])


def test_latents_from_npy_npz_and_text(tmp_path):
  latent = np.arange(6, dtype=np.float64).reshape(2, 3)
  np.save(tmp_path / 'z.npy', latent)
  np.savez(tmp_path / 'z.npz', latent_mean=latent, latent_logvar=latent)
  np.savetxt(tmp_path / 'z.csv', latent, delimiter=',')
  for name in ('z.npy', 'z.npz', 'z.csv'):
    read = images.read_latents(str(tmp_path / name))
    assert read.dtype == np.float32
    np.testing.assert_array_equal(read, latent)
  assert images.latents_array([1, 2], '--latent').shape == (1, 2)


def test_grid_lays_out_cells_with_gaps():
  picture = images.grid(np.ones((5, 28, 28), np.float32), columns=2)
  assert picture.dtype == np.uint8 and picture.shape == (3 * 30 + 2, 2 * 30 + 2)
  assert picture[2:30, 2:30].min() == 255
  pairs = images.side_by_side(np.zeros((2, 28, 28), np.uint8), np.ones((2, 28, 28), np.float32))
  assert pairs.shape == (4, 28, 28) and pairs[1].max() == 1
