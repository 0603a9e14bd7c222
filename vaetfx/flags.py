"""The pipeline's flags, defined once for every command that builds a PipelineConfig.

`vaetfx run` and `vaetfx compile-kubeflow` take the same settings (digits,
training hyperparameters, gate, push, Beam); only where data and outputs live
differs (local folders against URIs the pods reach). So the settings flags and
the config they build live here, and each command adds its own locations.
This module imports nothing heavy: parsing must stay instant.
"""
import argparse
import dataclasses
import math
import os
import re
import tempfile
from typing import Any, Callable, Optional, Tuple, Union

from vaetfx.models import kinds
from vaetfx.pipeline import configs
from vaetfx.shared import storage, validation

# Exit codes of every command, documented in README ("Exit codes") and `vaetfx --help`.
EXIT_OK = 0  # Done: a run pushed its model (or had nothing to do), a query was answered.
EXIT_FAILED = 1  # Something failed that the input did not cause: a component, the server.
EXIT_BAD_INPUT = 2  # A flag, path or input file is wrong; the message names it.
EXIT_NOT_PUSHED = 3  # The run finished, but its model was not blessed or not pushed (or,
# with --on-drift stop, the data drifted and nothing trained).
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report it (128 + SIGINT).
EXIT_CODES_HELP = (
    'Exit codes: 0 done (for run: the model was pushed, or nothing needed doing); '
    '1 failed (a component or the server; not the input); 2 bad flag, path or input file; '
    '3 the run finished but its model was not blessed or not pushed, or it stopped before '
    'training because the data drifted (--on-drift stop); 130 interrupted (Ctrl-C). '
    'Add --verbose (or set VAETFX_VERBOSE=1) for tracebacks and TensorFlow\'s own log lines.')
INT64_MAX = 2**63 - 1
# A URI TFX's fileio may serve: a scheme, '://', then at least a bucket or host.
URI = re.compile(r'[a-z][a-z0-9+.-]*://[^/].*')


class Parser(argparse.ArgumentParser):
  """An ArgumentParser whose errors are one line and exit with EXIT_BAD_INPUT.

  argparse prints the whole usage before its error, burying the one line that
  says what is wrong; `--help` still shows the usage. Sub-commands inherit the
  class, and each gets --verbose.
  """

  def __init__(self, *args, **kwargs):
    # `--epoch 3` must not quietly mean --epochs: a typo would run a whole pipeline.
    kwargs.setdefault('allow_abbrev', False)
    super().__init__(*args, **kwargs)
    if self.add_help:
      self.add_argument('--verbose', action='store_true', default=argparse.SUPPRESS,
                        help='Show tracebacks and TensorFlow\'s own warnings and log lines '
                             '(also VAETFX_VERBOSE=1).')

  def error(self, message):
    self.exit(EXIT_BAD_INPUT, f'{self.prog}: error: {message} (see {self.prog} --help)\n')


def _expected(text: str, what: str) -> argparse.ArgumentTypeError:
  return argparse.ArgumentTypeError(f'{text!r}: expected {what}')


def ranged(allowed: Union[validation.Range, validation.PowersOfTen]) -> Callable[[str], float]:
  """An argparse type for the values `allowed` holds (a config field's 'range' metadata),
  refused in its words: the dataclass's own check says the same."""
  what = allowed.describe()

  def parse(text: str):
    try:
      value = int(text) if allowed.whole else float(text)
    except ValueError:
      raise _expected(text, what) from None
    if not allowed.contains(value):
      raise _expected(text, what)
    return value
  parse.__name__ = 'integer' if allowed.whole else 'number'
  return parse


def integer(minimum: int, maximum: Optional[int] = None) -> Callable[[str], int]:
  """An argparse type: a whole number in [minimum, maximum]."""
  return ranged(validation.Range(minimum, math.inf if maximum is None else maximum, whole=True))


def number(minimum: float = -math.inf, *, above: bool = False) -> Callable[[str], float]:
  """An argparse type: a finite number >= minimum (> it when `above`); nan and inf are refused."""
  return ranged(validation.Range(minimum, above=above))


positive_int = integer(1)
non_negative_int = integer(0)
port = integer(0, 65535)
finite_float = number()
positive_float = number(0, above=True)
non_negative_float = number(0)


def non_empty(text: str) -> str:
  if not text.strip():
    raise _expected(text, 'a non-empty name')
  return text


def beam_arg(text: str) -> str:
  if not text.startswith('--'):
    raise _expected(text, 'a Beam pipeline argument such as --runner=FlinkRunner')
  return text


def _digits(text: str):
  try:
    digits = tuple(sorted({int(d) for d in text.split(',') if d.strip()}))
  except ValueError:
    digits = ()
  if not digits or any(d < 0 or d > 9 for d in digits):
    raise _expected(text, 'digits 0-9 separated by commas, e.g. 1,5,6')
  return digits


def model_name(text: str) -> str:
  """A TF Serving model name that is one folder under the serving directory (model_name.py)."""
  from vaetfx.shared.model_name import check_model_name  # pylint: disable=g-import-not-at-top
  try:
    return check_model_name(text)
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from e


def parsed_by(parse: Callable[[str], Any], what: str) -> Callable[[str], Any]:
  """An argparse type from a parser that raises ValueError naming what is wrong."""
  def parse_flag(text: str):
    try:
      return parse(text)
    except ValueError as e:
      raise argparse.ArgumentTypeError(str(e)) from None
  parse_flag.__name__ = what
  return parse_flag


def readable_file(text: str) -> str:
  """An argparse type: a local file that exists and can be read (a TLS key, a config file)."""
  path = os.path.expanduser(text)
  if not os.path.isfile(path):
    raise _expected(text, 'a file' + (', this is a folder' if os.path.isdir(path) else
                                      ', there is no such file'))
  if not os.access(path, os.R_OK):
    raise _expected(text, 'a file that can be read')
  return path


class BadPath(ValueError):
  """A folder given on the command line cannot be used; the message names the flag and folder."""


class BadSetting(ValueError):
  """Flags each valid alone that the config refuses together (say --beta with --model ae)."""


def _nearest_existing(path: str) -> str:
  while not os.path.lexists(path):
    path = os.path.dirname(path)
  return path


def writable_dir(path: str, flag: str) -> str:
  """`path` as an absolute path, if it is a folder that exists or can be made, and can be written.

  Checked before the pipeline starts, so that a wrong folder fails in a second
  instead of at the Pusher after training. Nothing is created: the probe file
  goes in the nearest existing folder and is removed. A URI (gs://bucket/dir)
  stays a URI: its filesystem (TFX's fileio) checks it when it is first written.
  """
  if storage.is_uri(path):
    if not URI.fullmatch(path):
      raise BadPath(f'{flag} {path}: expected a local folder or a URI such as gs://bucket/path')
    return path.rstrip('/')
  path = os.path.abspath(os.path.expanduser(path))
  existing = _nearest_existing(path)
  if existing == path and not os.path.isdir(path):
    raise BadPath(f'{flag} {path}: is a file, expected a folder')
  if not os.path.isdir(existing):
    raise BadPath(f'{flag} {path}: cannot be made: {existing} is a file')
  try:
    with tempfile.TemporaryFile(dir=existing):
      pass
  except OSError as e:
    raise BadPath(f'{flag} {path}: cannot write in {existing} ({e.strerror or e})') from e
  return path


def _add_dataclass_flags(parser, dataclass_type, title: str):
  """One flag per field, named after it, typed and bounded by its type and 'range' metadata,
  explained by its 'help'.

  A field whose default is None (its default depends on another field, as the
  training defaults on --model) is left out of the parsed flags unless given, so
  the dataclass decides, and --help shows the defaults its help text names.
  """
  group = parser.add_argument_group(title)
  for field in dataclasses.fields(dataclass_type):
    flag = '--' + field.name.replace('_', '-')
    help_text = field.metadata.get('help', '')
    choices = field.metadata.get('choices')
    if isinstance(field.default, bool):
      group.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction,
                         default=field.default, help=help_text)
    else:
      group.add_argument(flag, dest=field.name, choices=choices, help=help_text,
                         default=argparse.SUPPRESS if field.default is None else field.default,
                         type=(ranged(field.metadata['range']) if 'range' in field.metadata
                               else validation.value_type(field)))


def _from_flags(dataclass_type, args):
  return dataclass_type(**{f.name: getattr(args, f.name, None)
                           for f in dataclasses.fields(dataclass_type)})


def add_beam_flags(parser: argparse.ArgumentParser):
  """Where and how Beam runs: the DirectRunner's mode and workers, or any runner's arguments."""
  defaults = configs.BeamConfig()
  parser.add_argument('--beam-mode', default=defaults.direct_running_mode,
                      choices=['in_memory', 'multi_threading', 'multi_processing'],
                      help='DirectRunner running mode.')
  parser.add_argument('--beam-workers', type=non_negative_int,
                      default=defaults.direct_num_workers,
                      help='DirectRunner workers (0: one per core).')
  parser.add_argument('--beam-arg', type=beam_arg, action='append', default=[], metavar='ARG',
                      help='Extra Beam pipeline argument, repeatable, e.g. '
                           '--beam-arg=--runner=FlinkRunner.')


def beam_config(args) -> configs.BeamConfig:
  """The BeamConfig of `add_beam_flags`' flags."""
  return configs.BeamConfig(args.beam_mode, args.beam_workers, tuple(args.beam_arg))


def add_settings_flags(parser: argparse.ArgumentParser):
  """What a run computes, wherever it runs: data selection, Beam, training, the gate, the push.

  Locations (data, pipeline root, serving directory) are the command's own
  flags, since they are folders for `run` and URIs for `compile-kubeflow`.
  """
  parser.add_argument('--pipeline-name', type=non_empty, default=argparse.SUPPRESS,
                      help='Pipeline name in ML Metadata (runs of one name share a cache). '
                           'Default: ' + kinds.per_kind(lambda kind: kind.pipeline_name) + '.')
  parser.add_argument('--digits', type=_digits, default=(),
                      help='Keep only these digits in both splits, e.g. 1,5,6. Default: all.')
  parser.add_argument('--span', type=non_negative_int, default=0, metavar='N',
                      help='When the data folder holds span-1/, span-2/, ... (each a folder of '
                           'MNIST files), ingest span-N/; 0 ingests the newest span. A folder '
                           'without span folders is read whole (span 0).')
  parser.add_argument('--train-spans', type=positive_int, default=1, metavar='K',
                      help='Rolling window: train on the train splits of the newest K spans '
                           '(span N-K+1 to N, those that exist), each ingested and transformed '
                           'once, in the run that first reads it; the gate evaluates on span N\'s '
                           'eval split. 1 trains on span N alone.')
  add_beam_flags(parser)
  parser.add_argument('--no-cache', action='store_true', help='Re-run every component.')
  _add_dataclass_flags(parser, configs.TrainingHparams, 'training (the Trainer\'s custom_config)')
  gate = parser.add_argument_group(
      'evaluator gate (the held-out mean of the model\'s per-image score, nats per image: '
      'a VAE\'s ELBO, an autoencoder\'s reconstruction log-likelihood)')
  # --elbo-floor and --elbo-tolerance: their first names, kept as aliases.
  gate.add_argument('--score-floor', '--elbo-floor', type=finite_float,
                    default=configs.GateConfig.score_floor,
                    help='Bless only a model whose held-out mean score is at least this.')
  gate.add_argument('--score-tolerance', '--elbo-tolerance', type=non_negative_float,
                    default=configs.GateConfig.score_tolerance,
                    help='...and that is at most this many nats below the served model\'s.')
  gate.add_argument('--on-incomparable-baseline', choices=configs.ON_INCOMPARABLE_BASELINE,
                    default=configs.GateConfig.on_incomparable_baseline,
                    help='The gate\'s baseline is the version TF Serving serves from '
                         '<serving-dir>/<model-name>. When that model cannot be compared (a '
                         'symlink, a model vaetfx did not push, a model of another kind): stop '
                         'the run before training (exit 2), or gate on --score-floor alone '
                         '(floor) and push over it.')
  gate.add_argument('--digit-tolerance', type=non_negative_float, default=None,
                    help='Also refuse a model more than this many nats below the served '
                         'model on any one digit. Default: off (the floor and the tolerance '
                         'gate the mean over all digits; per-digit ELBOs are reported only).')
  _add_dataclass_flags(parser, configs.DriftConfig,
                       'drift check before training (the new data against the previous data '
                       'and the served model)')
  _add_dataclass_flags(parser, configs.ReportConfig,
                       'report: held-out log-likelihood (IWAE bound)')
  push = parser.add_argument_group('pusher')
  push.add_argument('--model-name', type=model_name, default=argparse.SUPPRESS,
                    help='TF Serving model name: one folder name of letters, digits, ., _, -. '
                         'Default: ' + kinds.per_kind(lambda kind: kind.serving_model_name) + '.')
  push.add_argument('--keep-versions', type=positive_int,
                    default=configs.PushConfig.keep_versions,
                    help='Versions kept in the serving directory, the new one included.')
  return push


def pipeline_config(args, *, data_dir: str, output_dir: str = '', serving_dir: str = '',
                    pipeline_root_uri: str = '',
                    data_pattern: str = configs.ALL_FILES_PATTERN, span: Optional[int] = None,
                    older_spans: Tuple[int, ...] = (),
                    span_at_run_time: bool = False) -> configs.PipelineConfig:
  """The PipelineConfig of `add_settings_flags`' flags, at the locations the command resolved.

  data_pattern: configs.SPAN_PATTERN when the command found span folders in data_dir.
  span, older_spans: the span to ingest (default --span) and the rolling window's older
  spans, as the command found them in data_dir (mnist_source.choose_spans).
  span_at_run_time: the span is a run-time parameter of the compiled pipeline.

  An autoencoder and a VAE get different pipeline and serving model names unless
  told otherwise: neither is gated against nor served in place of the other.
  """
  try:
    training = _from_flags(configs.TrainingHparams, args)
  except ValueError as e:
    raise BadSetting(str(e)) from e
  return configs.PipelineConfig(
      data_dir=data_dir,
      output_dir=output_dir,
      pipeline_name=getattr(args, 'pipeline_name', training.kind.pipeline_name),
      digits=args.digits,
      data_pattern=data_pattern,
      span=args.span if span is None else span,
      span_at_run_time=span_at_run_time,
      train_spans=args.train_spans,
      older_spans=older_spans,
      hparams=training,
      gate=configs.GateConfig(args.score_floor, args.score_tolerance,
                              args.on_incomparable_baseline, args.digit_tolerance),
      push=configs.PushConfig(serving_dir,
                              getattr(args, 'model_name', training.kind.serving_model_name),
                              args.keep_versions),
      beam=beam_config(args),
      report=_from_flags(configs.ReportConfig, args),
      drift=_from_flags(configs.DriftConfig, args),
      enable_cache=not args.no_cache,
      pipeline_root_uri=pipeline_root_uri,
  )
