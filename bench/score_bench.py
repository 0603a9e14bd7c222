"""Batch-scoring benchmark: `vaetfx score` and the pipeline's scorer against calling the model.

Contenders, each in a fresh process, alternating round by round so that load
from other processes on a shared machine hits them alike:
- floor: the model's `from_examples` signature called in-process on the same
  images, already serialized as tf.Examples, in batches of 256 (after one
  untimed warm-up batch); only the calls are timed;
- command: `vaetfx score` on the split, timed by its own "Scored N images in
  X s" line (Beam's import, the model's load, the pipeline, the CSV), with the
  process's wall time beside it;
- scorer: the pipeline's AnomalyScorer executor (id BulkInferrer) on the same
  images as ExampleGen writes them, its Do() timed (Beam, the model's load,
  reading and writing the examples);
- bulk_inferrer (only with --contenders ...,bulk_inferrer): TFX's own
  BulkInferrer executor, as the pipeline ran it before, on the same examples.

Each run prints its images/s, its peak resident memory (the child's ru_maxrss)
and the 1-minute load average; the table gives medians, each contender's
ratio to the floor and its ratio to each round's floor. Every contender's
scores are checked against the floor's.

  python bench/score_bench.py --model-dir outputs/serving/vae      (make bench-score)
"""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import csv  # pylint: disable=g-import-not-at-top,wrong-import-position
import glob  # pylint: disable=g-import-not-at-top,wrong-import-position
import json  # pylint: disable=g-import-not-at-top,wrong-import-position
import re  # pylint: disable=g-import-not-at-top,wrong-import-position
import shutil  # pylint: disable=g-import-not-at-top,wrong-import-position
import statistics  # pylint: disable=g-import-not-at-top,wrong-import-position
import subprocess  # pylint: disable=g-import-not-at-top,wrong-import-position
import sys  # pylint: disable=g-import-not-at-top,wrong-import-position
import tempfile  # pylint: disable=g-import-not-at-top,wrong-import-position
import time  # pylint: disable=g-import-not-at-top,wrong-import-position
from typing import Dict, List  # pylint: disable=g-import-not-at-top,wrong-import-position

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

CONTENDERS = ('floor', 'command', 'scorer', 'bulk_inferrer')
DEFAULT_CONTENDERS = 'floor,command,scorer'
BATCH_SIZE = 256
SPLIT = 'eval'
VAETFX = os.path.join(os.path.dirname(sys.executable), 'vaetfx')
SCORED_LINE = re.compile(r'^Scored ([\d,]+) images in ([\d.]+) s')
# Scores in the CSV have 4 decimals; scores computed in other batches may differ in float32's
# last digits.
CSV_TOLERANCE = 1e-4
TOLERANCE = 1e-3


def _examples_dir(scratch: str) -> str:
  return os.path.join(scratch, 'examples')


def write_examples(data_dir: str, scratch: str):
  """The split as MnistExampleGen writes it (Split-eval/ of gzipped tf.Examples), once."""
  from vaetfx.components.mnist_example_gen import executor  # pylint: disable=g-import-not-at-top
  from vaetfx.shared import mnist_files  # pylint: disable=g-import-not-at-top
  images, labels = mnist_files.load_split(data_dir, SPLIT)
  split_dir = os.path.join(_examples_dir(scratch), f'Split-{SPLIT}')
  os.makedirs(split_dir)
  executor.write_examples(os.path.join(split_dir, executor.FILE_NAME), images, labels)


def run_floor(data_dir: str, model_dir: str, scratch: str) -> Dict:
  """from_examples in batches of BATCH_SIZE, in this process; the calls alone are timed."""
  from vaetfx.models import export  # pylint: disable=g-import-not-at-top
  from vaetfx.pipeline import batch_scoring  # pylint: disable=g-import-not-at-top
  from vaetfx.shared import examples, mnist_files  # pylint: disable=g-import-not-at-top
  images, labels = mnist_files.load_split(data_dir, SPLIT)
  serialized = examples.serialize_examples(images, labels)
  model_path = batch_scoring.resolve_model_dir(model_dir)
  model = export.load_exported_model(model_path)
  score = model.score_key
  model.from_examples(serialized[:BATCH_SIZE])  # warm-up: the first call traces
  start = time.perf_counter()
  scores = np.concatenate([model.from_examples(serialized[i:i + BATCH_SIZE])[score]
                           for i in range(0, len(serialized), BATCH_SIZE)])
  seconds = time.perf_counter() - start
  np.save(os.path.join(scratch, 'floor_scores.npy'), scores)
  return {'seconds': seconds, 'images': len(scores)}


def _examples_artifacts(scratch: str, model_path: str, name: str):
  from tfx.types import artifact_utils, standard_artifacts  # pylint: disable=g-import-not-at-top
  examples = standard_artifacts.Examples()
  examples.uri = _examples_dir(scratch)
  examples.split_names = artifact_utils.encode_split_names([SPLIT])
  model = standard_artifacts.Model()
  model.uri = os.path.join(scratch, 'model')
  os.makedirs(model.uri, exist_ok=True)
  serving = os.path.join(model.uri, 'Format-Serving')
  if not os.path.exists(serving):
    os.symlink(os.path.abspath(model_path), serving)
  output = standard_artifacts.Examples()
  output.uri = os.path.join(scratch, name)
  shutil.rmtree(output.uri, ignore_errors=True)
  return examples, model, output


def run_scorer(data_dir: str, model_dir: str, scratch: str, stock: bool) -> Dict:
  """The AnomalyScorer's executor (or TFX's BulkInferrer's) on the examples; Do() is timed."""
  from tfx.types import standard_component_specs as keys  # pylint: disable=g-import-not-at-top
  from vaetfx.pipeline import batch_scoring  # pylint: disable=g-import-not-at-top
  model_path = batch_scoring.resolve_model_dir(model_dir)
  score = batch_scoring.check_signature(model_path)  # read from saved_model.pb: the model's
  # first load (TensorFlow's one-time costs included) stays inside the timed Do()
  examples, model, output = _examples_artifacts(scratch, model_path,
                                                'bulk_inferrer' if stock else 'scorer')
  if stock:
    from tfx.components.bulk_inferrer import executor  # pylint: disable=g-import-not-at-top
    from tfx.proto import bulk_inferrer_pb2  # pylint: disable=g-import-not-at-top
    from tfx.utils import proto_utils  # pylint: disable=g-import-not-at-top
    properties = {
        keys.DATA_SPEC_KEY: proto_utils.proto_to_json(
            bulk_inferrer_pb2.DataSpec(example_splits=[SPLIT])),
        keys.MODEL_SPEC_KEY: proto_utils.proto_to_json(
            bulk_inferrer_pb2.ModelSpec(model_signature_name=['from_examples'])),
        keys.OUTPUT_EXAMPLE_SPEC_KEY: proto_utils.proto_to_json(
            bulk_inferrer_pb2.OutputExampleSpec(output_columns_spec=[
                bulk_inferrer_pb2.OutputColumnsSpec(predict_output=bulk_inferrer_pb2.PredictOutput(
                    output_columns=[bulk_inferrer_pb2.PredictOutputCol(
                        output_key=score, output_column=score)]))]))}
  else:
    from vaetfx.components.anomaly_scorer import executor  # pylint: disable=g-import-not-at-top
    properties = {executor.SPLIT_KEY: SPLIT, executor.SCORE_KEY_KEY: score}
  start = time.perf_counter()
  executor.Executor().Do({keys.EXAMPLES_KEY: [examples], keys.MODEL_KEY: [model]},
                         {keys.OUTPUT_EXAMPLES_KEY: [output]}, properties)
  seconds = time.perf_counter() - start
  scores = _scores_of_examples(glob.glob(os.path.join(output.uri, f'Split-{SPLIT}', '*')), score,
                               data_dir)
  np.save(os.path.join(scratch, f'{"bulk_inferrer" if stock else "scorer"}_scores.npy'), scores)
  return {'seconds': seconds, 'images': len(scores)}


def _scores_of_examples(files: List[str], score: str, data_dir: str) -> np.ndarray:
  """The scores of written examples, in the order of their images in the split (matched by
  image, so the writer's order does not matter)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vaetfx.shared import mnist_files  # pylint: disable=g-import-not-at-top
  spec = {'image': tf.io.FixedLenFeature([784], tf.int64),
          score: tf.io.FixedLenFeature([], tf.float32)}
  by_image = {}
  for record in tf.data.TFRecordDataset(files, compression_type='GZIP'):
    parsed = tf.io.parse_single_example(record, spec)
    by_image[parsed['image'].numpy().astype(np.uint8).tobytes()] = float(parsed[score])
  return np.array([by_image[image.tobytes()]
                   for image in mnist_files.load_split(data_dir, SPLIT)[0]])


def spawn(contender: str, args, scratch: str) -> Dict:
  """One contender in a fresh process: its result, with its peak RSS and the load average."""
  log_path = os.path.join(scratch, f'{contender}.log')
  result_path = os.path.join(scratch, f'{contender}.json')
  if contender == 'command':
    command = [VAETFX, 'score', '--data-dir', args.data_dir, '--model-dir', args.model_dir,
               '--split', SPLIT, '--output', os.path.join(scratch, 'scores.csv')]
  else:
    command = [sys.executable, os.path.abspath(__file__), '--run-one', contender,
               '--data-dir', args.data_dir, '--model-dir', args.model_dir,
               '--scratch', scratch, '--result', result_path]
  load_before = os.getloadavg()[0]
  start = time.perf_counter()
  with open(log_path, 'w') as log:
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(process.pid, 0)
  wall = time.perf_counter() - start
  with open(log_path) as log:
    output = log.read()
  if os.waitstatus_to_exitcode(status):
    sys.stderr.write(output[-5000:])
    raise SystemExit(f'{contender} failed; its log is above')
  if contender == 'command':
    match = next(SCORED_LINE.match(line) for line in output.splitlines()
                 if SCORED_LINE.match(line))
    result = {'images': int(match.group(1).replace(',', '')), 'seconds': float(match.group(2))}
  else:
    with open(result_path) as f:
      result = json.load(f)
  return {**result, 'wall': wall, 'peak_mib': usage.ru_maxrss / 1024,
          'load': (load_before, os.getloadavg()[0])}


def check_scores(scratch: str, contenders: List[str]):
  """Every contender's score of each image equals the floor's (the CSV to its 4 decimals)."""
  floor = np.load(os.path.join(scratch, 'floor_scores.npy'))
  for contender in contenders:
    if contender == 'command':
      with open(os.path.join(scratch, 'scores.csv'), newline='') as f:
        rows = sorted(csv.DictReader(f), key=lambda row: int(row['index']))
      scores = np.array([float(row[list(row)[-1]]) for row in rows])
      tolerance = CSV_TOLERANCE
    elif contender != 'floor':
      scores = np.load(os.path.join(scratch, f'{contender}_scores.npy'))
      tolerance = TOLERANCE
    else:
      continue
    worst = float(np.max(np.abs(scores - floor)))
    status = 'equal' if len(scores) == len(floor) and worst <= tolerance else 'DIFFERENT'
    print(f'{contender}: {len(scores):,} scores, {status} to the floor\'s '
          f'(largest difference {worst:.2g})')
    if status != 'equal':
      raise SystemExit(f'{contender} scored differently from the floor')


def _round_ratios(runs: List[Dict], floor_runs: List[Dict]) -> str:
  """Each round's rate over that round's floor's: under a load that swings between rounds,
  steadier than the ratio of the medians."""
  return ', '.join(f'{(r["images"] / r["seconds"]) / (f["images"] / f["seconds"]):.2f}'
                   for r, f in zip(runs, floor_runs))


def print_table(results: Dict[str, List[Dict]]):
  rate = {c: statistics.median(r['images'] / r['seconds'] for r in runs)
          for c, runs in results.items()}
  print('\n| contender | images/s | ratio to the floor | per round | scoring s | process wall s | '
        'peak RSS MiB |\n| --- | ---: | ---: | --- | ---: | ---: | ---: |')
  for contender, runs in results.items():
    median = lambda key: statistics.median(r[key] for r in runs)  # pylint: disable=cell-var-from-loop
    print(f'| {contender} | {rate[contender]:,.0f} | {rate[contender] / rate["floor"]:.2f} | '
          f'{_round_ratios(runs, results["floor"])} | {median("seconds"):.1f} | '
          f'{median("wall"):.1f} | {median("peak_mib"):,.0f} |')
  loads = [load for runs in results.values() for r in runs for load in r['load']]
  print(f'\nmedians of {len(results["floor"])} alternating runs each; 1-minute load average '
        f'{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores during the runs')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--model-dir', default='outputs/serving/vae',
                      help='A SavedModel, or a serving folder (its newest version is used).')
  parser.add_argument('--data-dir', default='../shared/data/mnist',
                      help='MNIST; its t10k (eval) images are scored.')
  parser.add_argument('--rounds', type=int, default=3,
                      help='Runs of each contender, alternating (default 3).')
  parser.add_argument('--contenders', default=DEFAULT_CONTENDERS,
                      help=f'Comma-separated, from {", ".join(CONTENDERS)}; floor always runs.')
  parser.add_argument('--run-one', choices=CONTENDERS, help=argparse.SUPPRESS)
  parser.add_argument('--scratch', help=argparse.SUPPRESS)
  parser.add_argument('--result', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  args.data_dir, args.model_dir = os.path.abspath(args.data_dir), os.path.abspath(args.model_dir)
  if args.run_one:
    result = (run_floor(args.data_dir, args.model_dir, args.scratch) if args.run_one == 'floor'
              else run_scorer(args.data_dir, args.model_dir, args.scratch,
                              args.run_one == 'bulk_inferrer'))
    with open(args.result, 'w') as f:
      json.dump(result, f)
    return
  contenders = ['floor'] + [c for c in args.contenders.split(',') if c and c != 'floor']
  unknown = set(contenders) - set(CONTENDERS)
  if unknown:
    parser.error(f'--contenders: unknown {sorted(unknown)}; choose from {CONTENDERS}')
  print(f'{args.rounds} rounds of {", ".join(contenders)}, alternating; {args.model_dir} on the '
        f'{SPLIT} split of {args.data_dir}', flush=True)
  results = {c: [] for c in contenders}
  with tempfile.TemporaryDirectory(prefix='score_bench-') as scratch:
    write_examples(args.data_dir, scratch)
    for round_number in range(1, args.rounds + 1):
      for contender in contenders:
        result = spawn(contender, args, scratch)
        results[contender].append(result)
        print(f'round {round_number} {contender:<13} {result["images"] / result["seconds"]:7,.0f} '
              f'images/s  ({result["seconds"]:.1f} s scoring, {result["wall"]:.1f} s process, '
              f'peak {result["peak_mib"]:,.0f} MiB; load {result["load"][0]:.1f} -> '
              f'{result["load"][1]:.1f})', flush=True)
      check_scores(scratch, contenders)
  print_table(results)


if __name__ == '__main__':
  main()
