"""Spans: numbered batches of new data (span-1/, span-2/, ... under the data folder)."""
from typing import List


def window(newest_span: int, num_spans: int) -> List[int]:
  """The span numbers of a rolling window of `num_spans` ending at `newest_span`, oldest first
  (never below 0). Spans are numbered consecutively: a missing number is a span not there."""
  return list(range(max(0, newest_span - num_spans + 1), newest_span + 1))
