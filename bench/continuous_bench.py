"""Continuous-training benchmark: what a run on a new span costs against reprocessing old data.

Measurements, each a set of contenders run side by side (a fresh process each, alternating
round by round, so load from other processes hits all alike), reported as medians and
ratios with the load average:

- `data-half`: the data half (MnistExampleGen, StatisticsGen, SchemaGen,
  ExampleValidator, Transform) of `vaetfx run --train-spans 2` on span 2 of
  bench/make_spans.py's spans:
  - `span 2 (span 1 cached)`: span 1 was ingested by an earlier run (done
    untimed, in the same process, before the clock starts); the run finds span 1's
    data half in the cache and computes span 2's;
  - `both spans`: the same run on an empty ML Metadata, which computes the data
    half of span 1 and of span 2;
  - `one folder of both`: the data half on the original folder (both spans'
    images in one span), what training on both costs without spans.
  Times are the wall time of local_runner.run (pipeline building, cache lookups and
  every component); imports and process start are counted on no side.

A measurement is a function of a scratch folder returning {contender: Contender};
add one to MEASUREMENTS (the warm-start measurements go beside this one).

  python bench/continuous_bench.py --data-dir ../shared/data/mnist [--rounds 3]
"""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import dataclasses  # pylint: disable=g-import-not-at-top,wrong-import-position
import importlib  # pylint: disable=g-import-not-at-top,wrong-import-position
import json  # pylint: disable=g-import-not-at-top,wrong-import-position
import shutil  # pylint: disable=g-import-not-at-top,wrong-import-position
import statistics  # pylint: disable=g-import-not-at-top,wrong-import-position
import subprocess  # pylint: disable=g-import-not-at-top,wrong-import-position
import sys  # pylint: disable=g-import-not-at-top,wrong-import-position
import tempfile  # pylint: disable=g-import-not-at-top,wrong-import-position
import time  # pylint: disable=g-import-not-at-top,wrong-import-position
from typing import Callable, Dict, List  # pylint: disable=g-import-not-at-top,wrong-import-position

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))


@dataclasses.dataclass(frozen=True)
class Contender:
  """`setup(work_dir)` runs untimed, then `timed(work_dir)`; both in the contender's process."""
  setup: Callable[[str], None]
  timed: Callable[[str], None]


def _data_half_config(data_dir: str, work_dir: str, train_spans: int):
  """The PipelineConfig `vaetfx run --train-spans K --data-dir DIR` builds (cache on)."""
  from vaetfx.pipeline import configs, mnist_source  # pylint: disable=g-import-not-at-top
  span, older = mnist_source.choose_spans(data_dir, 0, train_spans)
  return configs.PipelineConfig(
      data_dir=data_dir, output_dir=work_dir, data_pattern=mnist_source.data_pattern(data_dir, 0),
      span=span, train_spans=train_spans, older_spans=older)


def _run_data_half(config) -> None:
  from vaetfx.pipeline import local_runner  # pylint: disable=g-import-not-at-top
  from vaetfx.pipeline import pipeline as pipeline_def  # pylint: disable=g-import-not-at-top
  local_runner.run(config, out=sys.stderr, last_components=pipeline_def.DATA_HALF)


def data_half_contenders(spans_dir: str, data_dir: str) -> Dict[str, Contender]:
  """The data half of a run on span 2 with span 1 cached, against computing both."""
  def nothing(_):
    pass

  def ingest_span_1(work_dir):
    """An earlier run's, `vaetfx run --span 1`: the same cache keys as the window's span 1."""
    _run_data_half(dataclasses.replace(_data_half_config(spans_dir, work_dir, 1), span=1))

  return {
      'span 2 (span 1 cached)': Contender(
          ingest_span_1, lambda work_dir: _run_data_half(_data_half_config(spans_dir, work_dir, 2))),
      'both spans': Contender(
          nothing, lambda work_dir: _run_data_half(_data_half_config(spans_dir, work_dir, 2))),
      'one folder of both': Contender(
          nothing, lambda work_dir: _run_data_half(_data_half_config(data_dir, work_dir, 1))),
  }


MEASUREMENTS = {'data-half': data_half_contenders}


def make_spans(data_dir: str, spans_dir: str) -> None:
  subprocess.run([sys.executable, os.path.join(BENCH_DIR, 'make_spans.py'), '--data-dir',
                  data_dir, '--out', spans_dir], check=True, stdout=subprocess.DEVNULL)


def run_one(measurement: str, contender: str, spans_dir: str, data_dir: str, work_dir: str,
            result_path: str) -> None:
  """The child process: imports first (counted on no side), the setup, then the timed part."""
  for module in ('tensorflow_data_validation', 'tensorflow_transform.beam',
                 'vaetfx.pipeline.local_runner'):
    importlib.import_module(module)
  chosen = MEASUREMENTS[measurement](spans_dir, data_dir)[contender]
  chosen.setup(work_dir)
  load_before = os.getloadavg()[0]
  start = time.perf_counter()
  chosen.timed(work_dir)
  seconds = time.perf_counter() - start
  with open(result_path, 'w', encoding='utf-8') as f:
    json.dump({'seconds': seconds, 'load': [load_before, os.getloadavg()[0]]}, f)


def spawn(measurement: str, contender: str, spans_dir: str, data_dir: str,
          scratch: str) -> Dict:
  """One contender in a fresh process; its log is shown only if it fails."""
  work_dir = tempfile.mkdtemp(prefix='run-', dir=scratch)
  result_path = os.path.join(scratch, 'result.json')
  log_path = os.path.join(scratch, 'run.log')
  with open(log_path, 'w', encoding='utf-8') as log:
    done = subprocess.run([sys.executable, os.path.abspath(__file__), '--run-one', measurement,
                           contender, '--spans-dir', spans_dir, '--data-dir', data_dir,
                           '--work-dir', work_dir, '--result', result_path],
                          stdout=log, stderr=subprocess.STDOUT, check=False)
  shutil.rmtree(work_dir, ignore_errors=True)
  if done.returncode:
    with open(log_path, encoding='utf-8') as log:
      sys.stderr.write(log.read()[-5000:])
    raise SystemExit(f'{measurement} / {contender} failed (exit {done.returncode})')
  with open(result_path, encoding='utf-8') as f:
    return json.load(f)


def print_table(measurement: str, results: Dict[str, List[Dict]]) -> None:
  names = list(results)
  medians = {name: statistics.median(r['seconds'] for r in results[name]) for name in names}
  reference = names[1] if len(names) > 1 else names[0]
  print(f'\n{measurement}: medians of {len(results[names[0]])} alternating runs each\n'
        f'| contender | median | runs | / {reference} |\n| --- | ---: | --- | ---: |')
  for name in names:
    runs = ', '.join(f'{r["seconds"]:.1f}' for r in results[name])
    print(f'| {name} | {medians[name]:.1f} s | {runs} | {medians[name] / medians[reference]:.2f} |')
  loads = [load for name in names for r in results[name] for load in r['load']]
  print(f'1-minute load average {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores '
        'during the timed parts')


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--data-dir', default='../shared/data/mnist', help='MNIST IDX files.')
  parser.add_argument('--rounds', type=int, default=3, help='Runs of each contender (default 3).')
  parser.add_argument('--measurement', action='append', choices=sorted(MEASUREMENTS),
                      help='Measurements to take, repeatable (default: all).')
  parser.add_argument('--run-one', nargs=2, help=argparse.SUPPRESS)
  parser.add_argument('--spans-dir', help=argparse.SUPPRESS)
  parser.add_argument('--work-dir', help=argparse.SUPPRESS)
  parser.add_argument('--result', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  data_dir = os.path.abspath(args.data_dir)
  if args.run_one:
    run_one(*args.run_one, args.spans_dir, data_dir, args.work_dir, args.result)
    return
  with tempfile.TemporaryDirectory(prefix='continuous_bench-') as scratch:
    spans_dir = os.path.join(scratch, 'spans')
    make_spans(data_dir, spans_dir)
    for measurement in args.measurement or sorted(MEASUREMENTS):
      names = list(MEASUREMENTS[measurement](spans_dir, data_dir))
      print(f'{measurement}: {args.rounds} rounds of {", ".join(names)}, alternating; '
            f'spans of bench/make_spans.py from {data_dir}', flush=True)
      results: Dict[str, List[Dict]] = {name: [] for name in names}
      for round_number in range(1, args.rounds + 1):
        for name in names:
          results[name].append(spawn(measurement, name, spans_dir, data_dir, scratch))
          result = results[name][-1]
          print(f'round {round_number} {name:<24} {result["seconds"]:6.1f} s  (load '
                f'{result["load"][0]:.1f} -> {result["load"][1]:.1f})', flush=True)
      print_table(measurement, results)


if __name__ == '__main__':
  main()
