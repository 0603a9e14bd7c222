"""What requests may cost the server, priced on what they carry and declare before any work.

A TensorProto may declare a shape far larger than its payload (one `int_val`
stands for every element, as in TensorFlow), so a 40-byte request can ask for
gigabytes and minutes of model time; and it may carry far more than its shape
(40 million `int_val` values for 784 pixels, which TensorFlow ignores but the
parsed message holds). So a request's Price counts both: what it sent, as
parsed, and what its inputs take decoded at their declared shapes, plus the
answer it asks for. These limits are checked after the request's shapes are
checked against the signature and before any tensor is decoded; each refusal
names its flag. Requests within them run through the model `slice_rows` rows
at a time, so memory stops growing with the row count.

Across requests, a Budget of bytes in flight (--max-inflight-mb) holds each
admitted request's price until its answer is sent; a request that does not fit
waits for room up to its deadline. What gRPC receives and parses before the
handler runs is outside it: at most --threads requests of --max-message-mb.
"""
import dataclasses
import threading
from typing import Callable, Mapping, Optional

import grpc

from vaetfx.serving import defaults, status

# The signature whose scalar input sets its output's size (models/export.py).
SAMPLE_SIGNATURE = 'sample'
SAMPLE_COUNT_INPUT = 'count'
# A response's bytes beyond its tensors' (aliases, shapes, model spec), generously.
ANSWER_OVERHEAD_BYTES = 4096
# An answer is in memory as the model's arrays, as the response message and as its serialized
# bytes, until gRPC has sent it.
ANSWER_COPIES = 3


@dataclasses.dataclass(frozen=True)
class Price:
  """What a request costs in bytes, known before any value is converted."""
  # The message's serialized size, plus what its input tensors' repeated values take parsed
  # beyond it (tensors.parsed_bytes): every value, surplus ones too.
  sent: int
  decoded: int  # The inputs decoded at their declared shapes (tensors.decoded_bytes).
  answer: int  # The outputs it asks for: rows x element size per output.

  @property
  def in_memory(self) -> int:
    """What it holds from admission until its answer is sent: the budget's unit."""
    return self.sent + self.decoded + ANSWER_COPIES * self.answer


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

  def check_rows(self, rows: Mapping[str, int]):
    """`rows`: the declared dimension 0 of each batched input."""
    for alias, count in sorted(rows.items()):
      if count > self.max_batch_rows:
        raise _exhausted(f'input {alias} declares {count} rows; this server takes at most '
                         f'{self.max_batch_rows} per request (--max-batch-rows): send them in '
                         f'smaller requests')

  def check_inputs(self, price: Price):
    """The inputs as sent and once decoded, together: both are in memory while the model runs."""
    inputs = price.sent + price.decoded
    if inputs > self.max_decoded_bytes:
      raise _exhausted(f'the inputs take {inputs} bytes ({price.sent} as sent, {price.decoded} '
                       f'once decoded); this server takes at most {self.max_decoded_bytes} '
                       f'({_mib(self.max_decoded_bytes)}) per request (--max-decoded-mb)')

  def check_sample_count(self, count: int):
    """`sample` makes `count` images in one model call: its count is its size."""
    if count < 1:
      raise status.invalid_argument(f'sample count must be at least 1, got {count}')
    if count > self.max_sample_count:
      raise _exhausted(f'sample count {count} is over this server\'s limit of '
                       f'{self.max_sample_count} (--max-sample-count): ask for fewer per '
                       f'request')


def check_answer(price: Price, max_message_bytes: int):
  """Refuses, before the model runs, an answer gRPC would refuse to send once computed."""
  answer = price.answer + ANSWER_OVERHEAD_BYTES
  if answer > max_message_bytes:
    raise _exhausted(f'the answer would take {answer} bytes; this server sends at most '
                     f'{max_message_bytes} ({_mib(max_message_bytes)}) per message '
                     f'(--max-message-mb): ask for fewer rows or filter the outputs')


class Budget:
  """Bytes in flight across requests (--max-inflight-mb): each admitted request holds its
  price until released; one that does not fit waits for room. There is no queue: a small
  request may pass a big one that waits, which keeps small requests fast under big ones."""

  def __init__(self, capacity: int = defaults.MAX_INFLIGHT_BYTES):
    if capacity < 1:
      raise ValueError(f'the in-flight budget must be at least 1 byte, got {capacity}')
    self.capacity = capacity
    self._held = 0
    self._room = threading.Condition()

  @property
  def held(self) -> int:
    with self._room:
      return self._held

  def hold(self, cost: int, timeout: Optional[float]) -> Callable[[], None]:
    """Waits up to `timeout` seconds (None: as long as it takes) for `cost` bytes of room, takes
    them and returns the function that gives them back (once, however often it is called)."""
    if cost > self.capacity:
      raise _exhausted(f'the request needs {cost} bytes in memory; this server holds at most '
                       f'{self.capacity} ({_mib(self.capacity)}) for all requests in flight '
                       f'(--max-inflight-mb)')
    with self._room:
      if not self._room.wait_for(lambda: self._held + cost <= self.capacity, timeout):
        raise _exhausted(f'the request needs {cost} bytes in memory and waited {timeout:.2g} s '
                         f'(until just before its deadline) while others held {self._held} of '
                         f'this server\'s {self.capacity} ({_mib(self.capacity)}) for requests '
                         f'in flight (--max-inflight-mb): retry later or with a longer deadline')
      self._held += cost
    released = threading.Event()

    def release():
      with self._room:
        if not released.is_set():
          released.set()
          self._held -= cost
          self._room.notify_all()
    return release


def _exhausted(message: str) -> status.ServingError:
  return status.ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def _mib(size: int) -> str:
  return f'{size / (1 << 20):g} MiB'
