"""Where the MNIST files come from: --data-dir, then $MNIST_DIR, then a local cache, then a download.

The download writes each file beside its final name and renames it only after
its checksum matched, so an interrupted or corrupt download never looks like data.
"""
import hashlib
import os
import re
import sys
import urllib.error
import urllib.request
from typing import List, Optional, Sequence, Tuple

from vaetfx.pipeline import configs
from vaetfx.shared import mnist_files, spans, storage

MNIST_URL = 'https://storage.googleapis.com/cvdf-datasets/mnist/'
MNIST_MD5 = {
    'train-images-idx3-ubyte.gz': 'f68b3c2dcbeaaa9fbdd348bbdeb94873',
    'train-labels-idx1-ubyte.gz': 'd53e105ee54ea40749a09fcbcd1e9432',
    't10k-images-idx3-ubyte.gz': '9fb629c4189551a2d022fa330f9573f3',
    't10k-labels-idx1-ubyte.gz': 'ec29112dd5afa0611ce80d1b7f02629c',
}
CONNECT_TIMEOUT_S = 10
# The folders configs.SPAN_PATTERN matches (TFX's {SPAN} is a run of digits).
SPAN_FOLDER = re.compile(r'span-([0-9]+)')


class MnistUnavailableError(RuntimeError):
  """MNIST is neither on disk nor downloadable; the message says how to point at it."""


def has_mnist(directory: str) -> bool:
  """True if `directory` holds both splits as IDX files (gzip or not) or as mnist.npz."""
  if os.path.isfile(os.path.join(directory, mnist_files.NPZ_FILE)):
    return True
  return all(
      any(os.path.isfile(os.path.join(directory, name + ext)) for ext in ('', '.gz'))
      for names in mnist_files.IDX_FILES.values() for name in names)


def span_numbers(directory: str) -> List[int]:
  """The numbers of `directory`'s span-<N>/ folders, sorted; empty for a folder without spans
  (or a URI that is no folder: ExampleGen then says what is missing)."""
  if not storage.isdir(directory):
    return []
  matches = (SPAN_FOLDER.fullmatch(name) for name in storage.listdir(directory))
  return sorted(int(match.group(1)) for match in matches
                if match and storage.isdir(os.path.join(directory, match.group(0))))


def data_pattern(directory: str, span: int) -> str:
  """MnistExampleGen's split pattern for `directory`: one span folder if it has any, else all
  its files. A --span the folder does not hold fails here, before the pipeline starts."""
  held = span_numbers(directory)
  if span and span not in held:
    found = f'its spans are {held}' if held else 'it has no span-<N>/ folders'
    raise MnistUnavailableError(f'--span {span}: {directory} has no span-{span}/ folder ({found})')
  return configs.SPAN_PATTERN if held else configs.ALL_FILES_PATTERN


def choose_spans(directory: str, span: int, train_spans: int) -> Tuple[int, Tuple[int, ...]]:
  """(the span to ingest, the rolling window's older spans found in `directory`, oldest first).

  `span` 0 is the newest span folder; a folder without spans is span 0. Naming the span
  gives it one cache key whether it was asked for as --span N or as the newest.
  """
  held = span_numbers(directory)
  if train_spans > 1 and not held:
    raise MnistUnavailableError(
        f'--train-spans {train_spans}: {directory} has no span-<N>/ folders to roll over')
  chosen = span or (held[-1] if held else 0)
  return chosen, tuple(s for s in spans.window(chosen, train_spans)[:-1] if s in held)


def check_files(directory: str, spans_read: Sequence[int]):
  """Reads and checks the files ExampleGen will ingest (the folder's, or those of the spans
  `spans_read`: choose_spans' span and the window's older ones), raising MnistFormatError
  naming the file (a plain file beside its differing .gz names both): real MNIST takes 0.13 s
  here, against about a minute for ExampleGen to reach the same error after TensorFlow loads.
  URIs are left to ExampleGen (reading them needs TensorFlow's file system)."""
  if storage.is_uri(directory):
    return
  folders = ([os.path.join(directory, f'span-{span}') for span in spans_read]
             if span_numbers(directory) else [directory])
  for folder in folders:
    for split in mnist_files.IDX_FILES:
      mnist_files.load_split(folder, split)


def _progress(name: str, done: int, total: int):
  if total > 0:
    width = 30
    filled = width * done // total
    sys.stderr.write(f'\r  {name:<28} [{"#" * filled}{"." * (width - filled)}] '
                     f'{done / 1e6:5.1f}/{total / 1e6:.1f} MB')
  else:
    sys.stderr.write(f'\r  {name:<28} {done / 1e6:5.1f} MB')
  sys.stderr.flush()


def download_file(url: str, path: str, md5: str, timeout_s: float = CONNECT_TIMEOUT_S):
  """Downloads `url` to `path` with a progress bar; the file appears only if its md5 matches."""
  partial = path + '.part'
  name = os.path.basename(path)
  digest = hashlib.md5()
  with urllib.request.urlopen(url, timeout=timeout_s) as response, open(partial, 'wb') as out:
    total = int(response.headers.get('Content-Length') or 0)
    done = 0
    while chunk := response.read(1 << 16):
      out.write(chunk)
      digest.update(chunk)
      done += len(chunk)
      _progress(name, done, total)
  sys.stderr.write('\n')
  if digest.hexdigest() != md5:
    os.remove(partial)
    raise MnistUnavailableError(
        f'{url}: checksum mismatch (md5 {digest.hexdigest()}, expected {md5}); nothing was kept')
  os.replace(partial, path)


def check_data_dir(directory: str, source: str) -> str:
  """`directory` as an absolute path, if it is a readable folder holding MNIST's files.

  Checked before the pipeline starts, so a wrong folder fails in a second and
  leaves no metadata.db behind; ExampleGen still checks what the files hold.
  `source` names where the folder came from (--data-dir, $MNIST_DIR) in errors.
  URIs (gs://...) are left to ExampleGen: checking them needs TensorFlow.
  """
  if '://' in directory:
    return directory
  path = os.path.abspath(directory)
  if not os.path.exists(path):
    raise MnistUnavailableError(f'{source} {directory}: no such folder')
  if not os.path.isdir(path):
    raise MnistUnavailableError(f'{source} {directory}: is a file, expected a folder')
  if not os.access(path, os.R_OK | os.X_OK):
    raise MnistUnavailableError(f'{source} {directory}: the folder is not readable')
  if not has_mnist(path) and not span_numbers(path):
    raise MnistUnavailableError(
        f'{source} {directory}: holds no MNIST: expected the four IDX files '
        f'({", ".join(n for names in mnist_files.IDX_FILES.values() for n in names)}, '
        f'gzip or not) or {mnist_files.NPZ_FILE}, or span-<N>/ folders of them')
  return path


def download_mnist(cache_dir: str, base_url: str = MNIST_URL,
                   timeout_s: float = CONNECT_TIMEOUT_S) -> str:
  try:
    os.makedirs(cache_dir, exist_ok=True)
  except OSError as e:
    raise MnistUnavailableError(
        f'--cache-dir {cache_dir}: cannot create the download folder ({e.strerror or e}); '
        f'pass another --cache-dir, or the folder that holds MNIST with --data-dir') from e
  print(f'MNIST is not on disk: downloading it to {cache_dir}', file=sys.stderr)
  for name, md5 in MNIST_MD5.items():
    path = os.path.join(cache_dir, name)
    if os.path.isfile(path):
      continue
    try:
      download_file(base_url + name, path, md5, timeout_s)
    except (urllib.error.URLError, OSError) as e:
      raise MnistUnavailableError(
          f'Could not download {base_url + name} ({e}).\nPass the folder that holds MNIST '
          f'(the four IDX files, gzip or not, or mnist.npz): vaetfx run --data-dir DIR '
          f'(or set MNIST_DIR=DIR).') from e
  return cache_dir


def resolve_data_dir(data_dir: Optional[str], env_data_dir: Optional[str], cache_dir: str,
                     base_url: str = MNIST_URL, timeout_s: float = CONNECT_TIMEOUT_S) -> str:
  """The folder to read MNIST from, in the order --data-dir, $MNIST_DIR, cache, download.

  An explicitly named folder must exist and hold MNIST's files (ExampleGen says
  what is wrong with their content); only the cache is filled by downloading.
  """
  for explicit, source in ((data_dir, '--data-dir'), (env_data_dir, '$MNIST_DIR')):
    if explicit:
      return check_data_dir(explicit, source)
  if has_mnist(cache_dir):
    return cache_dir
  return download_mnist(cache_dir, base_url, timeout_s)
