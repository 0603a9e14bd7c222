"""A Google Cloud Storage emulator for tests: gs:// as TensorFlow, TFX's fileio and Beam reach it.

TensorFlow's own gs:// client (C++, in libtensorflow_framework) talks only to
https://www.googleapis.com and https://storage.googleapis.com, so the emulator
cannot simply listen on a free port. It runs in a private mount and network
namespace (`unshare --mount --net`) with an /etc/hosts that maps both names to
127.0.0.1, serves HTTPS on 127.0.0.1:443 with a certificate made for them, and
every process that should see the bucket joins that namespace with `nsenter`.
Nothing leaves the namespace: it has a loopback interface and nothing else.

It implements the part of the GCS JSON API and its upload protocols that the
three clients use (read from tensorflow/tsl/platform/cloud/gcs_file_system.cc,
google-cloud-storage 2.19 and google-resumable-media 2.11, which Beam 2.59's
gcsio uses): bucket metadata; object metadata, media download with Range
(JSON API and the storage.googleapis.com/<bucket>/<object> form TensorFlow
reads from); listing with prefix, delimiter and pages; delete; rewrite and
copy; media, multipart and resumable uploads, chunked request bodies
included; and batches of these (Beam deletes and copies in batches).

Objects are kept as files under a local folder that mirrors the bucket (an
object `a/b` is `<root>/<bucket>/a/b`, a folder marker `a/` is
`<root>/<bucket>/a/.gcs-folder-marker`), so a test outside the namespace can
inspect what was written with ordinary file calls.

Run as `python -m tests.gcs_emulator --root DIR --bucket NAME --cert-dir DIR`
inside the namespace; GcsNamespace below does all of it.
"""
import argparse
import base64
import datetime
import email.parser
import hashlib
import http.server
import itertools
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import urllib.parse
import uuid
from typing import Dict, List, Optional, Tuple

from tests import certificates

# The bucket the tests' fixture (tests/conftest.py `gcs`) creates.
TEST_BUCKET = 'vaetfx-test-bucket'
GCS_HOSTS = ('www.googleapis.com', 'storage.googleapis.com', 'oauth2.googleapis.com')
FOLDER_MARKER = '.gcs-folder-marker'
READY_LINE = 'gcs-emulator ready'
CERT_FILE = 'cert.pem'
KEY_FILE = 'key.pem'
HOSTS_FILE = 'hosts'
CREDENTIALS_FILE = 'credentials.json'
ERROR_LOG = 'errors.log'
ACCESS_TOKEN = 'emulator-token'


class GcsError(Exception):
  """An error response: status and message, as GCS's JSON error body."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


def _rfc3339(seconds: float) -> str:
  return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(
      '%Y-%m-%dT%H:%M:%S.%fZ')


def _crc32c(data: bytes) -> Optional[str]:
  try:
    import google_crc32c  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return base64.b64encode(google_crc32c.value(data).to_bytes(4, 'big')).decode()


class Store:
  """Objects of each bucket as files under `root/<bucket>/`; generations counted in memory."""

  def __init__(self, root: str, buckets: List[str]):
    self.root = root
    self.lock = threading.RLock()
    self.generations: Dict[Tuple[str, str], int] = {}
    self.counter = itertools.count(1)
    for bucket in buckets:
      os.makedirs(os.path.join(root, bucket), exist_ok=True)

  def bucket_dir(self, bucket: str) -> str:
    path = os.path.join(self.root, bucket)
    if not os.path.isdir(path):
      raise GcsError(404, f'bucket {bucket} not found')
    return path

  def path(self, bucket: str, name: str) -> str:
    parts = name.split('/')
    if not name or any(part in ('.', '..', FOLDER_MARKER) for part in parts) or '' in parts[:-1]:
      raise GcsError(400, f'object name {name!r} is not supported by the emulator')
    if name.endswith('/'):
      return os.path.join(self.bucket_dir(bucket), name, FOLDER_MARKER)
    return os.path.join(self.bucket_dir(bucket), name)

  def metadata(self, bucket: str, name: str, data: Optional[bytes] = None) -> Dict:
    path = self.path(bucket, name)
    if not os.path.isfile(path):
      raise GcsError(404, f'object {name} not found in {bucket}')
    if data is None:
      with open(path, 'rb') as f:
        data = f.read()
    generation = self.generations.setdefault((bucket, name), next(self.counter))
    updated = _rfc3339(os.stat(path).st_mtime)
    quoted = urllib.parse.quote(name, safe='')
    metadata = {
        'kind': 'storage#object', 'id': f'{bucket}/{name}/{generation}', 'name': name,
        'bucket': bucket, 'generation': str(generation), 'metageneration': '1',
        'contentType': 'application/octet-stream', 'size': str(len(data)),
        'timeCreated': updated, 'updated': updated, 'storageClass': 'STANDARD',
        'md5Hash': base64.b64encode(hashlib.md5(data).digest()).decode(),
        'selfLink': f'https://www.googleapis.com/storage/v1/b/{bucket}/o/{quoted}',
        'mediaLink': (f'https://storage.googleapis.com/download/storage/v1/b/{bucket}/o/'
                      f'{quoted}?generation={generation}&alt=media'),
    }
    crc32c = _crc32c(data)
    if crc32c:
      metadata['crc32c'] = crc32c
    return metadata

  def read(self, bucket: str, name: str) -> bytes:
    path = self.path(bucket, name)
    if not os.path.isfile(path):
      raise GcsError(404, f'object {name} not found in {bucket}')
    with open(path, 'rb') as f:
      return f.read()

  def write(self, bucket: str, name: str, data: bytes, if_generation_match=None) -> Dict:
    path = self.path(bucket, name)
    with self.lock:
      if if_generation_match is not None:
        current = self.generations.get((bucket, name), 0) if os.path.isfile(path) else 0
        if int(if_generation_match) != current:
          raise GcsError(412, f'{name}: generation {current}, not {if_generation_match}')
      if os.path.isdir(path):
        raise GcsError(409, f'{name}: the emulator cannot hold an object where objects '
                            f'under {name}/ are')
      os.makedirs(os.path.dirname(path), exist_ok=True)
      temporary = f'{path}.{uuid.uuid4().hex}.tmp'
      with open(temporary, 'wb') as f:
        f.write(data)
      os.replace(temporary, path)
      self.generations[(bucket, name)] = next(self.counter)
      return self.metadata(bucket, name, data)

  def delete(self, bucket: str, name: str) -> None:
    path = self.path(bucket, name)
    with self.lock:
      if not os.path.isfile(path):
        raise GcsError(404, f'object {name} not found in {bucket}')
      os.remove(path)
      self.generations.pop((bucket, name), None)
      directory = os.path.dirname(path)
      top = self.bucket_dir(bucket)
      while directory != top and not os.listdir(directory):
        os.rmdir(directory)
        directory = os.path.dirname(directory)

  def names(self, bucket: str, prefix: str) -> List[str]:
    """Every object name under `prefix`, sorted as GCS lists them."""
    top = self.bucket_dir(bucket)
    start = os.path.join(top, os.path.dirname(prefix))
    names = []
    with self.lock:
      for directory, _, files in os.walk(start):
        relative = os.path.relpath(directory, top)
        relative = '' if relative == '.' else relative.replace(os.sep, '/') + '/'
        for file_name in files:
          if file_name.endswith('.tmp'):
            continue
          name = relative if file_name == FOLDER_MARKER else relative + file_name
          if name.startswith(prefix):
            names.append(name)
    return sorted(names)


class Uploads:
  """Resumable upload sessions: id -> (bucket, name, bytes so far)."""

  def __init__(self):
    self.sessions: Dict[str, Tuple[str, str, bytearray]] = {}
    self.lock = threading.Lock()

  def start(self, bucket: str, name: str) -> str:
    upload_id = uuid.uuid4().hex
    with self.lock:
      self.sessions[upload_id] = (bucket, name, bytearray())
    return upload_id

  def get(self, upload_id: str) -> Tuple[str, str, bytearray]:
    with self.lock:
      if upload_id not in self.sessions:
        raise GcsError(404, f'upload {upload_id} not found')
      return self.sessions[upload_id]

  def finish(self, upload_id: str) -> None:
    with self.lock:
      self.sessions.pop(upload_id, None)


class Response:
  def __init__(self, status: int, body: bytes = b'', headers: Optional[Dict[str, str]] = None):
    self.status = status
    self.body = body
    self.headers = headers or {}

  @classmethod
  def json(cls, status: int, value) -> 'Response':
    return cls(status, json.dumps(value).encode(), {'Content-Type': 'application/json'})


def _object_path(path: str) -> Optional[Tuple[str, str]]:
  match = re.fullmatch(r'/b/([^/]+)/o/(.+)', path)
  return (match.group(1), urllib.parse.unquote(match.group(2))) if match else None


def _multipart_parts(body: bytes, content_type: str) -> List[Tuple[Dict[str, str], bytes]]:
  """(headers, payload) of each part of a multipart body, binary payloads kept as bytes."""
  boundary = re.search(r'boundary="?([^";]+)"?', content_type).group(1).encode()
  parts = []
  for chunk in body.split(b'--' + boundary)[1:]:
    if chunk.startswith(b'--'):
      break
    head, _, payload = chunk.lstrip(b'\r\n').partition(b'\r\n\r\n')
    if not _:
      head, _, payload = chunk.lstrip(b'\n').partition(b'\n\n')
    headers = dict(line.split(': ', 1) for line in head.decode().splitlines() if ': ' in line)
    parts.append(({k.lower(): v for k, v in headers.items()}, payload.rstrip(b'\r\n')
                  if payload.endswith(b'\r\n') else payload))
  return parts


class Gcs:
  """The API: (method, path, query, headers, body) -> Response."""

  def __init__(self, store: Store, log_path: str):
    self.store = store
    self.uploads = Uploads()
    self.log_path = log_path
    self.log_lock = threading.Lock()

  def log(self, line: str) -> None:
    """Error responses go to a file, for a failed test to show (some are expected: 404s)."""
    with self.log_lock, open(self.log_path, 'a', encoding='utf-8') as f:
      f.write(line + '\n')

  def handle(self, method: str, url: str, headers: Dict[str, str], body: bytes) -> Response:
    split = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
    path = split.path
    try:
      if path == '/token' and method == 'POST':  # oauth2.googleapis.com: any refresh succeeds.
        return Response.json(200, {'access_token': ACCESS_TOKEN, 'expires_in': 3600,
                                   'token_type': 'Bearer'})
      if path.startswith('/batch/storage/v1'):
        return self.batch(headers, body)
      if path.startswith('/upload/storage/v1/b/'):
        return self.upload(method, path[len('/upload/storage/v1'):], query, headers, body)
      if path.startswith('/download/storage/v1/b/'):
        bucket, name = _object_path(path[len('/download/storage/v1'):])
        return self.media(bucket, name, headers)
      if path.startswith('/storage/v1/b/'):
        return self.json_api(method, path[len('/storage/v1'):], query, headers, body)
      bucket, _, name = path.lstrip('/').partition('/')
      if method == 'GET' and name:  # TensorFlow's reads: storage.googleapis.com/<bucket>/<object>
        return self.media(bucket, urllib.parse.unquote(name), headers)
      raise GcsError(400, f'{method} {path} is not emulated')
    except GcsError as e:
      return Response.json(e.status, {'error': {'code': e.status, 'message': str(e)}})

  def json_api(self, method, path, query, headers, body) -> Response:
    rewrite = re.fullmatch(r'/b/([^/]+)/o/(.+)/(rewriteTo|copyTo)/b/([^/]+)/o/(.+)', path)
    if rewrite and method == 'POST':
      source_bucket, source, kind, bucket, name = rewrite.groups()
      data = self.store.read(source_bucket, urllib.parse.unquote(source))
      metadata = self.store.write(bucket, urllib.parse.unquote(name), data,
                                  query.get('ifGenerationMatch'))
      if kind == 'copyTo':
        return Response.json(200, metadata)
      return Response.json(200, {'kind': 'storage#rewriteResponse', 'done': True,
                                  'totalBytesRewritten': str(len(data)),
                                  'objectSize': str(len(data)), 'resource': metadata})
    bucket_only = re.fullmatch(r'/b/([^/]+)/?', path)
    if bucket_only and method == 'GET':
      bucket = bucket_only.group(1)
      self.store.bucket_dir(bucket)
      return Response.json(200, {'kind': 'storage#bucket', 'id': bucket, 'name': bucket,
                                 'projectNumber': '1', 'metageneration': '1',
                                 'location': 'EMULATED', 'storageClass': 'STANDARD'})
    listing = re.fullmatch(r'/b/([^/]+)/o/?', path)
    if listing and method == 'GET':
      return self.list(listing.group(1), query)
    target = _object_path(path)
    if target and method == 'GET':
      if query.get('alt') == 'media':
        return self.media(*target, headers)
      return Response.json(200, self.store.metadata(*target))
    if target and method == 'DELETE':
      self.store.delete(*target)
      return Response(204)
    raise GcsError(400, f'{method} {path} is not emulated')

  def list(self, bucket: str, query: Dict[str, str]) -> Response:
    prefix, delimiter = query.get('prefix', ''), query.get('delimiter', '')
    entries = []  # (name, is_prefix)
    for name in self.store.names(bucket, prefix):
      if name < query.get('startOffset', ''):
        continue
      rest = name[len(prefix):]
      if delimiter and delimiter in rest:
        common = prefix + rest[:rest.index(delimiter) + len(delimiter)]
        if not entries or entries[-1] != (common, True):
          entries.append((common, True))
      else:
        entries.append((name, False))
    offset = int(query.get('pageToken') or 0)
    size = int(query.get('maxResults') or 1000)
    page = entries[offset:offset + size]
    result = {'kind': 'storage#objects',
              'items': [self.store.metadata(bucket, name) for name, is_prefix in page
                        if not is_prefix],
              'prefixes': [name for name, is_prefix in page if is_prefix]}
    if offset + size < len(entries):
      result['nextPageToken'] = str(offset + size)
    return Response.json(200, result)

  def media(self, bucket: str, name: str, headers: Dict[str, str]) -> Response:
    data = self.store.read(bucket, name)
    metadata = self.store.metadata(bucket, name, data)
    common = {'Content-Type': 'application/octet-stream',
              'X-Goog-Generation': metadata['generation'],
              'X-Goog-Hash': f'md5={metadata["md5Hash"]}'}
    requested = re.fullmatch(r'bytes=(\d*)-(\d*)', headers.get('range', '').strip())
    if not requested:
      return Response(200, data, common)
    if requested.group(1):
      start = int(requested.group(1))
      end = min(int(requested.group(2)), len(data) - 1) if requested.group(2) else len(data) - 1
    else:  # The last N bytes.
      start, end = max(len(data) - int(requested.group(2)), 0), len(data) - 1
    if start >= len(data):
      if not data and start == 0:
        return Response(200, b'', common)
      return Response(416, b'', {'Content-Range': f'bytes */{len(data)}'})
    del common['X-Goog-Hash']  # Only of the whole object.
    return Response(206, data[start:end + 1],
                    {**common, 'Content-Range': f'bytes {start}-{end}/{len(data)}'})

  def upload(self, method, path, query, headers, body) -> Response:
    bucket = re.fullmatch(r'/b/([^/]+)/o/?', path).group(1)
    kind = query.get('uploadType', 'media')
    if kind == 'media':
      return Response.json(200, self.store.write(bucket, query['name'], body,
                                                 query.get('ifGenerationMatch')))
    if kind == 'multipart':
      (_, metadata), (_, data) = _multipart_parts(body, headers['content-type'])[:2]
      name = query.get('name') or json.loads(metadata)['name']
      return Response.json(200, self.store.write(bucket, name, data,
                                                 query.get('ifGenerationMatch')))
    if kind == 'resumable' and method == 'POST':
      name = query.get('name') or json.loads(body or b'{}').get('name')
      if not name:
        raise GcsError(400, 'a resumable upload needs a name')
      upload_id = self.uploads.start(bucket, name)
      host = headers.get('host', GCS_HOSTS[0])
      location = (f'https://{host}/upload/storage/v1/b/{bucket}/o?uploadType=resumable'
                  f'&upload_id={upload_id}')
      return Response(200, b'', {'Location': location})
    if kind == 'resumable' and method == 'PUT':
      return self.resume(query['upload_id'], headers, body, query.get('ifGenerationMatch'))
    raise GcsError(400, f'upload {method} {kind} is not emulated')

  def resume(self, upload_id: str, headers, body: bytes, if_generation_match) -> Response:
    """One PUT of a resumable upload: a chunk at an offset and, once the total is known, the end."""
    bucket, name, received = self.uploads.get(upload_id)
    content_range = headers.get('content-range', '')
    match = re.fullmatch(r'bytes (\*|(\d+)-(\d+))/(\*|\d+)', content_range.strip())
    if content_range and not match:
      raise GcsError(400, f'bad Content-Range {content_range!r}')
    total = None
    if match:
      if match.group(2) is not None:
        start = int(match.group(2))
        if start > len(received):
          raise GcsError(400, f'chunk at {start}, but only {len(received)} bytes received')
        del received[start:]
        received.extend(body)
      total = None if match.group(4) == '*' else int(match.group(4))
    else:
      received.extend(body)
      total = len(received)
    if total is not None and total == len(received):
      metadata = self.store.write(bucket, name, bytes(received), if_generation_match)
      self.uploads.finish(upload_id)
      return Response.json(200, metadata)
    headers_out = {'Range': f'bytes=0-{len(received) - 1}'} if received else {}
    return Response(308, b'', headers_out)

  def batch(self, headers, body) -> Response:
    """Each part is an HTTP request; the answer is a part per request, in order."""
    boundary = f'batch_{uuid.uuid4().hex}'
    out = []
    for index, (part_headers, payload) in enumerate(
        _multipart_parts(body, headers['content-type'])):
      request_line, _, rest = payload.decode('utf-8').replace('\r\n', '\n').partition('\n')
      method, url, _ = request_line.split(' ', 2)
      message = email.parser.Parser().parsestr(rest)
      sub_body = (message.get_payload() or '').encode()
      sub_headers = {k.lower(): v for k, v in message.items()}
      response = self.handle(method, url, sub_headers, sub_body)
      content_id = part_headers.get('content-id', f'<{index}>').strip('<>')
      reason = http.server.BaseHTTPRequestHandler.responses.get(response.status, ('OK',))[0]
      out.append(
          f'--{boundary}\r\nContent-Type: application/http\r\n'
          f'Content-ID: <response-{content_id}>\r\n\r\n'
          f'HTTP/1.1 {response.status} {reason}\r\nContent-Type: application/json\r\n'
          f'Content-Length: {len(response.body)}\r\n\r\n{response.body.decode()}\r\n')
    text = ''.join(out) + f'--{boundary}--\r\n'
    return Response(200, text.encode(), {'Content-Type': f'multipart/mixed; boundary={boundary}'})


def make_handler(gcs: Gcs):
  """An HTTP/1.1 handler (keep-alive, 100-continue, chunked bodies) that hands requests to `gcs`."""

  class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    # A response is written as headers, then body: with Nagle's algorithm the body waits for the
    # client's delayed ACK of the headers, 40 ms per request on loopback (measured: 44 ms per
    # stat, 132 ms per TensorFlow write; 1-3 ms without).
    disable_nagle_algorithm = True

    def log_message(self, *args):  # Quiet: error responses are logged by Gcs.log.
      pass

    def _body(self) -> bytes:
      if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
        chunks = []
        while True:
          size = int(self.rfile.readline().split(b';')[0].strip(), 16)
          if size == 0:
            while self.rfile.readline() not in (b'\r\n', b'\n', b''):
              pass
            return b''.join(chunks)
          chunks.append(self.rfile.read(size))
          self.rfile.readline()
      return self.rfile.read(int(self.headers.get('Content-Length') or 0))

    def _serve(self):
      body = self._body()
      headers = {k.lower(): v for k, v in self.headers.items()}
      response = gcs.handle(self.command, self.path, headers, body)
      if response.status >= 400:
        gcs.log(f'{self.command} {self.path}: {response.status} {response.body[:300]!r}')
      self.send_response(response.status)
      for key, value in response.headers.items():
        self.send_header(key, value)
      self.send_header('Content-Length', str(len(response.body)))
      self.end_headers()
      if self.command != 'HEAD':
        self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

  return Handler


def write_certificate(cert_dir: str) -> str:
  """A self-signed certificate for the GCS host names and 127.0.0.1; returns its path."""
  return certificates.write_self_signed(cert_dir, GCS_HOSTS, CERT_FILE, KEY_FILE)[0]


def write_credentials(cert_dir: str) -> str:
  """Application default credentials whose token refresh the emulator answers.

  Without any, Beam's gcsio looks for credentials with retries for 20 s in
  every process before it connects anonymously.
  """
  path = os.path.join(cert_dir, CREDENTIALS_FILE)
  with open(path, 'w', encoding='utf-8') as f:
    json.dump({'type': 'authorized_user', 'client_id': 'emulator', 'client_secret': 'emulator',
               'refresh_token': 'emulator'}, f)
  return path


def client_environment(cert_dir: str) -> Dict[str, str]:
  """What a process in the namespace needs so every GCS client trusts and uses the emulator."""
  cert = os.path.join(cert_dir, CERT_FILE)
  return {
      'GOOGLE_APPLICATION_CREDENTIALS': os.path.join(cert_dir, CREDENTIALS_FILE),
      'CURL_CA_BUNDLE': cert,  # TensorFlow's client (curl); requests reads it too.
      'REQUESTS_CA_BUNDLE': cert,  # google-cloud-storage, so Beam's gcsio.
      'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'emulator',  # TensorFlow: no real auth.
      'NO_GCE_CHECK': 'true',  # TensorFlow and google-auth: not on GCE, do not probe.
      'GCS_RETRY_CONFIG_MAX_RETRIES': '0',  # TensorFlow: fail at once, not after minutes.
      'GOOGLE_CLOUD_PROJECT': 'emulator',
  }


def _isolate_network(cert_dir: str) -> None:
  """Inside the fresh namespaces: loopback up, the GCS names resolved to it."""
  subprocess.run(['ip', 'link', 'set', 'lo', 'up'], check=True)
  hosts = os.path.join(cert_dir, HOSTS_FILE)
  with open(hosts, 'w', encoding='utf-8') as f:
    f.write('127.0.0.1 localhost ' + ' '.join(GCS_HOSTS) + '\n::1 localhost\n')
  subprocess.run(['mount', '--make-rprivate', '/'], check=True)
  subprocess.run(['mount', '--bind', hosts, '/etc/hosts'], check=True)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('--root', required=True, help='Folder that holds the buckets.')
  parser.add_argument('--bucket', action='append', required=True, help='Bucket to create.')
  parser.add_argument('--cert-dir', required=True,
                      help='Where the certificate and hosts file are written.')
  args = parser.parse_args(argv)
  _isolate_network(args.cert_dir)
  cert = write_certificate(args.cert_dir)
  write_credentials(args.cert_dir)
  server = http.server.ThreadingHTTPServer(
      ('127.0.0.1', 443), make_handler(Gcs(Store(args.root, args.bucket), os.path.join(args.cert_dir, ERROR_LOG))))
  server.daemon_threads = True
  context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
  context.load_cert_chain(cert, os.path.join(args.cert_dir, KEY_FILE))
  server.socket = context.wrap_socket(server.socket, server_side=True)
  signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
  print(READY_LINE, flush=True)
  server.serve_forever()


class GcsNamespace:
  """Starts the emulator in its own namespaces; `command()` runs a program inside them.

  As root: `unshare --mount --net`. Otherwise a user namespace maps the caller
  to root first (`--user --map-root-user`), where the kernel allows it.
  """

  def __init__(self, root: str, buckets: List[str], work_dir: str):
    self.root = root
    self.cert_dir = os.path.join(work_dir, 'gcs-emulator')
    os.makedirs(self.cert_dir, exist_ok=True)
    self.namespaces = ['--mount', '--net'] if os.geteuid() == 0 else [
        '--user', '--map-root-user', '--mount', '--net']
    self.buckets = buckets
    self.process: Optional[subprocess.Popen] = None

  @staticmethod
  def unavailable_reason() -> str:
    """Why this machine cannot run the emulator, or '' when it can."""
    missing = [tool for tool in ('unshare', 'nsenter', 'ip', 'mount') if not shutil.which(tool)]
    if missing:
      return f'{", ".join(missing)} not found (util-linux, iproute2)'
    flags = ['--mount', '--net'] if os.geteuid() == 0 else [
        '--user', '--map-root-user', '--mount', '--net']
    probe = subprocess.run(['unshare', *flags, 'true'], capture_output=True, text=True,
                           check=False)
    return '' if probe.returncode == 0 else f'unshare {" ".join(flags)}: {probe.stderr.strip()}'

  def start(self, timeout_s: float = 60.0) -> None:
    argv = ['unshare', *self.namespaces, '--', sys.executable, '-m', 'tests.gcs_emulator',
            '--root', self.root, '--cert-dir', self.cert_dir]
    for bucket in self.buckets:
      argv += ['--bucket', bucket]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    self.process = subprocess.Popen(argv, cwd=repo, stdout=subprocess.PIPE, text=True)
    ready = threading.Event()
    threading.Thread(target=lambda: ready.set() if READY_LINE in self.process.stdout.readline()
                     else None, daemon=True).start()
    if not ready.wait(timeout_s):
      self.stop()
      raise RuntimeError(f'the GCS emulator did not start within {timeout_s:.0f} s')

  def command(self, argv: List[str]) -> List[str]:
    """`argv` run inside the emulator's namespaces."""
    joined = ['--user', '--preserve-credentials'] if '--user' in self.namespaces else []
    return ['nsenter', '--target', str(self.process.pid), '--mount', '--net', *joined, '--', *argv]

  def environment(self) -> Dict[str, str]:
    return client_environment(self.cert_dir)

  def local_path(self, uri: str) -> str:
    """Where the emulator keeps the object (or folder) at gs://bucket/name."""
    bucket, _, name = uri[len('gs://'):].partition('/')
    return os.path.join(self.root, bucket, name)

  def listdir(self, uri: str) -> List[str]:
    """The names under gs://bucket/folder, as the emulator keeps them (folder markers left out)."""
    return sorted(name for name in os.listdir(self.local_path(uri)) if name != FOLDER_MARKER)

  def errors(self) -> str:
    """The emulator's error responses so far, for a failing test's message."""
    path = os.path.join(self.cert_dir, ERROR_LOG)
    if not os.path.exists(path):
      return ''
    with open(path, encoding='utf-8') as f:
      return f.read()

  def stop(self) -> None:
    if self.process and self.process.poll() is None:
      self.process.terminate()
      try:
        self.process.wait(10)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait()


if __name__ == '__main__':
  main(sys.argv[1:])
