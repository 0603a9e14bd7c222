"""`vaetfx score`: the command line of pipeline/batch_scoring.py.

The checks of every input run before Beam or TensorFlow loads (batch_scoring
imports them inside the functions that use them).
"""
import argparse
import os
import sys
import time

from vaetfx import flags
from vaetfx.pipeline import batch_scoring
from vaetfx.pipeline.batch_scoring import SIGNATURE, SPLITS, BadInput
from vaetfx.shared import mnist_files, storage


def check_output(path: str) -> str:
  """`path` as an absolute path (URIs as given) if a CSV can be written there."""
  if not path.endswith('.csv'):
    raise BadInput(f'--output {path}: expected a file name ending in .csv')
  if storage.is_uri(path):
    return path
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.isdir(path):
    raise BadInput(f'--output {path}: is a folder, expected a file name')
  try:
    flags.writable_dir(os.path.dirname(path), '--output folder')
  except flags.BadPath as e:
    raise BadInput(str(e)) from e
  return path


def _score(args) -> int:
  """Checks every input (no TensorFlow for local ones), scores on Beam, prints a summary."""
  try:
    data_dir = args.data_dir if storage.is_uri(args.data_dir) else os.path.abspath(args.data_dir)
    if not storage.is_uri(data_dir) and not os.path.isdir(data_dir):
      problem = 'is a file, expected a folder' if os.path.exists(data_dir) else 'no such folder'
      raise BadInput(f'--data-dir {args.data_dir}: {problem}')
    output = check_output(args.output)
    counts = batch_scoring.load_counts(data_dir, SPLITS[args.split])
    model_path = batch_scoring.resolve_model_dir(args.model_dir)
    score = batch_scoring.check_signature(model_path)
  except (BadInput, mnist_files.MnistFormatError) as e:
    print(f'vaetfx score: error: {e}', file=sys.stderr)
    return flags.EXIT_BAD_INPUT
  total = sum(counts.values())
  beam = flags.beam_config(args)
  batch_scoring.import_beam()  # Before the clock starts: the time printed is the scoring's.
  per_split = ', '.join(f'{split} {count:,}' for split, count in counts.items())
  print(f'vaetfx score: scoring {total:,} images ({per_split}) from {data_dir} with {model_path} '
        f'on Beam ({" ".join(beam.pipeline_args()) or "DirectRunner, in_memory"}) ...', flush=True)
  start = time.perf_counter()
  batch_scoring.run_scoring(data_dir, counts, model_path, output, beam.pipeline_args(), score)
  seconds = time.perf_counter() - start
  summary = batch_scoring.read_scores(output)
  print(f'Scored {summary.count:,} images in {seconds:.1f} s ({summary.count / seconds:,.0f} '
        f'images/s); wrote {output}, worst first.')
  print('\n'.join(summary.lines()))
  return flags.EXIT_OK


def add_subcommands(subparsers) -> None:
  """Registers `score` on the `vaetfx` command line."""
  score = subparsers.add_parser(
      'score', help='Score every image of an MNIST-format data set with a model, on Beam.',
      description='Computes each image\'s ELBO under the model (its anomaly score: low means '
                  'unlike the training data) on Beam, through the model\'s '
                  f'{SIGNATURE!r} signature in batches, with the pipeline\'s scorer\'s code, and '
                  'writes a CSV of rank, split, index, label and elbo, lowest ELBO first. A '
                  'plain autoencoder (run --model ae) is scored by its '
                  'reconstruction_log_likelihood instead, the last column\'s name then.',
      epilog=flags.EXIT_CODES_HELP,
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  score.add_argument('--data-dir', required=True,
                     help='Folder (or gs:// URI) with an MNIST-format data set: the IDX files '
                          '(gzip or not) or mnist.npz.')
  score.add_argument('--model-dir', required=True,
                     help='A SavedModel folder, or a serving folder of integer versions '
                          '(<serving-dir>/<model-name>: the newest is used).')
  score.add_argument('--split', choices=sorted(SPLITS), default='eval',
                     help='Which images to score: eval (t10k-* files, x_test), train '
                          '(train-* files, x_train) or both.')
  score.add_argument('--output', default='scores.csv',
                     help='The CSV to write (replaced whole once every image is scored).')
  flags.add_beam_flags(score)
  score.set_defaults(handler=_score)
