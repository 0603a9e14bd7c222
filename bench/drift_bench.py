"""Drift benchmark: DriftCheck's two distances on real MNIST, drifted and not, to choose the
default --drift-threshold from.

Each case is a previous data set and a new one, both scored by a served model, through the
same function the component runs (components/drift_check/executor.measure: TFDV's L-infinity
on the labels, the Kolmogorov-Smirnov distance and the median shift of the model's score):

- `0-4 after 5-9`: previous = the t10k digits 5-9, new = the t10k digits 0-4, scored by a
  model trained on digits 5-9 (`--model-59`) and by one trained on all digits (`--model-all`);
- `inverted`: the t10k split cut in two at random; previous = one half, new = the other half
  inverted (255 - pixel), scored by the all-digits model;
- `re-split`: previous and new are two disjoint random draws of the same size from the train
  and t10k images together, one per seed and size (`--resplit-sizes`: a span's held-out
  split may be small), scored by the all-digits model. Not drift: both distances here are
  the noise the threshold must sit above, and it grows as the size shrinks.

The models are serving folders (or SavedModels) a `vaetfx run` pushed, e.g.

  vaetfx run --digits 5,6,7,8,9 --output-dir /tmp/m59 --epochs 4
  vaetfx run --output-dir /tmp/mall --epochs 4
  TF_USE_LEGACY_KERAS=1 python bench/drift_bench.py --data-dir ../shared/data/mnist \\
      --model-59 /tmp/m59/serving/vae --model-all /tmp/mall/serving/vae

Prints the load average before and after (the distances do not depend on it; the seconds do).
"""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import time  # pylint: disable=g-import-not-at-top,wrong-import-position
from typing import Tuple  # pylint: disable=g-import-not-at-top,wrong-import-position

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from vaetfx.components.drift_check import component as drift_component  # pylint: disable=g-import-not-at-top,wrong-import-position
from vaetfx.components.drift_check import executor as drift_check  # pylint: disable=g-import-not-at-top,wrong-import-position
from vaetfx.models import export  # pylint: disable=g-import-not-at-top,wrong-import-position
from vaetfx.shared import features, mnist_files, serving_folder  # pylint: disable=g-import-not-at-top,wrong-import-position

Digits = Tuple[np.ndarray, np.ndarray]  # (images uint8 [N, 28, 28], labels)


def load_model(path: str) -> export.ExportedModel:
  """A SavedModel folder, or a serving folder's served version."""
  served = serving_folder.served_version(serving_folder.list_versions(path))
  return export.load_exported_model(served.path if served else path)


def subset(data: Digits, mask_or_index) -> Digits:
  return data[0][mask_or_index], data[1][mask_or_index]


def of_digits(data: Digits, digits) -> Digits:
  return subset(data, np.isin(data[1], digits))


def load_average() -> str:
  return ' '.join(f'{value:.2f}' for value in os.getloadavg())


def cases(train: Digits, test: Digits, seeds: int, sizes):
  """(name, model key, previous, new) for every case of the module docstring."""
  yield '0-4 after 5-9', '59', of_digits(test, range(5, 10)), of_digits(test, range(5))
  yield '0-4 after 5-9', 'all', of_digits(test, range(5, 10)), of_digits(test, range(5))
  order = np.random.default_rng(0).permutation(len(test[1]))
  half = len(order) // 2
  inverted = subset(test, order[half:])
  yield 'inverted', 'all', subset(test, order[:half]), (255 - inverted[0], inverted[1])
  pool = (np.concatenate([train[0], test[0]]), np.concatenate([train[1], test[1]]))
  for size in sizes:
    for seed in range(seeds):
      draw = np.random.default_rng(seed + 1).permutation(len(pool[1]))
      yield f're-split seed {seed + 1}', 'all', subset(pool, draw[:size]), subset(
          pool, draw[size:2 * size])


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--data-dir', required=True, help='MNIST IDX files (train and t10k).')
  parser.add_argument('--model-59', required=True, help='A model trained on digits 5-9.')
  parser.add_argument('--model-all', required=True, help='A model trained on all digits.')
  parser.add_argument('--seeds', type=int, default=8, help='Random re-splits per size.')
  parser.add_argument('--resplit-sizes', default='10000,1000,500',
                      help='Digits on each side of a re-split, comma-separated.')
  parser.add_argument('--scored-examples', type=int,
                      default=drift_component.DEFAULT_SCORED_EXAMPLES,
                      help='Images scored on each side (the component\'s default).')
  args = parser.parse_args(argv)
  print(f'load average before: {load_average()}', flush=True)
  train = mnist_files.load_split(args.data_dir, features.TRAIN_SPLIT)
  test = mnist_files.load_split(args.data_dir, features.EVAL_SPLIT)
  models = {'59': load_model(args.model_59), 'all': load_model(args.model_all)}
  print(f'{"case":<22} {"model":<10} {"previous":>8} {"new":>6} {"labels L-inf":>12} '
        f'{"score KS":>9} {"KS p":>9} {"median shift":>12} {"seconds":>8}')
  sizes = [int(size) for size in args.resplit_sizes.split(',')]
  for name, model_key, previous, new in cases(train, test, args.seeds, sizes):
    start = time.perf_counter()
    result = drift_check.measure(models[model_key], features.ELBO_KEY, previous, new,
                                 threshold=1.0, scored_examples=args.scored_examples,
                                 seed=drift_component.DEFAULT_SEED)
    print(f'{name:<22} {"digits 5-9" if model_key == "59" else "all digits":<10} '
          f'{len(previous[1]):>8} {len(new[1]):>6} {result.label_l_infinity:>12.4f} '
          f'{result.score_ks:>9.4f} {result.score_ks_pvalue:>9.2g} '
          f'{result.median_shift:>+12.2f} {time.perf_counter() - start:>8.1f}', flush=True)
  print(f'load average after: {load_average()}')


if __name__ == '__main__':
  main()
