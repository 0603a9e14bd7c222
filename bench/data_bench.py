"""Data-half benchmark: this product's data components against stock TFX's, side by side.

Both run on the same MNIST IDX files, in the same venv, on Beam's in_memory
DirectRunner (the product's default), through TFX's LocalDagRunner, with the
cache off:
- ours: the product's own pipeline definition, run up to Transform and
  ExampleValidator: MnistExampleGen on the IDX files, StatisticsGen, SchemaGen,
  ExampleValidator, Transform with the dotted preprocessing_fn;
- stock: what a TFX user writes without this project: the IDX files converted to
  TFRecords of raw pixel bytes (the conversion is timed and counted on stock's
  side), ImportExampleGen, StatisticsGen, SchemaGen, ExampleValidator, and
  Transform with a module_file (bench/stock_transform_module.py) and its
  statistics on (TFX's default).

Each contender runs in a fresh process and the two alternate (ours, stock, ours,
stock, ...), so load from other processes on a shared machine hits both alike;
the table gives each component's median and the ratio of the medians. Times are
the components' wall times (as `vaetfx run` prints them); process start and
imports are shown apart and counted on neither side. The load average is
printed with every run: for figures to keep, run it on an idle machine.

Both contenders' transformed examples are checked to hold the same rows and
the same pixels, so the comparison is like for like.

  python bench/data_bench.py --data-dir ../shared/data/mnist [--rounds 3]
"""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import dataclasses  # pylint: disable=g-import-not-at-top,wrong-import-position
import glob  # pylint: disable=g-import-not-at-top,wrong-import-position
import importlib  # pylint: disable=g-import-not-at-top,wrong-import-position
import json  # pylint: disable=g-import-not-at-top,wrong-import-position
import shutil  # pylint: disable=g-import-not-at-top,wrong-import-position
import statistics  # pylint: disable=g-import-not-at-top,wrong-import-position
import subprocess  # pylint: disable=g-import-not-at-top,wrong-import-position
import sys  # pylint: disable=g-import-not-at-top,wrong-import-position
import tempfile  # pylint: disable=g-import-not-at-top,wrong-import-position
import time  # pylint: disable=g-import-not-at-top,wrong-import-position
from typing import Dict, List  # pylint: disable=g-import-not-at-top,wrong-import-position

STARTED = time.perf_counter()
CONTENDERS = ('ours', 'stock')
CONVERSION = 'IDX -> TFRecord conversion'
ROWS = (CONVERSION, 'ExampleGen', 'StatisticsGen', 'SchemaGen', 'ExampleValidator', 'Transform')
# What TFX's examples pass to name the DirectRunner's mode. (Any Beam argument
# makes TFX build an sdist of itself per Beam component; the product passes none
# by default, see pipeline/configs.BeamConfig.)
STOCK_BEAM_ARGS = ['--direct_running_mode=in_memory', '--direct_num_workers=1']
STOCK_MODULE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                 'stock_transform_module.py')


@dataclasses.dataclass
class Result:
  """One contender's run: seconds per row of ROWS, and what its Transform wrote."""
  seconds: Dict[str, float]
  process_seconds: float
  load_before: float
  load_after: float = 0.0
  transformed: Dict[str, List[float]] = dataclasses.field(default_factory=dict)

  @property
  def total(self) -> float:
    return sum(self.seconds.values())


def _row(component_id: str) -> str:
  return 'ExampleGen' if component_id.endswith('ExampleGen') else component_id


def run_timed(pipeline, run_options=None) -> Dict[str, float]:
  """Runs a TFX pipeline locally; each component's wall time, timed as `vaetfx run` times it."""
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  from vaetfx.pipeline import local_runner  # pylint: disable=g-import-not-at-top
  with local_runner.component_progress(len(pipeline.components), out=sys.stderr) as runs:
    tfx.orchestration.LocalDagRunner().run(pipeline, run_options=run_options)
  return {_row(run.component): run.seconds for run in runs}


def run_ours(data_dir: str, work_dir: str) -> Dict[str, float]:
  """The product's pipeline definition, up to its data half's two last components."""
  from tfx.orchestration import pipeline as pipeline_lib  # pylint: disable=g-import-not-at-top
  from vaetfx.pipeline import configs, local_runner  # pylint: disable=g-import-not-at-top
  config = configs.PipelineConfig(data_dir=data_dir, output_dir=work_dir, enable_cache=False)
  return run_timed(local_runner.build_pipeline(config),
                   pipeline_lib.RunOptions(to_nodes=['ExampleValidator', 'Transform']))


def convert_idx_to_tfrecords(data_dir: str, records_dir: str):
  """IDX files -> one TFRecord file of tf.Examples (raw pixel bytes, label) per split."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import stock_transform_module as module  # pylint: disable=g-import-not-at-top
  from vaetfx.shared import mnist_files  # pylint: disable=g-import-not-at-top
  for split in mnist_files.IDX_FILES:
    images, labels = mnist_files.load_split(data_dir, split)
    os.makedirs(os.path.join(records_dir, split))
    with tf.io.TFRecordWriter(os.path.join(records_dir, split, 'mnist.tfrecord')) as writer:
      for image, label in zip(images, labels):
        writer.write(tf.train.Example(features=tf.train.Features(feature={
            module.IMAGE_RAW_KEY: tf.train.Feature(
                bytes_list=tf.train.BytesList(value=[image.tobytes()])),
            module.LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
        })).SerializeToString())


def run_stock(data_dir: str, work_dir: str, beam_args: List[str]) -> Dict[str, float]:
  """Stock TFX components on TFRecords converted from the same IDX files."""
  from tfx import v1 as tfx  # pylint: disable=g-import-not-at-top
  from vaetfx.shared import features  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  records_dir = os.path.join(work_dir, 'tfrecords')
  convert_idx_to_tfrecords(data_dir, records_dir)
  conversion_seconds = time.perf_counter() - start
  example_gen = tfx.components.ImportExampleGen(
      input_base=records_dir,
      input_config=tfx.proto.Input(splits=[
          tfx.proto.Input.Split(name=split, pattern=f'{split}/*')
          for split in (features.TRAIN_SPLIT, features.EVAL_SPLIT)]))
  statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs['examples'])
  schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs['statistics'])
  example_validator = tfx.components.ExampleValidator(
      statistics=statistics_gen.outputs['statistics'], schema=schema_gen.outputs['schema'])
  transform = tfx.components.Transform(
      examples=example_gen.outputs['examples'], schema=schema_gen.outputs['schema'],
      module_file=STOCK_MODULE_FILE)
  pipeline = tfx.dsl.Pipeline(
      pipeline_name='stock-data-half',
      pipeline_root=os.path.join(work_dir, 'pipeline_root'),
      components=[example_gen, statistics_gen, schema_gen, example_validator, transform],
      enable_cache=False,
      metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
          os.path.join(work_dir, 'metadata.db')),
      beam_pipeline_args=beam_args)
  return {CONVERSION: conversion_seconds, **run_timed(pipeline)}


def transformed_digest(work_dir: str) -> Dict[str, List[float]]:
  """[rows, sum of pixels] per split of the transformed examples Transform wrote."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vaetfx.shared import features  # pylint: disable=g-import-not-at-top
  digest = {}
  for split in (features.TRAIN_SPLIT, features.EVAL_SPLIT):
    files = sorted(glob.glob(os.path.join(
        work_dir, '**', 'Transform', 'transformed_examples', '*', f'Split-{split}', '*'),
        recursive=True))
    compression = 'GZIP' if files[0].endswith('.gz') else ''
    spec = {features.PIXELS_KEY: tf.io.FixedLenFeature([features.NUM_PIXELS], tf.float32)}
    rows = pixel_sum = 0
    for batch in tf.data.TFRecordDataset(files, compression_type=compression).batch(1024):
      pixels = tf.io.parse_example(batch, spec)[features.PIXELS_KEY]
      rows += int(pixels.shape[0])
      pixel_sum += float(tf.reduce_sum(pixels))
    digest[split] = [rows, pixel_sum]
  return digest


def run_one(contender: str, data_dir: str, work_dir: str, result_path: str,
            stock_beam_args: List[str]):
  """The child process: one contender, timed; writes a Result as JSON.

  TFX, TFDV and TFT are imported first, so neither side's components pay for imports.
  """
  for module in ('tensorflow_data_validation', 'tensorflow_transform.beam',
                 'vaetfx.pipeline.local_runner'):
    importlib.import_module(module)
  load_before = os.getloadavg()[0]
  process_seconds = time.perf_counter() - STARTED
  seconds = (run_ours(data_dir, work_dir) if contender == 'ours'
             else run_stock(data_dir, work_dir, stock_beam_args))
  result = Result(seconds=seconds, process_seconds=process_seconds, load_before=load_before,
                  load_after=os.getloadavg()[0], transformed=transformed_digest(work_dir))
  with open(result_path, 'w') as f:
    json.dump(dataclasses.asdict(result), f)


def spawn(contender: str, data_dir: str, scratch: str, stock_beam_args: List[str]) -> Result:
  """Runs one contender in a fresh process; its log is shown only if it fails."""
  work_dir = tempfile.mkdtemp(prefix=f'{contender}-', dir=scratch)
  result_path = os.path.join(scratch, f'{contender}.json')
  log_path = os.path.join(scratch, f'{contender}.log')
  with open(log_path, 'w') as log:
    done = subprocess.run([sys.executable, os.path.abspath(__file__), '--run-one', contender,
                           '--data-dir', data_dir, '--work-dir', work_dir,
                           '--result', result_path,
                           *(f'--stock-beam-arg={arg}' for arg in stock_beam_args)],
                          stdout=log, stderr=subprocess.STDOUT,
                          check=False)
  shutil.rmtree(work_dir, ignore_errors=True)
  if done.returncode:
    with open(log_path) as log:
      sys.stderr.write(log.read()[-5000:])
    raise SystemExit(f'{contender} failed (exit {done.returncode}); its log is above')
  with open(result_path) as f:
    return Result(**json.load(f))


def print_run(round_number: int, contender: str, result: Result):
  parts = ', '.join(f'{row} {result.seconds[row]:.1f}' for row in ROWS if row in result.seconds)
  print(f'round {round_number} {contender:<5} {result.total:5.1f} s  ({parts}; '
        f'+{result.process_seconds:.1f} s process start; load {result.load_before:.1f} -> '
        f'{result.load_after:.1f})', flush=True)


def print_table(results: Dict[str, List[Result]]):
  def median(contender, row):
    values = [r.seconds[row] for r in results[contender] if row in r.seconds]
    return statistics.median(values) if values else None

  def cell(value):
    return '-' if value is None else f'{value:.1f} s'

  print('\n| component | ours | stock TFX | ours / stock |\n| --- | ---: | ---: | ---: |')
  for row in ROWS:
    ours, stock = median('ours', row), median('stock', row)
    ratio = f'{ours / stock:.2f}' if ours and stock else ''
    print(f'| {row} | {cell(ours)} | {cell(stock)} | {ratio} |')
  totals = {c: statistics.median(r.total for r in results[c]) for c in CONTENDERS}
  print(f'| **total** | **{totals["ours"]:.1f} s** | **{totals["stock"]:.1f} s** | '
        f'**{totals["ours"] / totals["stock"]:.2f}** |')
  loads = [load for c in CONTENDERS for r in results[c] for load in (r.load_before, r.load_after)]
  print(f'\nmedians of {len(results["ours"])} alternating runs each; 1-minute load average '
        f'{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores during the runs')
  print(f'ratio of the medians, ours / stock: {totals["ours"] / totals["stock"]:.2f}')


def check_same_output(results: Dict[str, List[Result]]):
  """Both contenders must have transformed the same images into the same pixels."""
  digests = {json.dumps(r.transformed, sort_keys=True) for c in CONTENDERS for r in results[c]}
  if len(digests) != 1:
    raise SystemExit(f'the contenders wrote different transformed examples: {digests}')
  print(f'both wrote the same transformed examples ([rows, pixel sum] per split): '
        f'{results["ours"][0].transformed}')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--data-dir', default='../shared/data/mnist', help='MNIST IDX files.')
  parser.add_argument('--rounds', type=int, default=3,
                      help='Runs of each contender, alternating (default 3).')
  parser.add_argument('--stock-beam-arg', action='append', metavar='ARG',
                      help='Beam argument for stock TFX, repeatable (default: '
                           f'{" ".join(STOCK_BEAM_ARGS)}); --stock-beam-arg= passes none.')
  parser.add_argument('--run-one', choices=CONTENDERS, help=argparse.SUPPRESS)
  parser.add_argument('--work-dir', help=argparse.SUPPRESS)
  parser.add_argument('--result', help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  data_dir = os.path.abspath(args.data_dir)
  stock_beam_args = [arg for arg in (args.stock_beam_arg or STOCK_BEAM_ARGS) if arg]
  if args.run_one:
    run_one(args.run_one, data_dir, args.work_dir, args.result, stock_beam_args)
    return
  print(f'{args.rounds} rounds of ours and stock TFX, alternating, on {data_dir}; '
        f'stock\'s Beam arguments: {stock_beam_args}', flush=True)
  results = {c: [] for c in CONTENDERS}
  with tempfile.TemporaryDirectory(prefix='data_bench-') as scratch:
    for round_number in range(1, args.rounds + 1):
      for contender in CONTENDERS:
        results[contender].append(spawn(contender, data_dir, scratch, stock_beam_args))
        print_run(round_number, contender, results[contender][-1])
  check_same_output(results)
  print_table(results)


if __name__ == '__main__':
  main()
