"""`vaetfx score`: every image of an MNIST-format data set scored by an exported model, on Beam.

A VAE's ELBO of an image is an anomaly score: low means unlike the data it was
trained on. This scores whole data sets offline, as the pipeline's scorer scores
the held-out split and through the same code (components/anomaly_scorer/
scoring.py): the images become the tf.Examples ExampleGen writes and go through
the model's `from_examples` signature in batches, so the scores are those the
Evaluator gated on. The result is a CSV of one row per image, worst first. A
plain autoencoder (--model ae) is scored the same way by its reconstruction
log-likelihood, the column's name then.

Beam workers read the data folder themselves (a chunk of images each), so any
runner works (`--beam-arg=--runner=...`) when the folder, the model and the
output are where its workers can reach them (gs://...).

Beam and TensorFlow are imported inside the functions that use them,
so that `vaetfx --help` and the checks of bad flags do not pay for them.
"""
import csv
import dataclasses
import functools
import importlib
import io
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

from vaetfx.shared import examples, features, mnist_files, storage

SIGNATURE = 'from_examples'
SCORE_OUTPUT = features.ELBO_KEY  # A VAE's; an autoencoder's is the other of features.SCORE_NAMES.
SAVED_MODEL_FILE = 'saved_model.pb'
SPLITS = {'eval': (features.EVAL_SPLIT,), 'train': (features.TRAIN_SPLIT,),
          'both': (features.TRAIN_SPLIT, features.EVAL_SPLIT)}
CSV_COLUMNS = ('rank', 'split', 'index', 'label')  # Then the score, named by its output.
CHUNK_SIZE = 2000
WORST_SHOWN = 5

# (split, index in the split, label): which image a score belongs to.
ImageKey = Tuple[str, int, int]


class BadInput(ValueError):
  """A folder, file or model given on the command line cannot be used; the message names it."""


def resolve_model_dir(model_dir: str) -> str:
  """The SavedModel to score with: `model_dir` itself when it holds saved_model.pb, else its
  newest integer-named version (TF Serving's layout, what the Pusher writes)."""
  if not storage.isdir(model_dir):
    problem = 'is a file, expected a folder' if storage.exists(model_dir) else 'no such folder'
    raise BadInput(f'--model-dir {model_dir}: {problem}')
  if storage.exists(os.path.join(model_dir, SAVED_MODEL_FILE)):
    return model_dir
  versions = [path for _, path in sorted(storage.version_dirs(model_dir).items())
              if storage.exists(os.path.join(path, SAVED_MODEL_FILE))]
  if not versions:
    raise BadInput(f'--model-dir {model_dir}: holds neither {SAVED_MODEL_FILE} nor a version '
                   'folder (an integer name) with one')
  return versions[-1]


def check_signature(model_path: str) -> str:
  """The name of the score the model's from_examples signature outputs (one of
  features.SCORE_NAMES); every exported VAE and autoencoder has one (models/export.py)."""
  from google.protobuf import message  # pylint: disable=g-import-not-at-top
  from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top
  saved_model = saved_model_pb2.SavedModel()
  path = os.path.join(model_path, SAVED_MODEL_FILE)
  with storage.open_file(path, 'rb') as f:
    try:
      saved_model.ParseFromString(f.read())
    except message.DecodeError as e:
      raise BadInput(f'--model-dir {model_path}: {SAVED_MODEL_FILE} is not a SavedModel '
                     f'(corrupt or truncated: {e})') from e
  signature_defs = {name: signature for graph in saved_model.meta_graphs
                    for name, signature in graph.signature_def.items()
                    if not name.startswith('__')}  # TensorFlow's own, e.g. __saved_model_init_op
  if SIGNATURE not in signature_defs:
    raise BadInput(f'--model-dir {model_path}: the model has no {SIGNATURE!r} signature '
                   f'(it has {sorted(signature_defs)}); export it with vaetfx\'s Trainer')
  outputs = signature_defs[SIGNATURE].outputs
  score = features.score_key(outputs)
  if score is None:
    raise BadInput(f'--model-dir {model_path}: its {SIGNATURE!r} signature outputs none of '
                   f'{sorted(features.SCORE_NAMES)} (it has {sorted(outputs)}); export it with '
                   'vaetfx\'s Trainer')
  return score


@functools.lru_cache(maxsize=2)
def _cached_split(data_dir: str, split: str) -> Tuple[np.ndarray, np.ndarray]:
  """Each Beam worker reads a split's files once, however many chunks it converts."""
  return mnist_files.load_split(data_dir, split)


def chunk_examples(bounds: Tuple[str, int, int], data_dir: str
                   ) -> Tuple[Tuple[str, int, np.ndarray], List[bytes]]:
  """The images [start, end) of a split: ((split, start, their labels), serialized tf.Examples),
  serialized in bulk as ExampleGen writes them."""
  split, start, end = bounds
  images, labels = _cached_split(data_dir, split)
  return ((split, start, labels[start:end]),
          examples.serialize_examples(images[start:end], labels[start:end]))


def _keyed_scores(chunks: Sequence[Tuple[Tuple[str, int, np.ndarray], np.ndarray]]
                  ) -> List[Tuple[ImageKey, float]]:
  """Each chunk's scores as (image key, score) pairs."""
  return [((split, start + offset, int(label)), float(score))
          for (split, start, labels), scores in chunks
          for offset, (label, score) in enumerate(zip(labels, scores))]


def format_csv(scores: Sequence[Tuple[ImageKey, float]], score: str = SCORE_OUTPUT) -> str:
  """One row per image, lowest ELBO (or `score`) first (rank 1); ties keep split and index
  order."""
  ordered = sorted(scores, key=lambda item: (item[1], item[0]))
  text = io.StringIO()
  writer = csv.writer(text, lineterminator='\n')
  writer.writerow([*CSV_COLUMNS, score])
  for rank, ((split, index, label), elbo) in enumerate(ordered, start=1):
    writer.writerow([rank, split, index, label, f'{elbo:.4f}'])
  return text.getvalue()


def write_atomically(path: str, text: str):
  """Writes beside `path`, then renames: the file is whole or absent (local and gs:// alike)."""
  gfile = storage.gfile()
  gfile.makedirs(os.path.dirname(path))
  partial = f'{path}.partial-{os.getpid()}'
  with gfile.GFile(partial, 'w') as f:
    f.write(text)
  gfile.rename(partial, path, overwrite=True)


def _chunks(counts: Dict[str, int]) -> List[Tuple[str, int, int]]:
  return [(split, start, min(start + CHUNK_SIZE, count))
          for split, count in counts.items() for start in range(0, count, CHUNK_SIZE)]


def import_beam():
  """Imports Beam and the scorer's code (TensorFlow is in once check_signature ran).

  `vaetfx score` calls it before it starts the clock, so the time and rate it
  prints are the scoring's (the model's load included), not Python's imports:
  the figure docs/measurements.md compares with the model called in-process.
  """
  for module in ('apache_beam', 'vaetfx.components.anomaly_scorer.scoring'):
    importlib.import_module(module)


def run_scoring(data_dir: str, counts: Dict[str, int], model_path: str, output: str,
                beam_args: Sequence[str], score: str = SCORE_OUTPUT):
  """The Beam pipeline: chunks of images -> tf.Examples -> their scores (the pipeline's scorer's
  code) -> one sorted CSV. An element is a chunk, never an image."""
  import apache_beam as beam  # pylint: disable=g-import-not-at-top
  from vaetfx.components.anomaly_scorer import scoring  # pylint: disable=g-import-not-at-top
  with beam.Pipeline(argv=list(beam_args)) as pipeline:
    _ = (pipeline
         | 'Chunks' >> beam.Create(_chunks(counts))
         | 'ToExamples' >> beam.Map(chunk_examples, data_dir)
         | 'Score' >> beam.ParDo(scoring.ScoreBatches(model_path, score))
         | 'DropExamples' >> beam.MapTuple(lambda key, _, scores: (key, scores))
         | 'All' >> beam.combiners.ToList()
         | 'WriteSortedCsv' >> beam.Map(lambda chunks: write_atomically(
             output, format_csv(_keyed_scores(chunks), score))))


@dataclasses.dataclass(frozen=True)
class ScoreSummary:
  count: int
  rows: List[Dict[str, str]]  # the CSV's rows, worst first
  score: str = SCORE_OUTPUT  # the CSV's score column

  def lines(self) -> List[str]:
    """The summary in words: the spread, the worst images and the median per digit."""
    elbo = np.array([float(row[self.score]) for row in self.rows])
    labels = np.array([int(row['label']) for row in self.rows])
    return [f'{features.SCORE_NAMES[self.score]} (nats per image, low = unusual): median '
            f'{np.median(elbo):.2f}, 1st percentile {np.percentile(elbo, 1):.2f}, lowest '
            f'{elbo[0]:.2f}, highest {elbo[-1]:.2f}.',
             f'Lowest {min(WORST_SHOWN, self.count)}: ' + ', '.join(
                 f'{row["split"]} #{row["index"]} (label {row["label"]}) '
                 f'{float(row[self.score]):.1f}' for row in self.rows[:WORST_SHOWN]) + '.',
             'Median per digit: ' + ', '.join(
                 f'{digit}: {np.median(elbo[labels == digit]):.1f}'
                 for digit in np.unique(labels)) + '.']


def read_scores(output: str) -> ScoreSummary:
  with storage.open_file(output, 'r') as f:
    reader = csv.DictReader(f)
    rows = list(reader)
  return ScoreSummary(len(rows), rows, reader.fieldnames[-1])


def load_counts(data_dir: str, splits: Sequence[str]) -> Dict[str, int]:
  """Images per split, read and checked here so bad files fail before Beam starts."""
  return {split: len(_cached_split(data_dir, split)[0]) for split in splits}
