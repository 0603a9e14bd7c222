"""The pipeline's flags, defined once for every command that builds a PipelineConfig.

`vaetfx run` and `vaetfx compile-kubeflow` take the same settings (digits,
training hyperparameters, gate, push, Beam); only where data and outputs live
differs (local folders against URIs the pods reach). So the settings flags and
the config they build live here, and each command adds its own locations.
This module imports nothing heavy: parsing must stay instant.
"""
import argparse
import dataclasses

from vaetfx.pipeline import configs


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


def add_settings_flags(parser: argparse.ArgumentParser):
  """What a run computes, wherever it runs: data selection, Beam, training, the gate, the push.

  Locations (data, pipeline root, serving directory) are the command's own
  flags, since they are folders for `run` and URIs for `compile-kubeflow`.
  """
  defaults = configs.BeamConfig()
  parser.add_argument('--pipeline-name', default=configs.PIPELINE_NAME,
                      help='Pipeline name in ML Metadata (runs of one name share a cache).')
  parser.add_argument('--digits', type=_digits, default=(),
                      help='Keep only these digits in both splits, e.g. 1,5,6. Default: all.')
  parser.add_argument('--beam-mode', default=defaults.direct_running_mode,
                      choices=['in_memory', 'multi_threading', 'multi_processing'],
                      help='DirectRunner running mode.')
  parser.add_argument('--beam-workers', type=int, default=defaults.direct_num_workers,
                      help='DirectRunner workers (0: one per core).')
  parser.add_argument('--beam-arg', action='append', default=[], metavar='ARG',
                      help='Extra Beam pipeline argument, repeatable, e.g. '
                           '--beam-arg=--runner=FlinkRunner.')
  parser.add_argument('--no-cache', action='store_true', help='Re-run every component.')
  _add_dataclass_flags(parser, configs.TrainingHparams, 'training (the Trainer\'s custom_config)')
  gate = parser.add_argument_group('evaluator gate (held-out mean ELBO, nats per image)')
  gate.add_argument('--elbo-floor', type=float, default=configs.GateConfig.elbo_floor,
                    help='Bless only a model whose held-out mean ELBO is at least this.')
  gate.add_argument('--elbo-tolerance', type=float, default=configs.GateConfig.elbo_tolerance,
                    help='...and that is at most this many nats below the last blessed model.')
  push = parser.add_argument_group('pusher')
  push.add_argument('--model-name', default=configs.MODEL_NAME, help='TF Serving model name.')
  push.add_argument('--keep-versions', type=int, default=configs.PushConfig.keep_versions,
                    help='Versions kept in the serving directory, the new one included.')
  return push


def pipeline_config(args, *, data_dir: str, output_dir: str = '', serving_dir: str = '',
                    pipeline_root_uri: str = '',
                    compare_with_baseline: bool = True) -> configs.PipelineConfig:
  """The PipelineConfig of `add_settings_flags`' flags, at the locations the command resolved."""
  return configs.PipelineConfig(
      data_dir=data_dir,
      output_dir=output_dir,
      pipeline_name=args.pipeline_name,
      digits=args.digits,
      hparams=_from_flags(configs.TrainingHparams, args),
      gate=configs.GateConfig(args.elbo_floor, args.elbo_tolerance, compare_with_baseline),
      push=configs.PushConfig(serving_dir, args.model_name, args.keep_versions),
      beam=configs.BeamConfig(args.beam_mode, args.beam_workers, tuple(args.beam_arg)),
      enable_cache=not args.no_cache,
      pipeline_root_uri=pipeline_root_uri,
  )
