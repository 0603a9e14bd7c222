"""What the serving tests do more than once: push a version, run a server on a free port."""
import contextlib
import os
import threading
from concurrent import futures
from typing import Callable, List, Tuple

import portpicker

from vaetfx.components.atomic_pusher import executor as pusher
from vaetfx.serving import server

MODEL_NAME = 'vae'


def push(saved_model_dir: str, serving_dir: str, version: int) -> str:
  """Pushes as the Pusher does, a flushed copy under a staging name renamed into place, but
  as the version the test chooses."""
  model_dir = os.path.join(serving_dir, MODEL_NAME)
  os.makedirs(model_dir, exist_ok=True)
  version_dir = os.path.join(model_dir, str(version))
  record = {'producer': 'vaetfx', 'version': version}
  os.rename(pusher.stage(saved_model_dir, model_dir, record), version_dir)
  return version_dir


def vm_bytes(pid: int, field: str) -> int:
  """VmRSS (now) or VmHWM (the peak so far) of a process, from /proc."""
  with open(f'/proc/{pid}/status', encoding='ascii') as f:
    for line in f:
      if line.startswith(field + ':'):
        return int(line.split()[1]) * 1024
  raise ValueError(f'{field} not in /proc/{pid}/status')


def clients_while_sampling_rss(pid: int, clients: int,
                               client: Callable[[int], dict]) -> Tuple[List[dict], int]:
  """Runs client(0), ..., client(clients - 1) at once while sampling the server's VmRSS every
  20 ms; returns each client's result and the highest sample."""
  peak, stop = [0], threading.Event()

  def sample_rss():
    while not stop.wait(0.02):
      peak[0] = max(peak[0], vm_bytes(pid, 'VmRSS'))

  sampler = threading.Thread(target=sample_rss, daemon=True)
  sampler.start()
  try:
    with futures.ThreadPoolExecutor(clients) as pool:
      results = [future.result() for future in [pool.submit(client, i) for i in range(clients)]]
  finally:
    stop.set()
    sampler.join()
  return results, peak[0]


def varint(value: int) -> bytes:
  """Protobuf's base-128 varint, as TensorFlow prefixes each string of a DT_STRING tensor_content."""
  out = bytearray()
  while value >= 0x80:
    out.append(value & 0x7f | 0x80)
    value >>= 7
  return bytes(out + bytes([value]))


@contextlib.contextmanager
def running_server(serving_dir: str, **config):
  """A local server over `<serving_dir>/vae` on a free port of 127.0.0.1, stopped on exit."""
  model_server = server.ModelServer(server.ServerConfig(
      model_dir=os.path.join(serving_dir, MODEL_NAME), port=portpicker.pick_unused_port(),
      **config))
  model_server.start()
  try:
    yield model_server
  finally:
    model_server.stop(grace=1)
