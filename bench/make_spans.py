"""Splits real MNIST into span folders, for continuous training, drift and warm-start runs.

Writes `<out>/span-1/`, `<out>/span-2/`, ... each an MNIST folder (the four gzipped
IDX files) that `vaetfx run --data-dir <out>` reads as spans:

- span-1 and span-2: the training images cut into two disjoint halves (a seeded
  shuffle, so both hold every digit), each with its own half of t10k;
- then, as asked, in this order, one span each: --digits-0-4 (only digits 0-4,
  of the whole train and t10k sets), --digits-5-9, --inverted (span 2's images
  with their pixels inverted, 255 - x: the same digits, a different look), and
  --resplits N: N spans, each a random half of train and of t10k (seed --seed + i).

Nothing is downloaded; the input is any MNIST folder (IDX files, gzip or not, or
mnist.npz). Every span is checked by reading it back as ExampleGen will.

  python bench/make_spans.py --data-dir ../shared/data/mnist --out /tmp/spans \\
      [--digits-0-4] [--digits-5-9] [--inverted] [--resplits 2] [--seed 0]
"""
import argparse
import gzip
import os
import struct
import sys
from typing import Callable, Dict, List, Tuple

import numpy as np

from vaetfx.shared import features, mnist_files

Split = Tuple[np.ndarray, np.ndarray]  # images uint8 [N, 28, 28], labels uint8 [N]
Span = Dict[str, Split]  # by split name: train, eval


def idx_bytes(array: np.ndarray) -> bytes:
  """A uint8 array as an IDX file: magic (0, 0, 0x08, ndim), big-endian sizes, the bytes."""
  header = struct.pack('>BBBB', 0, 0, 0x08, array.ndim) + struct.pack(
      f'>{array.ndim}I', *array.shape)
  return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_span(directory: str, span: Span) -> None:
  """The four gzipped IDX files of MNIST's names (mnist_files.IDX_FILES)."""
  os.makedirs(directory, exist_ok=False)
  for split, (images_name, labels_name) in mnist_files.IDX_FILES.items():
    images, labels = span[split]
    for name, array in ((images_name, images), (labels_name, labels)):
      with open(os.path.join(directory, name + '.gz'), 'wb') as f:
        f.write(gzip.compress(idx_bytes(array), compresslevel=6))


def halves(split: Split, seed: int) -> Tuple[Split, Split]:
  """Two disjoint halves of a split, after a seeded shuffle (each holds every digit)."""
  images, labels = split
  order = np.random.default_rng(seed).permutation(len(labels))
  first, second = np.sort(order[:len(order) // 2]), np.sort(order[len(order) // 2:])
  return (images[first], labels[first]), (images[second], labels[second])


def of_digits(split: Split, digits: List[int]) -> Split:
  images, labels = split
  kept = np.isin(labels, digits)
  return images[kept], labels[kept]


def inverted(split: Split) -> Split:
  images, labels = split
  return 255 - images, labels


def spans_of(data: Span, args) -> List[Tuple[str, Span]]:
  """(what it is, the span) for each span to write, in span order."""
  train_halves = halves(data[features.TRAIN_SPLIT], args.seed)
  eval_halves = halves(data[features.EVAL_SPLIT], args.seed + 1)
  made = [(f'half {i + 1} of train and of t10k (seed {args.seed})',
           {features.TRAIN_SPLIT: train_halves[i], features.EVAL_SPLIT: eval_halves[i]})
          for i in range(2)]
  whole: Callable[[Callable[[Split], Split]], Span] = lambda f: {
      split: f(data[split]) for split in data}
  if args.digits_0_4:
    made.append(('digits 0-4 of train and t10k', whole(lambda s: of_digits(s, [0, 1, 2, 3, 4]))))
  if args.digits_5_9:
    made.append(('digits 5-9 of train and t10k', whole(lambda s: of_digits(s, [5, 6, 7, 8, 9]))))
  if args.inverted:
    made.append(('span 2 inverted (255 - pixel)',
                 {split: inverted(made[1][1][split]) for split in made[1][1]}))
  for i in range(args.resplits):
    seed = args.seed + 100 + i
    made.append((f'a random half of train and of t10k (seed {seed})',
                 {split: halves(data[split], seed)[0] for split in data}))
  return made


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--data-dir', required=True, help='An MNIST folder (IDX files or mnist.npz).')
  parser.add_argument('--out', required=True,
                      help='Folder to write span-1/, span-2/, ... into; must not hold spans yet.')
  parser.add_argument('--digits-0-4', action='store_true', help='Add a span of digits 0-4 only.')
  parser.add_argument('--digits-5-9', action='store_true', help='Add a span of digits 5-9 only.')
  parser.add_argument('--inverted', action='store_true',
                      help='Add a span of span 2\'s images inverted (255 - pixel).')
  parser.add_argument('--resplits', type=int, default=0, metavar='N',
                      help='Add N spans, each a random half of train and of t10k.')
  parser.add_argument('--seed', type=int, default=0, help='Seed of every shuffle.')
  args = parser.parse_args(argv)
  if os.path.isdir(args.out) and any(name.startswith('span-') for name in os.listdir(args.out)):
    print(f'make_spans: error: {args.out} already holds span folders', file=sys.stderr)
    return 2
  data = {split: mnist_files.load_split(args.data_dir, split) for split in mnist_files.IDX_FILES}
  for number, (what, span) in enumerate(spans_of(data, args), start=1):
    directory = os.path.join(args.out, f'span-{number}')
    write_span(directory, span)
    counts = {split: len(mnist_files.load_split(directory, split)[1]) for split in span}
    print(f'{directory}: {what}: {counts[features.TRAIN_SPLIT]} train, '
          f'{counts[features.EVAL_SPLIT]} eval images', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
