"""Scores of serialized tf.Examples under an exported model, on Beam: the one code path of
`vaetfx score` (pipeline/batch_scoring.py) and of the pipeline's scorer (executor.py).

A Beam element here is a batch of serialized examples with a key, not an example:
the model is loaded once per worker process (Beam's Shared), its
`from_examples` signature is called on BATCH_SIZE examples at a time, and only the
score output comes back, as one float32 array per element. tfx-bsl's RunInference,
which TFX's BulkInferrer and `vaetfx score` used before, made a PredictionLog per
example holding the example and every output of the signature (the 784-pixel
reconstruction too) as TensorProtos, then each reader took one float back out:
that per-example Python work, not the model, was most of its time (profiled in
docs/measurements.md, "Batch scoring").
"""
from typing import Any, Iterator, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.utils import shared

from vaetfx.models import export

# Examples per call of the signature: the batch the floor in docs/measurements.md uses.
BATCH_SIZE = 256


def score_examples(model: export.ExportedModel, serialized: Sequence[bytes],
                   score: str) -> np.ndarray:
  """float32 [N]: the `score` output of from_examples for each example, BATCH_SIZE at a time."""
  batches = [model.from_examples(serialized[start:start + BATCH_SIZE])[score].reshape(-1)
             for start in range(0, len(serialized), BATCH_SIZE)]
  return np.concatenate(batches) if batches else np.zeros(0, np.float32)


class ScoreBatches(beam.DoFn):
  """(key, serialized examples) -> (key, the examples, their scores, float32 [N])."""

  def __init__(self, model_path: str, score: str):
    super().__init__()
    self._model_path = model_path
    self._score = score
    self._shared_model = shared.Shared()
    self._model = None

  def setup(self):
    self._model = self._shared_model.acquire(
        lambda: export.load_exported_model(self._model_path))

  def process(self, element: Tuple[Any, Sequence[bytes]]
              ) -> Iterator[Tuple[Any, Sequence[bytes], np.ndarray]]:
    key, serialized = element
    yield key, serialized, score_examples(self._model, serialized, self._score)
