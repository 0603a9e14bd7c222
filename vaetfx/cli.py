"""The `vaetfx` command line: run the pipeline, compile it for Kubeflow, serve and query it.

Every flag is checked while parsing, before TensorFlow or TFX is imported, so
bad input fails in about a second with one line; the exit codes are
flags.EXIT_* (README: Exit codes).
"""
import os

# TFX 1.16 and its Transform layer are Keras 2: tf.keras must be tf_keras, and
# TensorFlow reads this once, on its first import. This is the entry point.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import dataclasses  # pylint: disable=g-import-not-at-top,wrong-import-position
import gc  # pylint: disable=g-import-not-at-top,wrong-import-position
import logging  # pylint: disable=g-import-not-at-top,wrong-import-position
import sys  # pylint: disable=g-import-not-at-top,wrong-import-position
import time  # pylint: disable=g-import-not-at-top,wrong-import-position
import warnings  # pylint: disable=g-import-not-at-top,wrong-import-position

# Each of these imports only what its flags need; a command imports the rest when it runs.
from vaetfx import (flags, kubeflow_commands, model_versions,  # pylint: disable=wrong-import-position
                    score_command, serving_commands)
from vaetfx.shared import serving_folder, storage  # pylint: disable=wrong-import-position

DEFAULT_CACHE_DIR = os.path.join('~', '.cache', 'vaetfx', 'mnist')
DEFAULT_METADATA_CACHE = os.path.join('~', '.cache', 'vaetfx', 'metadata')
VERBOSE_ENV = 'VAETFX_VERBOSE'


def _silence_library_noise():
  """Hides what TensorFlow, absl and their dependencies print that says nothing to a user.

  Called before TensorFlow is imported, since its C++ log level (the CUDA
  "Unable to register cuBLAS factory" lines) is read once, at import.
  """
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  # gRPC's C core logs fork() notes ("Other threads are currently calling into gRPC").
  os.environ.setdefault('GRPC_VERBOSITY', 'ERROR')
  # google-api-core warns on every import that Python 3.10 is old; TFX 1.16 needs it.
  warnings.filterwarnings('ignore', category=FutureWarning)
  warnings.filterwarnings('ignore', category=DeprecationWarning)
  # TensorFlow's deprecation notices (raised inside TFX and TFMA) drown the progress lines.
  logging.getLogger('tensorflow').setLevel(logging.ERROR)
  logging.getLogger('apache_beam').setLevel(logging.ERROR)
  # A filter, not a level: Transform resets absl's verbosity while the pipeline runs.
  logging.getLogger('absl').addFilter(lambda record: record.levelno >= logging.ERROR)


def _add_run_parser(subparsers):
  run = subparsers.add_parser(
      'run', help='Run the whole pipeline locally on Apache Beam.',
      description='Runs MnistExampleGen, StatisticsGen, SchemaGen, ExampleValidator, Transform, '
                  'Trainer, Evaluator, the infra validator, the atomic Pusher and the report '
                  'with TFX\'s LocalDagRunner on Beam, with ML Metadata in SQLite under --output-dir and '
                  'caching on: a re-run recomputes only the components whose inputs, settings or '
                  'code (the installed vaetfx package) changed.',
      epilog=flags.EXIT_CODES_HELP,
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  run.add_argument('--data-dir', help='Folder with MNIST: the four IDX files (gzip or not) or '
                   'mnist.npz, or span-1/, span-2/, ... folders of them (see --span). '
                   'Default: $MNIST_DIR, then the cache, then a download into it.')
  run.add_argument('--cache-dir', default=DEFAULT_CACHE_DIR,
                   help='Where MNIST is downloaded to when no folder is given.')
  run.add_argument('--output-dir', default='outputs',
                   help='Root of all outputs: pipeline_root/ artifacts, serving/ and metadata.db; '
                        'a local folder or a URI (gs://bucket/path).')
  run.add_argument('--metadata-db', default='',
                   help='ML Metadata\'s SQLite file (local). Default: <output-dir>/metadata.db, '
                        f'or under {DEFAULT_METADATA_CACHE} for a URI --output-dir.')
  push = flags.add_settings_flags(run)
  push.add_argument('--serving-dir', default='',
                    help='Where blessed models are pushed as <serving-dir>/<model-name>/<version>/ '
                         '(TF Serving\'s layout). Default: <output-dir>/serving.')
  run.set_defaults(handler=_run)


def _checked_config(args):
  """The run's PipelineConfig once its folders and input files passed their checks; raises
  BadPath, MnistUnavailableError or MnistFormatError. Only light modules are imported until
  here."""
  from vaetfx.pipeline import mnist_source  # pylint: disable=g-import-not-at-top
  output_dir = flags.writable_dir(args.output_dir, '--output-dir')
  serving_dir = args.serving_dir and flags.writable_dir(args.serving_dir, '--serving-dir')
  data_dir = mnist_source.resolve_data_dir(
      args.data_dir, os.environ.get('MNIST_DIR'), os.path.expanduser(args.cache_dir))
  data_pattern = mnist_source.data_pattern(data_dir, args.span)
  span, older_spans = mnist_source.choose_spans(data_dir, args.span, args.train_spans)
  mnist_source.check_files(data_dir, (*older_spans, span))
  config = dataclasses.replace(
      flags.pipeline_config(args, data_dir=data_dir, output_dir=output_dir,
                            serving_dir=serving_dir, data_pattern=data_pattern, span=span,
                            older_spans=older_spans),
      metadata_db=_metadata_db(args.metadata_db, output_dir))
  flags.writable_dir(config.serving_dir, '--serving-dir' if serving_dir else
                     '--output-dir\'s serving folder')
  if config.gate.on_incomparable_baseline == 'stop':
    serving_folder.comparable_baseline(
        os.path.join(config.serving_dir, config.push.model_name), config.hparams.score_key)
  return config


def _metadata_db(metadata_db: str, output_dir: str) -> str:
  """The SQLite file of ML Metadata: given, in the output folder, or, for a URI output folder
  (SQLite needs a local file), a local one named after it."""
  if metadata_db:
    return os.path.join(flags.writable_dir(os.path.dirname(os.path.abspath(metadata_db)),
                                           '--metadata-db\'s folder'),
                        os.path.basename(metadata_db))
  if not storage.is_uri(output_dir):
    return ''
  scheme, rest = output_dir.split('://', 1)
  return os.path.join(os.path.expanduser(DEFAULT_METADATA_CACHE), scheme, rest, 'metadata.db')


def _outcome(summary):
  """(exit code, the summary's last line): did this run leave its model pushed?"""
  if summary.pushed_path and summary.pushed_on_disk:
    return flags.EXIT_OK, f'Result: model pushed (exit status {flags.EXIT_OK}).'
  if summary.drift_stopped:
    return flags.EXIT_NOT_PUSHED, ('Result: stopped before training: the data drifted '
                                   f'(exit status {flags.EXIT_NOT_PUSHED}).')
  reason = ('the Evaluator did not bless it' if summary.blessed is False
            else 'its version is no longer on disk' if summary.pushed_path
            else 'it was not pushed')
  return flags.EXIT_NOT_PUSHED, (f'Result: nothing pushed: {reason} '
                                 f'(exit status {flags.EXIT_NOT_PUSHED}).')


def _refuse_baseline(error: Exception) -> int:
  """Checked before the pipeline runs, and again by ServedModelImporter when it runs (the
  folder may change meanwhile): either way, one line and exit 2, before any training."""
  print(f'vaetfx run: error: {error} (--on-incomparable-baseline floor gates on the floor '
        'alone)', file=sys.stderr)
  return flags.EXIT_BAD_INPUT


def _run(args) -> int:
  from vaetfx.pipeline import mnist_source  # pylint: disable=g-import-not-at-top
  from vaetfx.shared import mnist_files  # pylint: disable=g-import-not-at-top
  try:
    config = _checked_config(args)
  except (flags.BadPath, mnist_source.MnistUnavailableError, mnist_files.MnistFormatError) as e:
    print(f'vaetfx run: error: {e}', file=sys.stderr)
    return flags.EXIT_BAD_INPUT
  except serving_folder.IncomparableServedModel as e:
    return _refuse_baseline(e)
  collecting = gc.isenabled()
  gc.disable()  # Until the pipeline's modules are loaded and frozen: see _run_frozen.
  try:
    from vaetfx.pipeline import local_runner  # pylint: disable=g-import-not-at-top
    gc.freeze()
  finally:
    if collecting:
      gc.enable()
  try:
    return _run_frozen(config, local_runner)
  finally:
    gc.unfreeze()


def _run_frozen(config, local_runner) -> int:
  """Runs the pipeline with every object that existed before it, the modules of TensorFlow,
  TFX, Beam and the rest, frozen (gc.freeze()) out of the garbage collector's way.

  Each full collection walks every tracked object, and importing the pipeline's
  modules makes about a million of them: a cold `vaetfx run --epochs 2` spent
  2.5 CPU-seconds in the collector, most in the eight full collections
  (up to 0.5 s each) made while the modules loaded; 0.6 with the collector
  paused while they load (they make few cycles) and frozen afterwards, and the
  imports took 5.3 s instead of 6.9 (docs/measurements.md, load 3.5-5.7). The
  modules live as long as the process, so freezing them frees nothing later
  than otherwise; what the pipeline makes is collected as before. _run
  unfreezes when the run ends, so a caller's own process (a test) gets its
  collector back as it was.
  """
  from vaetfx.pipeline import run_summary  # pylint: disable=g-import-not-at-top
  from vaetfx.shared import mnist_files  # pylint: disable=g-import-not-at-top
  print(f'vaetfx run: MNIST from {config.data_dir}, outputs under {config.output_dir}')
  start = time.perf_counter()
  try:
    summary = local_runner.run(config)
  except mnist_files.MnistFormatError as e:
    print(f'vaetfx run: error: ExampleGen rejected the input: {e}', file=sys.stderr)
    return flags.EXIT_BAD_INPUT
  except serving_folder.IncomparableServedModel as e:
    return _refuse_baseline(e)
  except local_runner.Interrupted as e:
    print(f'\nvaetfx run: interrupted {e.during} ({len(e.finished)} components finished); '
          f'a re-run resumes from the cache.', file=sys.stderr)
    return flags.EXIT_INTERRUPTED
  print(f'\nDone in {time.perf_counter() - start:.1f} s.')
  print(run_summary.format_summary(summary))
  print(f'Artifacts: {config.pipeline_root}\nML Metadata: {config.metadata_path}\n'
        f'TensorBoard: tensorboard --logdir {os.path.join(config.pipeline_root, "Trainer")}')
  code, line = _outcome(summary)
  print(line)
  return code


def build_parser() -> argparse.ArgumentParser:
  parser = flags.Parser(
      prog='vaetfx', description='A TFX pipeline that trains a convolutional VAE on MNIST.',
      epilog=flags.EXIT_CODES_HELP)
  subparsers = parser.add_subparsers(dest='command', required=True)
  _add_run_parser(subparsers)
  for commands in (kubeflow_commands, serving_commands, score_command, model_versions):
    commands.add_subcommands(subparsers)
  return parser


def _one_line(error: BaseException) -> str:
  text = ' '.join(str(error).split()) or type(error).__name__
  return text if len(text) <= 300 else text[:297] + '...'


def main(argv=None) -> int:
  """Parses, then runs the command; anything a command did not handle becomes one line.

  With --verbose (or VAETFX_VERBOSE=1) nothing is silenced and errors keep
  their tracebacks, for bug reports.
  """
  args = build_parser().parse_args(argv)
  verbose = getattr(args, 'verbose', False) or os.environ.get(VERBOSE_ENV, '') not in ('', '0')
  if not verbose:
    _silence_library_noise()
  command = f'vaetfx {args.command}'
  try:
    return args.handler(args)
  except flags.BadSetting as e:
    print(f'{command}: error: {e}', file=sys.stderr)
    return flags.EXIT_BAD_INPUT
  except KeyboardInterrupt:
    if verbose:
      raise
    print(f'\n{command}: interrupted.', file=sys.stderr)
    return flags.EXIT_INTERRUPTED
  except Exception as e:  # pylint: disable=broad-except
    if verbose:
      raise
    print(f'{command}: failed: {type(e).__name__}: {_one_line(e)} '
          f'(add --verbose for the traceback)', file=sys.stderr)
    return flags.EXIT_FAILED


def command_line(argv=None) -> int:
  """The `vaetfx` program: main(), then an exit without the garbage collector's last passes.

  Python's exit collects every object the process made, module by module; with
  TensorFlow, TFX, Beam and TFMA loaded that took 3.6 s after a `vaetfx run`
  had printed its result, 0.13 s frozen (load 5 to 7, docs/measurements.md).
  Every command has written its outputs when main() returns, so the collector
  is frozen instead (gc.freeze(): the objects left are released with the
  process). Exit handlers (atexit) still run. main() itself leaves the
  collector alone: tests call it in their own process.
  """
  code = main(argv)
  gc.freeze()
  return code


if __name__ == '__main__':
  sys.exit(command_line())
