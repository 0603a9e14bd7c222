"""What one request may cost the server, priced on the sizes it declares before any work.

A TensorProto may declare a shape far larger than its payload (one `int_val`
stands for every element, as in TensorFlow), so a 40-byte request can ask for
gigabytes and minutes of model time. These limits are checked after the
request's shapes are checked against the signature and before any tensor is
decoded; each refusal names its flag. Requests within them run through the
model `slice_rows` rows at a time, so memory stops growing with the row count.
"""
import dataclasses
from typing import Mapping

import grpc
import numpy as np

from vaetfx.serving import defaults, status

# The signature whose scalar input sets its output's size (models/export.py).
SAMPLE_SIGNATURE = 'sample'
SAMPLE_COUNT_INPUT = 'count'


@dataclasses.dataclass(frozen=True)
class Limits:
  """`vaetfx serve`'s --max-batch-rows, --max-decoded-mb, --max-sample-count and --slice-rows."""
  max_batch_rows: int = defaults.MAX_BATCH_ROWS
  max_decoded_bytes: int = defaults.MAX_DECODED_BYTES
  max_sample_count: int = defaults.MAX_SAMPLE_COUNT
  slice_rows: int = defaults.SLICE_ROWS

  def __post_init__(self):
    for field in dataclasses.fields(self):
      if getattr(self, field.name) < 1:
        raise ValueError(f'{field.name} must be at least 1, got {getattr(self, field.name)}')

  def check_sizes(self, rows: Mapping[str, int], decoded_bytes: int):
    """`rows`: the declared dimension 0 of each batched input; `decoded_bytes`: of all inputs."""
    for alias, count in sorted(rows.items()):
      if count > self.max_batch_rows:
        raise _exhausted(f'input {alias} declares {count} rows; this server takes at most '
                         f'{self.max_batch_rows} per request (--max-batch-rows): send them in '
                         f'smaller requests')
    if decoded_bytes > self.max_decoded_bytes:
      raise _exhausted(f'the inputs declare {decoded_bytes} bytes once decoded; this server '
                       f'takes at most {self.max_decoded_bytes} ({_mib(self.max_decoded_bytes)}) '
                       f'per request (--max-decoded-mb)')

  def check_sample_count(self, signature_name: str, arrays: Mapping[str, np.ndarray]):
    """`sample` makes `count` images in one model call: its count is its size."""
    if signature_name != SAMPLE_SIGNATURE or SAMPLE_COUNT_INPUT not in arrays:
      return
    count = int(arrays[SAMPLE_COUNT_INPUT])
    if count < 1:
      raise status.invalid_argument(f'sample count must be at least 1, got {count}')
    if count > self.max_sample_count:
      raise _exhausted(f'sample count {count} is over this server\'s limit of '
                       f'{self.max_sample_count} (--max-sample-count): ask for fewer per '
                       f'request')


def _exhausted(message: str) -> status.ServingError:
  return status.ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def _mib(size: int) -> str:
  return f'{size / (1 << 20):g} MiB'
