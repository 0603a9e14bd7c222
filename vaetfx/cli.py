"""The `vaetfx` command line: run the pipeline (and, in later subcommands, serve and query it)."""
import os

# TFX 1.16 and its Transform layer are Keras 2: tf.keras must be tf_keras, and
# TensorFlow reads this once, on its first import. This is the entry point.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import dataclasses  # pylint: disable=g-import-not-at-top,wrong-import-position
import logging  # pylint: disable=g-import-not-at-top,wrong-import-position
import sys  # pylint: disable=g-import-not-at-top,wrong-import-position
import time  # pylint: disable=g-import-not-at-top,wrong-import-position
import warnings  # pylint: disable=g-import-not-at-top,wrong-import-position

# google-api-core warns on every import that Python 3.10 is old; TFX 1.16 needs it.
warnings.filterwarnings('ignore', message='You are using a non-supported Python version')
# TensorFlow's deprecation notices (raised inside TFX and TFMA) drown the progress lines.
logging.getLogger('tensorflow').setLevel(logging.ERROR)

DEFAULT_CACHE_DIR = os.path.join('~', '.cache', 'vaetfx', 'mnist')


def _digits(text: str):
  digits = tuple(sorted({int(d) for d in text.split(',') if d.strip()}))
  if not digits or any(d < 0 or d > 9 for d in digits):
    raise argparse.ArgumentTypeError(f'{text!r}: expected digits 0-9 separated by commas')
  return digits


def _add_dataclass_flags(parser, dataclass_type, title: str):
  """One flag per field, named after it, typed by its default, explained by its metadata."""
  group = parser.add_argument_group(title)
  for field in dataclasses.fields(dataclass_type):
    flag = '--' + field.name.replace('_', '-')
    help_text = field.metadata.get('help', '')
    choices = field.metadata.get('choices')
    if isinstance(field.default, bool):
      group.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction,
                         default=field.default, help=help_text)
    else:
      group.add_argument(flag, dest=field.name, type=type(field.default), default=field.default,
                         choices=choices, help=help_text)


def _from_flags(dataclass_type, args):
  return dataclass_type(**{f.name: getattr(args, f.name) for f in dataclasses.fields(dataclass_type)})


def _add_run_parser(subparsers):
  from vaetfx.pipeline import configs  # pylint: disable=g-import-not-at-top
  defaults = configs.BeamConfig()
  run = subparsers.add_parser(
      'run', help='Run the whole pipeline locally on Apache Beam.',
      description='Runs MnistExampleGen, StatisticsGen, SchemaGen, ExampleValidator, Transform, '
                  'Trainer, Evaluator, the report, the infra validator and the atomic Pusher '
                  'with TFX\'s LocalDagRunner on Beam, with ML Metadata in SQLite under '
                  '--output-dir and caching on: a re-run recomputes only what changed.',
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
  _add_dataclass_flags(run, configs.TrainingHparams, 'training (the Trainer\'s custom_config)')
  gate = run.add_argument_group('evaluator gate (held-out mean ELBO, nats per image)')
  gate.add_argument('--elbo-floor', type=float, default=configs.GateConfig.elbo_floor,
                    help='Bless only a model whose held-out mean ELBO is at least this.')
  gate.add_argument('--elbo-tolerance', type=float, default=configs.GateConfig.elbo_tolerance,
                    help='...and that is at most this many nats below the last blessed model.')
  push = run.add_argument_group('pusher')
  push.add_argument('--serving-dir', default='',
                    help='Where blessed models are pushed as <serving-dir>/<model-name>/<version>/ '
                         '(TF Serving\'s layout). Default: <output-dir>/serving.')
  push.add_argument('--model-name', default=configs.MODEL_NAME, help='TF Serving model name.')
  push.add_argument('--keep-versions', type=int, default=configs.PushConfig.keep_versions,
                    help='Versions kept in the serving directory, the new one included.')
  _add_dataclass_flags(run, configs.ReportConfig, 'report: held-out log-likelihood (IWAE bound)')
  run.set_defaults(handler=_run)


def _run(args) -> int:
  from vaetfx.pipeline import configs, local_runner, mnist_source, run_summary  # pylint: disable=g-import-not-at-top
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
      hparams=_from_flags(configs.TrainingHparams, args),
      gate=configs.GateConfig(args.elbo_floor, args.elbo_tolerance),
      push=configs.PushConfig(args.serving_dir and os.path.abspath(args.serving_dir),
                              args.model_name, args.keep_versions),
      beam=configs.BeamConfig(args.beam_mode, args.beam_workers, tuple(args.beam_arg)),
      report=_from_flags(configs.ReportConfig, args),
      enable_cache=not args.no_cache,
  )
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
