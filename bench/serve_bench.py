"""Benchmark: what serving over gRPC costs on top of calling the model in-process.

Measures serving_default at batch 1 and 64 (latency p50/p99) and requests per
second with 16 concurrent clients (batch 1), with the CPU time client and
server spent per request, for the model called in-process (the floor) and for
`vaetfx serve` in its own process: as it starts by default (batching on, one
TensorFlow thread per pool), with --no-enable-batching, with TensorFlow's own
thread pools (one thread per core), and with TF Serving's deploy file
(serving/deploy/batching_parameters.txt). The servers run side by side and
every case is measured in turn, --rounds times, medians reported, so other
load on the machine affects all alike. The 16-client goal's ratio (served by
default / in-process) comes from --pairs alternating windows per round, in
ABBA order: every pair's ratio is printed, then their median. In the same
rounds: a gRPC round trip without model work (GetModelStatus), and the
in-process call made that round trip after the previous one ended (the idle
gap a server's model calls have); together they are the batch-1 floor. Before
the first round every side answers 16 clients untimed for --warmup-seconds: the
in-process calls ran at 866-1,308 req/s in their first 3 s window and 1,400 to
1,650 from the second on (idle), so without it the floor of the first rounds
was low and the served ratio high (docs/measurements.md). Then the server's peak resident memory
while answering batches of 1, 64 and 10,000 rows, with its memory before and
after; and 32 concurrent requests each just under every per-request limit of
the server's defaults (10,000 rows, --max-decoded-mb, --max-sample-count),
with the server's peak resident memory (VmHWM, and VmRSS sampled every 10 ms),
every answer checked against the model in-process, and the p50/p99 of batch-1
requests sent alongside against the same requests without them. Prints the
load average (other processes skew every number) and five tables.

  python bench/serve_bench.py --model-dir outputs/serving/vae      (make bench-serve)
  python bench/serve_bench.py --only-large-requests                (the last case alone)
"""
import argparse
import contextlib
import itertools
import os
import subprocess
import sys
import threading
import time
from concurrent import futures

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import portpicker  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position
from tensorflow_serving.apis import (  # pylint: disable=g-import-not-at-top,wrong-import-position
    predict_pb2)

from vaetfx.serving import (  # pylint: disable=g-import-not-at-top,wrong-import-position
    client, defaults, limits, servable, tensors)
from vaetfx.shared import features, storage  # pylint: disable=g-import-not-at-top,wrong-import-position

BATCHING_FILE = os.path.join(os.path.dirname(client.__file__), 'deploy', 'batching_parameters.txt')
CLIENTS = 16
MEMORY_BATCHES = {1: 100, 64: 20, 10_000: 1}  # Rows per request: requests sent.
LARGE_CLIENTS = 32
LARGE_ROWS = defaults.MAX_BATCH_ROWS
# Examples padded so a request of LARGE_ROWS of them sits just under --max-decoded-mb.
EXAMPLES_FILL = 0.99


def percentiles_ms(call, repeats: int, pause_seconds: float = 0.0):
  """(p50, p99) in milliseconds of `call()`, after a warm-up; each call `pause_seconds` after
  the last one ended."""
  for _ in range(max(10, repeats // 10)):
    call()
  seconds = []
  for _ in range(repeats):
    time.sleep(pause_seconds)
    start = time.perf_counter()
    call()
    seconds.append(time.perf_counter() - start)
  return tuple(float(np.percentile(seconds, q)) * 1e3 for q in (50, 99))


def cpu_seconds(pid='self') -> float:
  """User and system CPU time a process has used so far (/proc/PID/stat)."""
  with open(f'/proc/{pid}/stat', encoding='ascii') as f:
    fields = f.read().rsplit(')', 1)[1].split()
  return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def requests_per_second(make_call, images, seconds: float, server_pid=None):
  """CLIENTS threads, each with its own `make_call()`, send `images` in a loop for `seconds`:
  (requests per second, CPU ms per request of this process, of the server's)."""
  stop = threading.Event()
  counts = [0] * CLIENTS

  def loop(index, call):
    while not stop.is_set():
      call(images)
      counts[index] += 1

  threads = [threading.Thread(target=loop, args=(i, make_call())) for i in range(CLIENTS)]
  own, server = cpu_seconds(), cpu_seconds(server_pid) if server_pid else 0.0
  for thread in threads:
    thread.start()
  time.sleep(seconds)
  stop.set()
  for thread in threads:
    thread.join()
  requests = sum(counts)
  server = cpu_seconds(server_pid) - server if server_pid else 0.0
  return (requests / seconds, (cpu_seconds() - own) / requests * 1e3,
          server / requests * 1e3)


def measure(make_call, images, args, server_pid=None):
  """One round of a table row: batch 1 and batch 64 latency, then throughput of 16 clients
  at batch 1 with CPU ms per request (this process's, the server's)."""
  call = make_call()
  one, many = images[:1], images[:64]
  return (*percentiles_ms(lambda: call(one), args.repeats),
          *percentiles_ms(lambda: call(many), max(20, args.repeats // 5)),
          *requests_per_second(make_call, one, args.seconds, server_pid))


def warm_up(make_calls, images, seconds: float):
  """Each side answers CLIENTS clients at batch 1 for `seconds`, untimed, one after another."""
  for make_call in make_calls:
    requests_per_second(make_call, images[:1], seconds)


def paired_throughput(in_process, served, images, args, server_pid):
  """The 16-client goal's ratio, measured so load changes touch both sides alike: --pairs
  windows of --pair-seconds each, in-process then served, the next pair the other way round
  (ABBA), so a trend in the machine's load favours neither. Returns per pair (served req/s /
  in-process req/s, in-process CPU ms per request, served client + server CPU ms per request)."""
  pairs = []
  for index in range(args.pairs):
    sides = [('in-process', in_process, None), ('served', served, server_pid)]
    result = {name: requests_per_second(make_call, images[:1], args.pair_seconds, pid)
              for name, make_call, pid in (sides[::-1] if index % 2 else sides)}
    pairs.append((result['served'][0] / result['in-process'][0], result['in-process'][1],
                  result['served'][1] + result['served'][2]))
  return pairs


def paused_in_process_ms(make_call, images, round_trip_ms: float, repeats: int) -> float:
  """p50 at batch 1 of the in-process call made a round trip after the previous one ended, as
  a server's model calls are: TensorFlow's idle threads must wake up first (README)."""
  call = make_call()
  return percentiles_ms(lambda: call(images[:1]), repeats, round_trip_ms / 1e3)[0]


def in_process_calls(version_dir: str):
  signature = tf.saved_model.load(version_dir).signatures['serving_default']
  return lambda: lambda images: {k: v.numpy() for k, v in signature(images=images).items()}


class LocalServer:
  """`vaetfx serve` in its own process, as users run it, on a free port."""

  def __init__(self, model_dir: str, extra_flags=()):
    self.address = f'127.0.0.1:{portpicker.pick_unused_port()}'
    self._process = subprocess.Popen(
        [sys.executable, '-m', 'vaetfx.cli', 'serve', '--model-dir', model_dir,
         '--port', self.address.split(':')[1], *extra_flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

  def __enter__(self):
    with client.ServingClient(self.address) as probe:
      probe.wait_until_available(timeout=300)
    return self

  def __exit__(self, *exc_info):
    self._process.terminate()
    self._process.wait(timeout=60)

  def _memory(self, field: str) -> int:
    """VmRSS (now) or VmHWM (the peak since the last reset) of the server, in bytes."""
    with open(f'/proc/{self._process.pid}/status', encoding='ascii') as f:
      return next(int(line.split()[1]) << 10 for line in f if line.startswith(field + ':'))

  def memory_rows(self, model_name: str, images: np.ndarray):
    """(rows, resident before, peak while answering, resident 2 s after) per request size.

    Writing 5 to /proc/PID/clear_refs resets the kernel's peak (VmHWM) to the current RSS,
    so each peak is that of its own requests, spikes included.
    """
    rows = []
    with client.ServingClient(self.address, model_name, timeout=600) as serving:
      for size, repeats in MEMORY_BATCHES.items():
        batch = np.resize(images, (size, *images.shape[1:]))
        before = self._memory('VmRSS')
        with open(f'/proc/{self._process.pid}/clear_refs', 'w', encoding='ascii') as f:
          f.write('5')
        for _ in range(repeats):
          serving.predict('serving_default', {'images': batch})
        peak = self._memory('VmHWM')
        time.sleep(2)
        rows.append((size, before, peak, self._memory('VmRSS')))
    return rows

  def large_requests_case(self, model_name: str, images: np.ndarray, version_dir: str):
    """LARGE_CLIENTS concurrent large_requests (each kind in turn), batch-1 requests alongside.

    Returns (kinds, prices, VmHWM peak, sampled VmRSS peak, VmRSS before, batch-1 p50/p99
    alone, p50/p99 alongside, seconds).
    """
    model = tf.saved_model.load(version_dir)
    latent_dim = int(model.signatures['decode'].structured_input_signature[1]['latent'].shape[1])
    kinds = large_requests(images, latent_dim)
    expected = {name: {k: v.numpy() for k, v in model.signatures[name](**inputs).items()}
                for name, inputs in kinds}
    with client.ServingClient(self.address, model_name) as probe:
      defs = probe.signature_defs()[1]
    prices = [request_price(name, defs[name], inputs) for name, inputs in kinds]
    del model
    with client.ServingClient(self.address, model_name, timeout=600) as serving:
      small = lambda: serving.predict('serving_default', {'images': images[:1]})
      alone = percentiles_ms(small, 200)
      before = self._memory('VmRSS')
      with open(f'/proc/{self._process.pid}/clear_refs', 'w', encoding='ascii') as f:
        f.write('5')
      stop, sampled, latencies = threading.Event(), [0], []

      def sample():
        while not stop.wait(0.01):
          sampled[0] = max(sampled[0], self._memory('VmRSS'))

      def alongside():
        while not stop.is_set():
          start = time.perf_counter()
          small()
          latencies.append(time.perf_counter() - start)

      def large(kind):
        name, inputs = kind
        outputs = serving.predict(name, inputs).outputs
        for key, value in expected[name].items():
          np.testing.assert_allclose(outputs[key], value, rtol=1e-4, atol=1e-3,
                                     err_msg=f'{name} {key}')

      helpers = [threading.Thread(target=sample), threading.Thread(target=alongside)]
      for thread in helpers:
        thread.start()
      start = time.perf_counter()
      try:
        with futures.ThreadPoolExecutor(LARGE_CLIENTS) as pool:
          list(pool.map(large, itertools.islice(itertools.cycle(kinds), LARGE_CLIENTS)))
      finally:
        seconds = time.perf_counter() - start
        stop.set()
        for thread in helpers:
          thread.join()
      with_load = tuple(float(np.percentile(latencies, q)) * 1e3 for q in (50, 99))
      return (kinds, prices, self._memory('VmHWM'), sampled[0], before, alone, with_load,
              seconds)

  def round_trip_ms(self, model_name: str, repeats: int) -> float:
    """p50 of GetModelStatus, an RPC without model work: the transport's share on this machine."""
    with client.ServingClient(self.address, model_name) as serving:
      return percentiles_ms(serving.version_states, repeats)[0]

  @property
  def pid(self) -> int:
    return self._process.pid

  def calls(self, model_name: str):
    """A fresh client (own channel) per call site, as separate client processes would have."""
    def make_call():
      serving = client.ServingClient(self.address, model_name, timeout=60)
      return lambda images: serving.predict('serving_default', {'images': images}).outputs
    return make_call


def _example(image: np.ndarray, padding: int) -> bytes:
  """An image as ExampleGen writes it, plus a feature the model does not read, `padding` bytes
  long, so a request of examples can be as large as the limits allow."""
  feature = {features.IMAGE_KEY: tf.train.Feature(
      int64_list=tf.train.Int64List(value=image.reshape(-1).tolist())),
             'padding': tf.train.Feature(bytes_list=tf.train.BytesList(value=[b'p' * padding]))}
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _examples_just_under_the_limit(images: np.ndarray) -> np.ndarray:
  """LARGE_ROWS examples whose request is priced (tensors.price) just under --max-decoded-mb:
  as sent and decoded, a string costs about twice its bytes plus 72."""
  plain = len(_example(images[0], 0))
  per_row = EXAMPLES_FILL * defaults.MAX_DECODED_BYTES / (2 * LARGE_ROWS) - 40
  one = np.array([_example(images[0], int(per_row) - plain)], dtype=object)
  return np.resize(one, LARGE_ROWS)


def large_requests(images: np.ndarray, latent_dim: int):
  """(signature, inputs) of each kind just under the default per-request limits."""
  rows = np.resize(images, (LARGE_ROWS, *images.shape[1:]))
  latent = np.resize(np.linspace(-2, 2, 64 * latent_dim, dtype=np.float32),
                     (LARGE_ROWS, latent_dim))
  return [('serving_default', {'images': rows}), ('encode', {'images': rows}),
          ('decode', {'latent': latent}),
          ('sample', {'count': np.array(defaults.MAX_SAMPLE_COUNT, np.int32),
                      'seed': np.array(1, np.int64)}),
          ('from_examples', {'examples': _examples_just_under_the_limit(images)})]


def request_price(name: str, signature_def, inputs) -> limits.Price:
  """What the server charges the request: its own Signature.admit, under the default limits."""
  signature = servable.Signature(name, servable.tensor_specs(signature_def.inputs),
                                 servable.tensor_specs(signature_def.outputs), function=None)
  request = predict_pb2.PredictRequest()
  for alias, array in inputs.items():
    tensors.to_proto(array, request.inputs[alias])
  return signature.admit(request.inputs, (), limits.Limits(), request.ByteSize())[1]


def print_large(kinds, prices, peak, sampled, before, alone, alongside, seconds):
  print(f'\n{LARGE_CLIENTS} concurrent requests just under every per-request limit, '
        f'{seconds:.0f} s, all answers equal the in-process model\'s')
  print(f'{"kind":<18}{"sent MB":>9}{"decoded MB":>12}{"answer MB":>11}{"held MB":>9}')
  for (name, _), price in zip(kinds, prices):
    print(f'{name:<18}{price.sent / 1e6:>9.1f}{price.decoded / 1e6:>12.1f}'
          f'{price.answer / 1e6:>11.1f}{price.in_memory / 1e6:>9.1f}')
  print(f'Server resident memory: {before >> 20} MiB before, peak {peak >> 20} MiB (VmHWM), '
        f'{sampled >> 20} MiB sampled every 10 ms')
  print(f'Batch-1 requests: p50 {alone[0]:.2f} ms, p99 {alone[1]:.2f} ms alone; alongside: '
        f'p50 {alongside[0]:.2f} ms, p99 {alongside[1]:.2f} ms')


def print_memory(rows):
  print(f'\nServer resident memory, MiB\n{"rows per request":<20}{"before":>10}{"peak":>10}'
        f'{"2 s after":>12}')
  for size, before, peak, after in rows:
    print(f'{size:<20,}{before >> 20:>10}{peak >> 20:>10}{after >> 20:>12}')


COLUMNS = ('batch 1 p50', 'p99', 'batch 64 p50', 'p99', f'{CLIENTS} clients', 'client CPU',
           'server CPU')
UNITS = ('ms', 'ms', 'ms', 'ms', 'req/s', 'ms/req', 'ms/req')


def print_table(rows, round_trip_ms: float, paused_ms: float, rounds: int):
  """`rows`: (name, medians in COLUMNS order); rows[0] is the in-process floor."""
  print(f'\nMedians of {rounds} rounds; CPU: milliseconds of CPU time per request at {CLIENTS} '
        'clients, of the clients\' process and of the server\'s')
  print(f'{"":<44}' + ''.join(f'{c:>13}' for c in COLUMNS))
  print(f'{"":<44}' + ''.join(f'{u:>13}' for u in UNITS))
  for name, values in rows:
    print(f'{name:<44}' + ''.join(f'{v:>13.0f}' if u == 'req/s' else f'{v:>13.2f}'
                                   for v, u in zip(values, UNITS)))
  floor_ms = paused_ms + round_trip_ms
  in_process = rows[0][1]
  print(f'\nBatch-1 floor: the in-process call {round_trip_ms:.2f} ms after the previous one '
        f'ended, p50 {paused_ms:.2f} ms (back to back {in_process[0]:.2f} ms), + a gRPC round '
        f'trip without model work (GetModelStatus), p50 {round_trip_ms:.2f} ms = '
        f'{floor_ms:.2f} ms.\n{CLIENTS}-client floor: the in-process calls from {CLIENTS} '
        f'threads, {in_process[4]:.0f} req/s.')
  print(f'{"":<44}{"batch 1 p50":>13}{"over floor":>13}{f"{CLIENTS} clients":>13}'
        f'{"of floor":>13}')
  for name, values in rows[1:]:
    print(f'{name:<44}{values[0]:>10.2f} ms{values[0] - floor_ms:>+10.2f} ms'
          f'{values[4]:>7.0f} req/s{values[4] / in_process[4]:>13.2f}')
  print('Goals (issue #25): batch-1 p50 within +0.50 ms of the floor; with batching, '
        f'{CLIENTS} clients at >= 0.80 of the floor (measured in alternating windows, below; '
        'the column above compares windows up to a minute apart).')


def print_pairs(rounds):
  """`rounds`: per round, paired_throughput's pairs."""
  print(f'\n{CLIENTS} clients, served (the defaults) / in-process, alternating windows (ABBA):')
  for index, pairs in enumerate(rounds):
    ratios = [ratio for ratio, _, _ in pairs]
    print(f'round {index + 1}: ' + ' '.join(f'{ratio:.2f}' for ratio in ratios)
          + f'  median {np.median(ratios):.2f}')
  everything = np.array([pair for pairs in rounds for pair in pairs])
  medians = [np.median([ratio for ratio, _, _ in pairs]) for pairs in rounds]
  print(f'All {len(everything)} pairs: median {np.median(everything[:, 0]):.2f} (quartiles '
        f'{np.percentile(everything[:, 0], 25):.2f} to {np.percentile(everything[:, 0], 75):.2f}); '
        f'round medians {min(medians):.2f} to {max(medians):.2f}. Goal: >= 0.80.')
  in_process, served = np.median(everything[:, 1]), np.median(everything[:, 2])
  print(f'CPU per request, medians: in-process {in_process:.2f} ms, served (client + server) '
        f'{served:.2f} ms: {in_process / served:.2f}, the ratio throughput is bound to when '
        'the CPU is the limit and both sides get the same share.')


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model-dir', default=os.path.join('outputs', 'serving', 'vae'),
                      help='<serving_dir>/<model_name> with pushed versions; the newest is used.')
  parser.add_argument('--repeats', type=int, default=500, help='Calls per batch-1 percentile.')
  parser.add_argument('--seconds', type=float, default=5.0, help='Duration of each throughput run.')
  parser.add_argument('--rounds', type=int, default=5,
                      help='Times every case is measured, in turn; medians are reported.')
  parser.add_argument('--pairs', type=int, default=4,
                      help=f'Per round, alternating windows of in-process and served {CLIENTS}-'
                           'client throughput for the goal\'s ratio.')
  parser.add_argument('--pair-seconds', type=float, default=3.0,
                      help='Duration of each of those windows.')
  parser.add_argument('--warmup-seconds', type=float, default=10.0,
                      help=f'Untimed {CLIENTS}-client load on every side before the first round.')
  parser.add_argument('--only-large-requests', action='store_true',
                      help=f'Run only the {LARGE_CLIENTS} concurrent large requests.')
  args = parser.parse_args(argv)
  if not os.path.isdir(args.model_dir) or not storage.version_dirs(args.model_dir):
    print(f'error: no pushed model under {args.model_dir}: run the pipeline (make run), or '
          f'point --model-dir (make: SERVE_MODEL_DIR=) at <serving_dir>/<model_name>',
          file=sys.stderr)
    return 2
  newest = storage.version_dirs(args.model_dir)
  model_name = os.path.basename(os.path.normpath(args.model_dir))
  images = (np.random.default_rng(0).random((64, 28, 28)) * 255).astype(np.uint8)
  print(f'Model {model_name} version {max(newest)}; {os.cpu_count()} CPUs; '
        f'load average {os.getloadavg()[0]:.1f} (other processes skew the numbers)')
  if args.only_large_requests:
    with LocalServer(args.model_dir) as server:
      print_large(*server.large_requests_case(model_name, images, newest[max(newest)]))
    return 0
  version_dir = newest[max(newest)]
  in_process = in_process_calls(version_dir)
  cases = [('vaetfx serve (batching on, the default)', []),
           ('vaetfx serve --no-enable-batching', ['--no-enable-batching']),
           ('vaetfx serve, TensorFlow\'s thread pools', ['--tensorflow-intra-op-parallelism', '0',
                                                        '--tensorflow-inter-op-parallelism', '0']),
           ('vaetfx serve, TF Serving\'s deploy file', ['--batching-parameters-file',
                                                        BATCHING_FILE])]
  results = {name: [] for name in ['in-process (floor)'] + [name for name, _ in cases]}
  round_trips, paused, pairs = [], [], []
  with contextlib.ExitStack() as stack:
    servers = {name: stack.enter_context(LocalServer(args.model_dir, flags))
               for name, flags in cases}
    warm_up([in_process] + [server.calls(model_name) for server in servers.values()],
            images, args.warmup_seconds)
    for index in range(args.rounds):
      print(f'round {index + 1}/{args.rounds}, load average {os.getloadavg()[0]:.1f}',
            flush=True)
      results['in-process (floor)'].append(measure(in_process, images, args))
      for name, server in servers.items():
        results[name].append(measure(server.calls(model_name), images, args, server.pid))
      default = servers[cases[0][0]]
      pairs.append(paired_throughput(in_process, default.calls(model_name), images, args,
                                     default.pid))
      print(f'  served / in-process, {CLIENTS} clients: '
            + ' '.join(f'{ratio:.2f}' for ratio, _, _ in pairs[-1]), flush=True)
      round_trips.append(default.round_trip_ms(model_name, args.repeats))
      paused.append(paused_in_process_ms(in_process, images, round_trips[-1], args.repeats))
    memory = servers[cases[0][0]].memory_rows(model_name, images)
  print(f'\nLoad average after the rounds: {os.getloadavg()[0]:.1f}')
  print_table([(name, np.median(np.array(values), axis=0)) for name, values in results.items()],
              float(np.median(round_trips)), float(np.median(paused)), args.rounds)
  print_pairs(pairs)
  print_memory(memory)
  sys.stdout.flush()
  with LocalServer(args.model_dir) as server:
    print_large(*server.large_requests_case(model_name, images, version_dir))
  print(f'Load average at the end: {os.getloadavg()[0]:.1f}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
