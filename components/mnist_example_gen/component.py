"""MnistExampleGen: a FileBasedExampleGen whose executor reads MNIST's IDX or npz files.

Being a FileBasedExampleGen keeps TFX's file driver: spans are resolved from
`{SPAN}` in the split pattern and the input files are fingerprinted, so a
re-run over unchanged files is served from the cache and a changed file or a
new span triggers a new execution. The local driver fingerprints the files'
content (driver.py); Kubeflow V2 runs TFX's own driver, by sizes and mtimes.
"""
import json
from typing import Optional, Sequence, Union

from google.protobuf import any_pb2, json_format, struct_pb2
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.orchestration import data_types
from tfx.proto import example_gen_pb2, range_config_pb2

from vaetfx.components.mnist_example_gen import driver, executor
from vaetfx.shared import features


def _digits_config(digits: Sequence[int], code_fingerprint: str) -> example_gen_pb2.CustomConfig:
  config = struct_pb2.Struct()
  config['digits'] = [int(d) for d in digits]
  if code_fingerprint:
    # Not read by the executor: it is in TFX's cache key, so editing this package re-runs it.
    config['code_fingerprint'] = code_fingerprint
  packed = any_pb2.Any()
  packed.Pack(config)
  return example_gen_pb2.CustomConfig(custom_config=packed)


def span_range(span: int) -> Optional[range_config_pb2.RangeConfig]:
  """Exactly span `span`; None (0) lets TFX's driver take the newest span the pattern matches."""
  if not span:
    return None
  return range_config_pb2.RangeConfig(static_range=range_config_pb2.StaticRange(
      start_span_number=span, end_span_number=span))


def span_range_json(span: int) -> str:
  """span_range(span) as the JSON TFX's drivers read a range_config from; '' for the newest."""
  config = span_range(span)
  if config is None:
    return ''
  return json.dumps(json_format.MessageToDict(config, preserving_proto_field_name=True),
                    sort_keys=True)


def span_parameter(name: str, span: int = 0) -> data_types.RuntimeParameter:
  """A run-time parameter that picks the span when a compiled pipeline runs: a RangeConfig as
  JSON (span_range_json), '' (the default when `span` is 0) for the newest span. TFX's
  ExampleGen takes a run-time parameter for its whole range_config only."""
  return data_types.RuntimeParameter(name=name, ptype=str, default=span_range_json(span))


class MnistExampleGen(FileBasedExampleGen):
  """Emits `train` (MNIST's train files) and `eval` (its t10k files) splits of tf.Examples."""

  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)  # see executor.py: runs no Beam
  DRIVER_CLASS = driver.ContentFingerprintDriver

  def __init__(self, input_base: str, digits: Sequence[int] = (), code_fingerprint: str = '',
               pattern: str = '*', span: Union[int, data_types.RuntimeParameter] = 0):
    """input_base: a folder with the four IDX files (gzip or not) or mnist.npz.

    pattern: the files of both splits under input_base: '*', or e.g. 'span-{SPAN}/*'
    for one such folder per span (a span's pattern names a folder, then '*').

    span: with `{SPAN}` in the pattern, read this span; 0 reads the newest; a
    span_parameter() leaves the choice to the run.

    digits: keep only these digits in both splits (seed 003 shows 1, 5, 6); empty keeps all.

    code_fingerprint: pipeline/code_fingerprint.py's hash of this component's code.
    """
    # Both splits fingerprint the whole folder: which file feeds which split is
    # decided by the executor from MNIST's own file names.
    input_config = example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name=features.TRAIN_SPLIT, pattern=pattern),
        example_gen_pb2.Input.Split(name=features.EVAL_SPLIT, pattern=pattern),
    ])
    super().__init__(input_base=input_base, input_config=input_config,
                     output_config=example_gen_pb2.Output(),
                     custom_config=_digits_config(digits, code_fingerprint),
                     range_config=(span if isinstance(span, data_types.RuntimeParameter)
                                   else span_range(span)))
