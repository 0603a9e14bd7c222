"""Continuous-training benchmark: a warm-started retrain on new data against a cold one, side by side.

Real MNIST is cut into two spans: two disjoint halves of the training images
(shuffled with a fixed seed), each with its own half of t10k as its held-out
split. A model is trained on span 1 from scratch with the Trainer's defaults
and saved as the serving SavedModel keeps its weights; then span 2 is trained
by several TrainingLoops in one process, their epochs alternating so that load
from other processes hits them alike: cold (the defaults, from scratch) and
warm starts from the span-1 model (TrainingLoop's `base_model`, read back by
export.restore_weights) for each --warm-epochs. Each is scored by the
deterministic held-out ELBO over all of span 2's held-out images.

A retrain's "Trainer time" is what run_fn spends on it: building the loop
(caching the data, the model, restoring the weights), its epochs, the final
held-out score and the export of the serving SavedModel (models/export.py, with
the Transform graph of models/preprocessing.py, written once up front). The
span-1 model is exported the same way, and the warm starts read their weights
back from that export, as the pipeline's Trainer does from the served version.

  TF_USE_LEGACY_KERAS=1 python bench/warm_start_bench.py --data-dir ../shared/data/mnist
  ... --warm-epochs 2 4        # the warm starts to compare
  ... --epochs 2               # a quick smoke run: every model trains 2 epochs cold
"""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import dataclasses  # pylint: disable=g-import-not-at-top,wrong-import-position
import subprocess  # pylint: disable=g-import-not-at-top,wrong-import-position
import tempfile  # pylint: disable=g-import-not-at-top,wrong-import-position
import time  # pylint: disable=g-import-not-at-top,wrong-import-position
from typing import Dict, List, Optional, Tuple  # pylint: disable=g-import-not-at-top,wrong-import-position

import apache_beam as beam  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow_transform as tft  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow_transform.beam as tft_beam  # pylint: disable=g-import-not-at-top,wrong-import-position

from vaetfx.models import preprocessing, trainer  # pylint: disable=g-import-not-at-top,wrong-import-position
from vaetfx.models.hparams import TrainingHparams  # pylint: disable=g-import-not-at-top,wrong-import-position
from vaetfx.shared import features, mnist_files  # pylint: disable=g-import-not-at-top,wrong-import-position

SPLIT_SEED = 24  # Issue #24.
Span = Tuple[np.ndarray, np.ndarray]  # (train pixels, held-out pixels), binarized float32


def binarized(images: np.ndarray) -> np.ndarray:
  return preprocessing.binarize(tf.constant(images.reshape(-1, features.NUM_PIXELS))).numpy()


def two_spans(data_dir: str) -> Tuple[Span, Span]:
  """Disjoint halves of the training images and of t10k, shuffled with SPLIT_SEED."""
  rng = np.random.default_rng(SPLIT_SEED)
  halves = []
  for split in (features.TRAIN_SPLIT, features.EVAL_SPLIT):
    pixels = binarized(mnist_files.load_split(data_dir, split)[0])
    order = rng.permutation(len(pixels))
    halves.append((pixels[order[:len(pixels) // 2]], pixels[order[len(pixels) // 2:]]))
  (train_1, train_2), (eval_1, eval_2) = halves
  return (train_1, eval_1), (train_2, eval_2)


def uptime() -> str:
  return subprocess.run(['uptime'], capture_output=True, text=True, check=False).stdout.strip()


def write_transform_output(directory: str) -> tft.TFTransformOutput:
  """Transform's graph of models/preprocessing.py and the raw metadata, as the export needs them;
  the preprocessing has no analyzers, so one image analyzes it."""
  raw_metadata = tft.DatasetMetadata.from_feature_spec(
      {features.IMAGE_KEY: tf.io.FixedLenFeature([features.NUM_PIXELS], tf.int64)})
  with beam.Pipeline() as pipeline, tft_beam.Context(temp_dir=os.path.join(directory, 'tmp')):
    raw = pipeline | beam.Create([{features.IMAGE_KEY: np.zeros(features.NUM_PIXELS, np.int64)}])
    transform_fn = (raw, raw_metadata) | tft_beam.AnalyzeDataset(preprocessing.preprocessing_fn)
    transform_fn | tft_beam.WriteTransformFn(directory)  # pylint: disable=expression-not-assigned
    raw_metadata | tft_beam.WriteMetadata(  # pylint: disable=expression-not-assigned
        os.path.join(directory, tft.TFTransformOutput.RAW_METADATA_DIR), pipeline)
  return tft.TFTransformOutput(directory)


@dataclasses.dataclass
class Retrain:
  """One TrainingLoop trained an epoch at a time, then scored and exported, with its Trainer
  time so far."""
  name: str
  loop: trainer.TrainingLoop
  seconds: float  # building the loop so far
  cpu_seconds: float
  transform_output: tft.TFTransformOutput
  export_dir: str
  epochs: List[trainer.EpochStats] = dataclasses.field(default_factory=list)
  final_elbo: Optional[float] = None

  @property
  def done(self) -> bool:
    return len(self.epochs) == len(self.loop.step_counts)

  def step(self):
    """The next epoch, or, after the last, the final held-out score over the whole split and
    the export."""
    if not self.done:
      stats = self.loop.run_epoch(self.loop.step_counts[len(self.epochs)])
      self.epochs.append(stats)
      self.seconds += stats.seconds + stats.eval_seconds
      self.cpu_seconds += stats.cpu_seconds
      print(f'{self.name:<8} epoch {stats.epoch:>2}/{len(self.loop.step_counts)}  train ELBO '
            f'{stats.train_objective:8.2f}  monitor ELBO {stats.eval_objective:8.2f}  '
            f'{stats.seconds:5.1f} s', flush=True)
      return
    start, cpu_start = time.perf_counter(), time.process_time()
    self.final_elbo = self.loop.evaluate()
    self.loop.export(self.transform_output, self.export_dir)
    self.seconds += time.perf_counter() - start
    self.cpu_seconds += time.process_time() - cpu_start


def build_retrain(name: str, hparams: TrainingHparams, span: Span, work_dir: str,
                  transform_output: tft.TFTransformOutput,
                  base_model: Optional[str] = None) -> Retrain:
  start, cpu_start = time.perf_counter(), time.process_time()
  loop = trainer.TrainingLoop(hparams, tf.data.Dataset.from_tensor_slices(span[0]),
                              tf.data.Dataset.from_tensor_slices(span[1]), base_model=base_model)
  print(f'{name}: {loop.start.describe()}', flush=True)
  return Retrain(name, loop, time.perf_counter() - start, time.process_time() - cpu_start,
                 transform_output, os.path.join(work_dir, name.replace(' ', '-')))


def train_base(hparams: TrainingHparams, span: Span, work_dir: str,
               transform_output: tft.TFTransformOutput) -> Retrain:
  """The span-1 model, trained cold with `hparams` and exported under work_dir."""
  base = build_retrain('span 1', dataclasses.replace(hparams, warm_start=False), span, work_dir,
                       transform_output)
  while base.final_elbo is None:
    base.step()
  print(f'span 1 model: held-out ELBO {base.final_elbo:.2f} on span 1 after {base.seconds:.0f} s',
        flush=True)
  return base


def retrain_side_by_side(retrains: List[Retrain]):
  """Round robin, an epoch of each unfinished retrain per round, until every one is scored."""
  while any(retrain.final_elbo is None for retrain in retrains):
    for retrain in retrains:
      if retrain.final_elbo is None:
        retrain.step()


def print_table(retrains: List[Retrain], cold: Retrain):
  print('\n| span 2 retrain | epochs | first-epoch train ELBO | held-out ELBO (span 2) | '
        'Trainer time (s) | CPU-s | time / cold |\n|---|---|---|---|---|---|---|')
  for retrain in retrains:
    print(f'| {retrain.name} | {len(retrain.epochs)} | {retrain.epochs[0].train_objective:.2f} | '
          f'{retrain.final_elbo:.2f} | {retrain.seconds:.0f} | {retrain.cpu_seconds:.0f} | '
          f'{retrain.seconds / cold.seconds:.2f} |')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--data-dir', required=True, help='MNIST IDX files (or mnist.npz).')
  parser.add_argument('--warm-epochs', type=int, nargs='+', default=[2, 3, 4, 6],
                      help='Epochs of each warm-started retrain to compare.')
  parser.add_argument('--epochs', type=int, default=None,
                      help='Cold epochs (span 1 and the cold retrain); default: the Trainer\'s.')
  args = parser.parse_args(argv)
  print(f'load before: {uptime()}', flush=True)
  span_1, span_2 = two_spans(args.data_dir)
  print(f'span 1: {len(span_1[0])} train, {len(span_1[1])} held out; span 2: {len(span_2[0])} '
        f'train, {len(span_2[1])} held out', flush=True)
  hparams = TrainingHparams(epochs=args.epochs)
  with tempfile.TemporaryDirectory() as work_dir:
    transform_output = write_transform_output(os.path.join(work_dir, 'transform_graph'))
    base = train_base(hparams, span_1, work_dir, transform_output)
    print(f'load before the retrains: {uptime()}', flush=True)
    retrains: Dict[str, Retrain] = {'cold': build_retrain(
        'cold', dataclasses.replace(hparams, warm_start=False), span_2, work_dir,
        transform_output)}
    for epochs in args.warm_epochs:
      retrains[f'warm {epochs}'] = build_retrain(
          f'warm {epochs}', dataclasses.replace(hparams, warm_start_epochs=epochs), span_2,
          work_dir, transform_output, base.export_dir)
    retrain_side_by_side(list(retrains.values()))
  print_table(list(retrains.values()), retrains['cold'])
  print(f'\nload after: {uptime()}', flush=True)


if __name__ == '__main__':
  main()
