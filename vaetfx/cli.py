"""The `vaetfx` command line: run the pipeline (and, in later subcommands, serve and query it)."""
import os

# TFX 1.16 and its Transform layer are Keras 2: tf.keras must be tf_keras, and
# TensorFlow reads this once, on its first import. This is the entry point.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import sys  # pylint: disable=g-import-not-at-top,wrong-import-position
import time  # pylint: disable=g-import-not-at-top,wrong-import-position
import warnings  # pylint: disable=g-import-not-at-top,wrong-import-position

# google-api-core warns on every import that Python 3.10 is old; TFX 1.16 needs it.
warnings.filterwarnings('ignore', message='You are using a non-supported Python version')

DEFAULT_CACHE_DIR = os.path.join('~', '.cache', 'vaetfx', 'mnist')


def _digits(text: str):
  digits = tuple(sorted({int(d) for d in text.split(',') if d.strip()}))
  if not digits or any(d < 0 or d > 9 for d in digits):
    raise argparse.ArgumentTypeError(f'{text!r}: expected digits 0-9 separated by commas')
  return digits


def _add_run_parser(subparsers):
  from vaetfx.pipeline import configs  # pylint: disable=g-import-not-at-top
  defaults = configs.BeamConfig()
  run = subparsers.add_parser(
      'run', help='Run the whole pipeline locally on Apache Beam.',
      description='Runs ExampleGen, StatisticsGen, SchemaGen, ExampleValidator and Transform '
                  'with TFX\'s LocalDagRunner on Beam, with ML Metadata in SQLite under '
                  '--output-dir and caching on.',
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  run.add_argument('--data-dir', help='Folder with MNIST: the four IDX files (gzip or not) or '
                   'mnist.npz. Default: $MNIST_DIR, then the cache, then a download into it.')
  run.add_argument('--cache-dir', default=DEFAULT_CACHE_DIR,
                   help='Where MNIST is downloaded to when no folder is given.')
  run.add_argument('--output-dir', default='outputs',
                   help='Root of all outputs: pipeline_root/ artifacts and metadata.db.')
  run.add_argument('--pipeline-name', default=configs.PIPELINE_NAME,
                   help='Pipeline name in ML Metadata (runs of one name share a cache).')
  run.add_argument('--digits', type=_digits, default=(),
                   help='Keep only these digits in both splits, e.g. 1,5,6. Default: all.')
  run.add_argument('--beam-mode', default=defaults.direct_running_mode,
                   choices=['in_memory', 'multi_threading', 'multi_processing'],
                   help='DirectRunner running mode.')
  run.add_argument('--beam-workers', type=int, default=defaults.direct_num_workers,
                   help='DirectRunner workers (0: one per core).')
  run.add_argument('--beam-arg', action='append', default=[], metavar='ARG',
                   help='Extra Beam pipeline argument, repeatable, e.g. '
                        '--beam-arg=--runner=FlinkRunner.')
  run.add_argument('--no-cache', action='store_true', help='Re-run every component.')
  run.set_defaults(handler=_run)


def _run(args) -> int:
  from vaetfx.pipeline import configs, local_runner, mnist_source  # pylint: disable=g-import-not-at-top
  from vaetfx.components.mnist_example_gen import mnist_files  # pylint: disable=g-import-not-at-top
  try:
    data_dir = mnist_source.resolve_data_dir(
        args.data_dir, os.environ.get('MNIST_DIR'), os.path.expanduser(args.cache_dir))
  except mnist_source.MnistUnavailableError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  config = configs.PipelineConfig(
      data_dir=data_dir,
      output_dir=os.path.abspath(args.output_dir),
      pipeline_name=args.pipeline_name,
      digits=args.digits,
      beam=configs.BeamConfig(args.beam_mode, args.beam_workers, tuple(args.beam_arg)),
      enable_cache=not args.no_cache,
  )
  print(f'vaetfx run: MNIST from {config.data_dir}, outputs under {config.output_dir}')
  start = time.perf_counter()
  try:
    runs = local_runner.run(config)
  except mnist_files.MnistFormatError as e:
    print(f'error: ExampleGen rejected the input: {e}', file=sys.stderr)
    return 1
  print(f'\nDone in {time.perf_counter() - start:.1f} s.')
  for component_run in runs:
    state = 'cached' if component_run.cached else f'{component_run.seconds:6.1f} s'
    print(f'  {component_run.component:<20} {state}')
  print(f'Artifacts: {config.pipeline_root}\nML Metadata: {config.metadata_path}')
  return 0


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='vaetfx', description='A TFX pipeline that trains a convolutional VAE on MNIST.')
  subparsers = parser.add_subparsers(dest='command', required=True)
  _add_run_parser(subparsers)
  return parser


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  return args.handler(args)


if __name__ == '__main__':
  sys.exit(main())
