"""Paths and URIs read one way: local folders through os, URIs through TensorFlow's gfile."""
import os
import subprocess
import sys
import uuid

import pytest
import tensorflow as tf

from vaetfx.shared import storage


@pytest.fixture(params=['local', 'uri'])
def root(request, tmp_path) -> str:
  """An empty folder on local disk, or in TensorFlow's in-memory filesystem (ram://)."""
  if request.param == 'local':
    return str(tmp_path)
  path = f'ram://storage-test-{uuid.uuid4().hex}'
  tf.io.gfile.makedirs(path)
  return path


def _make(root: str, *names: str):
  for name in names:
    tf.io.gfile.makedirs(os.path.join(root, name))


def test_only_integer_named_folders_are_versions(root):
  _make(root, '1', '20', '.staging-3-abc', 'tmp', '4.tmp', '-5')
  with tf.io.gfile.GFile(os.path.join(root, '7'), 'w') as f:
    f.write('a file, not a version')
  assert storage.version_dirs(root) == {1: os.path.join(root, '1'), 20: os.path.join(root, '20')}


def test_a_missing_model_folder_has_no_versions(root):
  assert storage.version_dirs(os.path.join(root, 'absent')) == {}


def test_files_read_back_and_folders_list_without_trailing_slashes(root):
  _make(root, 'sub')
  path = os.path.join(root, 'file.bin')
  with tf.io.gfile.GFile(path, 'wb') as f:
    f.write(b'\x00\x01')
  with storage.open_file(path) as f:
    assert f.read() == b'\x00\x01'
  assert storage.exists(path) and not storage.isdir(path) and storage.isdir(os.path.join(root, 'sub'))
  assert sorted(storage.listdir(root)) == ['file.bin', 'sub']


def test_local_paths_do_not_import_tensorflow(tmp_path):
  code = ('import sys; from vaetfx.shared import storage; '
          f'storage.version_dirs({str(tmp_path)!r}); storage.exists({str(tmp_path)!r}); '
          'sys.exit("tensorflow" in sys.modules)')
  assert subprocess.run([sys.executable, '-c', code], check=False).returncode == 0
