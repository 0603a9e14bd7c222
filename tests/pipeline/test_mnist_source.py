"""Where MNIST comes from: flag, environment, cache, then a checked download over loopback."""
import functools
import hashlib
import http.server
import os
import re
import threading
import time

import pytest

from tests import synthetic_mnist
from vaetfx.pipeline import mnist_source


@pytest.fixture
def mnist_http_server(tmp_path, mnist_splits):
  """A loopback HTTP server publishing the drawn digits as MNIST's four .gz files."""
  served = synthetic_mnist.write_mnist_idx(str(tmp_path / 'served'), mnist_splits)
  handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=served)
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  checksums = {name: hashlib.md5(open(os.path.join(served, name), 'rb').read()).hexdigest()
               for name in mnist_source.MNIST_MD5}
  yield f'http://127.0.0.1:{server.server_port}/', checksums
  server.shutdown()


def test_explicit_folder_wins_over_environment_and_cache(tmp_path, mnist_splits, monkeypatch):
  for name in ('given', 'env', 'cache'):
    synthetic_mnist.write_mnist_npz(str(tmp_path / name), mnist_splits)
  monkeypatch.chdir(tmp_path)
  chosen = mnist_source.resolve_data_dir('given', str(tmp_path / 'env'), str(tmp_path / 'cache'))
  assert chosen == str(tmp_path / 'given')
  from_env = mnist_source.resolve_data_dir(None, str(tmp_path / 'env'), str(tmp_path / 'cache'))
  assert from_env == str(tmp_path / 'env')


@pytest.mark.parametrize('make, fault', [
    (lambda path: None, 'no such folder'),
    (lambda path: path.write_bytes(b'x'), 'is a file, expected a folder'),
    (lambda path: path.mkdir(), 'holds no MNIST: expected the four IDX files'),
], ids=['missing', 'a-file', 'empty'])
def test_explicit_folder_without_mnist_is_refused(tmp_path, make, fault):
  make(tmp_path / 'data')
  for explicit in ((str(tmp_path / 'data'), None), (None, str(tmp_path / 'data'))):
    with pytest.raises(mnist_source.MnistUnavailableError, match=f'{tmp_path / "data"}: {fault}'):
      mnist_source.resolve_data_dir(*explicit, str(tmp_path / 'cache'))


def test_cache_is_used_when_it_holds_mnist(tmp_path, mnist_splits):
  cache = synthetic_mnist.write_mnist_idx(str(tmp_path / 'cache'), mnist_splits, compress=False)
  assert mnist_source.resolve_data_dir(None, None, cache, base_url='http://127.0.0.1:9/') == cache


def test_download_fails_fast_with_a_message_naming_data_dir(tmp_path):
  start = time.monotonic()
  with pytest.raises(mnist_source.MnistUnavailableError, match='vaetfx run --data-dir DIR'):
    mnist_source.resolve_data_dir(None, None, str(tmp_path / 'cache'),
                                  base_url='http://127.0.0.1:9/', timeout_s=2)
  assert time.monotonic() - start < 10
  assert not any(name.endswith('.gz') for name in os.listdir(tmp_path / 'cache'))


def test_download_fills_the_cache_with_checked_files(tmp_path, mnist_http_server, monkeypatch):
  url, checksums = mnist_http_server
  monkeypatch.setattr(mnist_source, 'MNIST_MD5', checksums)
  cache = str(tmp_path / 'cache')
  assert mnist_source.resolve_data_dir(None, None, cache, base_url=url) == cache
  assert sorted(os.listdir(cache)) == sorted(checksums)
  assert mnist_source.has_mnist(cache)


def test_checksum_mismatch_keeps_nothing(tmp_path, mnist_http_server, monkeypatch):
  url, checksums = mnist_http_server
  monkeypatch.setattr(mnist_source, 'MNIST_MD5', dict.fromkeys(checksums, '0' * 32))
  cache = tmp_path / 'cache'
  with pytest.raises(mnist_source.MnistUnavailableError, match='checksum mismatch'):
    mnist_source.resolve_data_dir(None, None, str(cache), base_url=url)
  assert os.listdir(cache) == []


def test_a_folder_of_span_folders_reads_a_span_and_names_a_missing_one(tmp_path, mnist_splits):
  for span in (1, 2, 10):
    synthetic_mnist.write_mnist_npz(str(tmp_path / f'span-{span}'), mnist_splits)
  (tmp_path / 'span-3').write_text('a file, not a span folder')
  (tmp_path / 'span-x').mkdir()
  assert mnist_source.check_data_dir(str(tmp_path), '--data-dir') == str(tmp_path)
  assert mnist_source.span_numbers(str(tmp_path)) == [1, 2, 10]
  assert mnist_source.data_pattern(str(tmp_path), 0) == 'span-{SPAN}/*'
  assert mnist_source.data_pattern(str(tmp_path), 2) == 'span-{SPAN}/*'
  with pytest.raises(mnist_source.MnistUnavailableError, match=re.escape(
      f'--span 3: {tmp_path} has no span-3/ folder (its spans are [1, 2, 10])')):
    mnist_source.data_pattern(str(tmp_path), 3)


def test_a_folder_without_spans_is_read_whole_and_refuses_a_span(tmp_path, mnist_splits):
  data_dir = synthetic_mnist.write_mnist_idx(str(tmp_path / 'data'), mnist_splits)
  assert mnist_source.data_pattern(data_dir, 0) == '*'
  with pytest.raises(mnist_source.MnistUnavailableError, match=re.escape(
      f'--span 1: {data_dir} has no span-1/ folder (it has no span-<N>/ folders)')):
    mnist_source.data_pattern(data_dir, 1)


def test_a_missing_uri_has_no_spans(ram_fileio_root):
  assert mnist_source.data_pattern(f'{ram_fileio_root}/nothing', 0) == '*'
