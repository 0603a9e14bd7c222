"""Files and folders named by a local path or a URI (gs://, s3://, ram://), read one way.

Local paths go through Python's os and open; URIs through TensorFlow's gfile,
imported only for them: it imports TensorFlow (seconds), and the CLI's
up-front checks, `vaetfx query` and the server's local model folders must not
pay for it.
"""
import hashlib
import os
import re
from typing import IO, Dict, List

VERSION_NAME = re.compile('[0-9]+')
READ_CHUNK_BYTES = 1 << 20


def is_uri(path: str) -> bool:
  """Paths with a scheme are served by filesystem plugins, which have no atomic rename."""
  return '://' in path


def gfile():
  """tf.io.gfile, which TFX's fileio also uses when TensorFlow is installed."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile


def open_file(path: str, mode: str = 'rb') -> IO:
  return gfile().GFile(path, mode) if is_uri(path) else open(path, mode)  # pylint: disable=consider-using-with


def exists(path: str) -> bool:
  return gfile().exists(path) if is_uri(path) else os.path.exists(path)


def isdir(path: str) -> bool:
  return gfile().isdir(path) if is_uri(path) else os.path.isdir(path)


def listdir(path: str) -> List[str]:
  """Entry names, without the trailing '/' some filesystems give folders."""
  names = gfile().listdir(path) if is_uri(path) else os.listdir(path)
  return [name.rstrip('/') for name in names]


def file_sha256(path: str) -> str:
  """The hex SHA-256 of a file's bytes, read 1 MiB at a time: no whole file sits in memory."""
  digest = hashlib.sha256()
  with open_file(path, 'rb') as f:
    for chunk in iter(lambda: f.read(READ_CHUNK_BYTES), b''):
      digest.update(chunk)
  return digest.hexdigest()


def walk(path: str):
  """(folder, subfolders, files) below `path`, top down; symlinks are not entered."""
  return gfile().walk(path) if is_uri(path) else os.walk(path)


def size(path: str) -> int:
  return gfile().stat(path).length if is_uri(path) else os.path.getsize(path)


def version_dirs(model_dir: str) -> Dict[int, str]:
  """The versions TF Serving would consider under a model folder: integer-named subfolders,
  by number; none when the folder does not exist."""
  if not isdir(model_dir):
    return {}
  found = {}
  for name in listdir(model_dir):
    path = os.path.join(model_dir, name)
    if VERSION_NAME.fullmatch(name) and isdir(path):
      found[int(name)] = path
  return found
