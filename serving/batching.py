"""Server-side batching of concurrent Predict calls, after TF Serving's BatchingSession.

Requests for the same model version, signature and outputs wait in one queue.
A batch closes when it holds `max_batch_size` rows or when its first request
has waited `batch_timeout_micros`; `num_batch_threads` threads run closed
batches: inputs concatenated along dimension 0, padded up to the next
`allowed_batch_sizes` entry with copies of the first row, outputs split back
per request. Requests join a batch checked, priced and decoded (the server
does all three first); a batch that fails runs again one request at a time, so
a request the model refuses fails alone. A request larger than
`max_batch_size` is INVALID_ARGUMENT and a queue already holding
`max_enqueued_batches` batches answers UNAVAILABLE, with TF Serving's
messages. The knobs and their defaults are TF Serving's BatchingParameters,
read from the same batching_parameters.txt.
"""
import collections
import dataclasses
import os
import re
import threading
import time
from typing import Callable, Deque, Dict, Hashable, List, Optional, Tuple

import grpc
import numpy as np

from vaetfx.serving import status

Arrays = Dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
  """The BatchingParameters fields this server honours, with SharedBatchScheduler's defaults."""
  max_batch_size: int = 1000
  batch_timeout_micros: int = 0
  max_enqueued_batches: int = 10
  num_batch_threads: int = os.cpu_count() or 1
  allowed_batch_sizes: Tuple[int, ...] = ()

  def __post_init__(self):
    if min(self.max_batch_size, self.max_enqueued_batches, self.num_batch_threads) < 1:
      raise ValueError(f'{self}: sizes, queue length and threads must be at least 1')
    if self.batch_timeout_micros < 0:
      raise ValueError(f'{self}: batch_timeout_micros must not be negative')
    sizes = self.allowed_batch_sizes
    if sizes and (list(sizes) != sorted(set(sizes)) or sizes[-1] != self.max_batch_size):
      raise ValueError(f'allowed_batch_sizes {list(sizes)} must increase and end with '
                       f'max_batch_size {self.max_batch_size}')

  @classmethod
  def from_text(cls, text: str) -> 'BatchingParameters':
    """Parses TF Serving's text format: `max_batch_size { value: 64 }`, `allowed_batch_sizes: 8`.

    Fields this server has no use for (thread_pool_name, pad_variable_length_inputs,
    large batch splitting) are accepted and ignored so the same file serves both.
    """
    text = re.sub(r'#[^\n]*', '', text)
    scalars = dict(re.findall(r'(\w+)\s*\{\s*value\s*:\s*([^\s}]+)\s*\}', text))
    sizes = tuple(int(v) for v in re.findall(r'allowed_batch_sizes\s*:\s*(\d+)', text))
    known = {field.name for field in dataclasses.fields(cls)}
    values = {name: int(value) for name, value in scalars.items() if name in known}
    return cls(**values, **({'allowed_batch_sizes': sizes} if sizes else {}))

  def padded_size(self, size: int) -> int:
    return next((allowed for allowed in self.allowed_batch_sizes if allowed >= size), size)


class _Task:
  """One request waiting for its rows of a batch's outputs."""

  def __init__(self, inputs: Arrays):
    self.inputs = inputs
    self.size = len(next(iter(inputs.values())))
    self.done = threading.Event()
    self.outputs: Optional[Arrays] = None
    self.error: Optional[Exception] = None


class _Batch:

  def __init__(self, run: Callable[[Arrays], Arrays], deadline: float):
    self.run = run
    self.deadline = deadline
    self.tasks: List[_Task] = []
    self.size = 0


class BatchScheduler:
  """Queues per key, shared batch threads; `run()` blocks its caller until its rows are back."""

  def __init__(self, parameters: BatchingParameters):
    self.parameters = parameters
    self._queues: Dict[Hashable, Deque[_Batch]] = {}
    self._ready = threading.Condition()
    self._stopping = False
    self._threads = [threading.Thread(target=self._work, name=f'batch-{i}', daemon=True)
                     for i in range(parameters.num_batch_threads)]
    for thread in self._threads:
      thread.start()

  def run(self, key: Hashable, run: Callable[[Arrays], Arrays], inputs: Arrays) -> Arrays:
    """Runs `run` on a batch holding `inputs`, tensors of one dimension-0 size as in TF Serving."""
    sizes = {len(array) if array.ndim else None for array in inputs.values()}
    if None in sizes:
      raise status.invalid_argument('Batching Run() input tensors must have at least one dimension')
    if len(sizes) != 1:
      raise status.invalid_argument(
          'Batching Run() input tensors must have equal 0th-dimension size')
    task = _Task(inputs)
    self._enqueue(key, run, task)
    task.done.wait()
    if task.error:
      raise task.error
    return task.outputs

  def _enqueue(self, key: Hashable, run: Callable[[Arrays], Arrays], task: _Task):
    limit = self.parameters.max_batch_size
    if task.size > limit:
      raise status.invalid_argument(
          f'Task size {task.size} is larger than maximum input batch size {limit}')
    with self._ready:
      if self._stopping:
        raise _shutting_down()
      queue = self._queues.setdefault(key, collections.deque())
      if not queue or queue[-1].size + task.size > limit:
        if len(queue) >= self.parameters.max_enqueued_batches:
          raise status.ServingError(
              grpc.StatusCode.UNAVAILABLE,
              'The batch scheduling queue to which this task was submitted is full')
        timeout = self.parameters.batch_timeout_micros / 1e6
        queue.append(_Batch(run, time.monotonic() + timeout))
      queue[-1].tasks.append(task)
      queue[-1].size += task.size
      self._ready.notify()

  def _next_batch(self) -> Optional[_Batch]:
    """Waits for a full or timed-out batch, oldest deadline first; None once stopping."""
    with self._ready:
      while not self._stopping:
        now = time.monotonic()
        ready = [(queue[0].deadline, key) for key, queue in self._queues.items()
                 if queue[0].size >= self.parameters.max_batch_size or len(queue) > 1
                 or queue[0].deadline <= now]
        if ready:
          key = min(ready)[1]
          batch = self._queues[key].popleft()
          if not self._queues[key]:
            del self._queues[key]
          return batch
        deadlines = [queue[0].deadline for queue in self._queues.values()]
        self._ready.wait(min(deadlines) - now if deadlines else None)
    return None

  def _work(self):
    while (batch := self._next_batch()) is not None:
      self._process(batch)

  def _process(self, batch: _Batch):
    self._answer(batch.run, batch.tasks)
    for task in batch.tasks:
      task.done.set()

  def _answer(self, run: Callable[[Arrays], Arrays], tasks: List[_Task]):
    """Runs `tasks` as one batch. If it fails, each task of a shared batch runs again alone, so
    one bad request (a string the model cannot parse, say) fails only itself and its
    neighbours get their answers."""
    try:
      self._split(tasks, run(self._merge(tasks)))
    except Exception as e:  # pylint: disable=broad-except
      if len(tasks) == 1:
        tasks[0].error = e
        return
      for task in tasks:
        self._answer(run, [task])

  def _merge(self, tasks: List[_Task]) -> Arrays:
    """The tasks' rows in order, padded with copies of the batch's first row (zeros when no
    task has a row) up to the allowed size."""
    size = sum(task.size for task in tasks)
    padding = self.parameters.padded_size(size) - size
    merged = {}
    for name in tasks[0].inputs:
      parts = [task.inputs[name] for task in tasks]
      rows = np.concatenate(parts) if len(parts) > 1 else parts[0]
      if padding:
        filler = rows[:1] if len(rows) else np.zeros((1, *rows.shape[1:]), rows.dtype)
        rows = np.concatenate([rows, np.repeat(filler, padding, axis=0)])
      merged[name] = rows
    return merged

  def _split(self, tasks: List[_Task], outputs: Arrays):
    rows = self.parameters.padded_size(sum(task.size for task in tasks))
    for name, array in outputs.items():
      if not array.ndim or len(array) != rows:
        raise status.ServingError(
            grpc.StatusCode.INTERNAL,
            f'Batched output tensor {name} has shape {list(array.shape)}: its 0th dimension '
            f'does not equal the {rows} rows of the batched inputs')
    offset = 0
    for task in tasks:
      task.outputs = {name: array[offset:offset + task.size] for name, array in outputs.items()}
      offset += task.size

  @property
  def queued_batches(self) -> int:
    """Batches waiting for a thread, over all queues."""
    with self._ready:
      return sum(len(queue) for queue in self._queues.values())

  def stop(self):
    """Ends the threads once their batches are done; requests still queued, and any arriving
    from now on, get UNAVAILABLE.

    The server stops taking requests and drains them first, so normally none are left.
    """
    with self._ready:
      self._stopping = True
      self._ready.notify_all()
    for thread in self._threads:
      thread.join()
    with self._ready:
      left = [task for queue in self._queues.values() for batch in queue for task in batch.tasks]
      self._queues.clear()
    for task in left:
      task.error = _shutting_down()
      task.done.set()


def _shutting_down() -> status.ServingError:
  return status.ServingError(grpc.StatusCode.UNAVAILABLE, 'The server is shutting down')
