"""The `vaetfx` command line: run the pipeline (and, in later subcommands, serve and query it)."""
import os

# TFX 1.16 and its Transform layer are Keras 2: tf.keras must be tf_keras, and
# TensorFlow reads this once, on its first import. This is the entry point.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import logging  # pylint: disable=g-import-not-at-top,wrong-import-position
import sys  # pylint: disable=g-import-not-at-top,wrong-import-position
import time  # pylint: disable=g-import-not-at-top,wrong-import-position
import warnings  # pylint: disable=g-import-not-at-top,wrong-import-position

from vaetfx import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

# google-api-core warns on every import that Python 3.10 is old; TFX 1.16 needs it.
warnings.filterwarnings('ignore', message='You are using a non-supported Python version')
# TensorFlow's deprecation notices (raised inside TFX and TFMA) drown the progress lines.
logging.getLogger('tensorflow').setLevel(logging.ERROR)

DEFAULT_CACHE_DIR = os.path.join('~', '.cache', 'vaetfx', 'mnist')


def _add_run_parser(subparsers):
  run = subparsers.add_parser(
      'run', help='Run the whole pipeline locally on Apache Beam.',
      description='Runs MnistExampleGen, StatisticsGen, SchemaGen, ExampleValidator, Transform, '
                  'Trainer, Evaluator, the report and the atomic Pusher with TFX\'s '
                  'LocalDagRunner on Beam, with ML Metadata in SQLite under --output-dir and '
                  'caching on: a re-run recomputes only what changed.',
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  run.add_argument('--data-dir', help='Folder with MNIST: the four IDX files (gzip or not) or '
                   'mnist.npz. Default: $MNIST_DIR, then the cache, then a download into it.')
  run.add_argument('--cache-dir', default=DEFAULT_CACHE_DIR,
                   help='Where MNIST is downloaded to when no folder is given.')
  run.add_argument('--output-dir', default='outputs',
                   help='Root of all outputs: pipeline_root/ artifacts and metadata.db.')
  push = flags.add_settings_flags(run)
  push.add_argument('--serving-dir', default='',
                    help='Where blessed models are pushed as <serving-dir>/<model-name>/<version>/ '
                         '(TF Serving\'s layout). Default: <output-dir>/serving.')
  run.set_defaults(handler=_run)


def _run(args) -> int:
  from vaetfx.pipeline import local_runner, mnist_source, run_summary  # pylint: disable=g-import-not-at-top
  from vaetfx.components.mnist_example_gen import mnist_files  # pylint: disable=g-import-not-at-top
  try:
    data_dir = mnist_source.resolve_data_dir(
        args.data_dir, os.environ.get('MNIST_DIR'), os.path.expanduser(args.cache_dir))
  except mnist_source.MnistUnavailableError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  config = flags.pipeline_config(
      args, data_dir=data_dir, output_dir=os.path.abspath(args.output_dir),
      serving_dir=args.serving_dir and os.path.abspath(args.serving_dir))
  print(f'vaetfx run: MNIST from {config.data_dir}, outputs under {config.output_dir}')
  start = time.perf_counter()
  try:
    summary = local_runner.run(config)
  except mnist_files.MnistFormatError as e:
    print(f'error: ExampleGen rejected the input: {e}', file=sys.stderr)
    return 1
  print(f'\nDone in {time.perf_counter() - start:.1f} s.')
  print(run_summary.format_summary(summary))
  print(f'Artifacts: {config.pipeline_root}\nML Metadata: {config.metadata_path}\n'
        f'TensorBoard: tensorboard --logdir {os.path.join(config.pipeline_root, "Trainer")}')
  return 0


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='vaetfx', description='A TFX pipeline that trains a convolutional VAE on MNIST.')
  subparsers = parser.add_subparsers(dest='command', required=True)
  _add_run_parser(subparsers)
  from vaetfx.pipeline import kubeflow_runner  # pylint: disable=g-import-not-at-top
  kubeflow_runner.add_subcommands(subparsers)
  from vaetfx.serving import cli as serving_cli  # pylint: disable=g-import-not-at-top
  serving_cli.add_subcommands(subparsers)
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  return args.handler(args)


if __name__ == '__main__':
  sys.exit(main())
