"""IWAE-bound benchmark: the report's held-out log-likelihood against the decoder alone.

Contenders, in one process, alternating round by round so that load from other
processes on a shared machine hits them alike (after one untimed warm-up each):
- floor B: the encoder on the images (one call) and the SavedModel's
  decode_logits on as many latents as the bound decodes (images x samples), in
  calls of B latents, one after the other; the least the bound can cost;
- floor B x2: the same calls two at a time from two threads (TensorFlow's
  intra-op pool shared), in case the decoder alone leaves a core idle;
- product: what VaeReport runs, components/vae_report/executor.py
  heldout_likelihood (models/iwae.py), its tf.function traced anew each call as
  in the pipeline, iwae.CONCURRENT_CALLS batches at a time;
- product x1: the same one batch at a time (the product before it ran batches
  concurrently), whose bounds must equal the product's.

Each run prints its wall and CPU seconds (process time, both threads: less
skewed by other load than wall time) and the 1-minute load average; the table
gives medians, decoded latents per second and the ratio to the fastest floor.

--mc-seeds S then runs the product on S more seeds and prints, for each K, the
Monte Carlo error (the spread over seeds) of each image's L_K and of their
mean, beside the standard error over the choice of images the report states.

  python bench/iwae_bench.py --model-dir outputs/serving/vae      (make bench-iwae)
"""
import argparse
import os
import statistics
import time
from concurrent import futures
from typing import Callable, Dict, List

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

from vaetfx.components.vae_report import executor  # pylint: disable=g-import-not-at-top,wrong-import-position
from vaetfx.models import export, iwae  # pylint: disable=g-import-not-at-top,wrong-import-position
from vaetfx.pipeline import batch_scoring  # pylint: disable=g-import-not-at-top,wrong-import-position
from vaetfx.shared import mnist_files  # pylint: disable=g-import-not-at-top,wrong-import-position

SPLIT = 'eval'
THREADS = 2


def floor(model: export.ExportedModel, images: np.ndarray, latents: tf.Tensor, batch: int,
          threads: int) -> Callable[[], None]:
  """Encodes the images, then decodes `latents` in calls of `batch`, `threads` at a time."""
  def decode(start):
    return model.decode_logits(latents[start:start + batch]).numpy()

  def run():
    model.encode(images)
    starts = range(0, len(latents), batch)
    if threads == 1:
      for start in starts:
        decode(start)
    else:
      with futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(decode, starts))
  return run


def measure(call: Callable[[], None]) -> Dict[str, float]:
  load = os.getloadavg()[0]
  wall, cpu = time.perf_counter(), time.process_time()
  call()
  return {'wall': time.perf_counter() - wall, 'cpu': time.process_time() - cpu,
          'load': max(load, os.getloadavg()[0])}


def print_table(results: Dict[str, List[Dict[str, float]]], latents: int):
  median = {c: {key: statistics.median(r[key] for r in runs) for key in ('wall', 'cpu')}
            for c, runs in results.items()}
  best = min((c for c in median if c.startswith('floor')), key=lambda c: median[c]['wall'])
  print(f'\n| contender | wall s | CPU s | latents/s | wall to {best} | CPU to {best} |\n'
        '| --- | ---: | ---: | ---: | ---: | ---: |')
  for contender, times in median.items():
    print(f'| {contender} | {times["wall"]:.2f} | {times["cpu"]:.2f} | '
          f'{latents / times["wall"]:,.0f} | {times["wall"] / median[best]["wall"]:.2f} | '
          f'{times["cpu"] / median[best]["cpu"]:.2f} |')
  loads = [r['load'] for runs in results.values() for r in runs]
  print(f'\nmedians of {len(next(iter(results.values())))} alternating runs each; 1-minute load '
        f'average {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} cores during the runs')


def monte_carlo_spread(model, images, labels, samples: int, seeds: List[int],
                       reported: iwae.HeldoutLikelihood):
  """Per K: the spread over seeds of each image's L_K (its Monte Carlo error) and of their
  mean, beside the reported standard error over the choice of images."""
  runs = [reported] + [executor.heldout_likelihood(model, images, labels, samples, seed)
                       for seed in seeds]
  print(f'\nMonte Carlo error over {len(runs)} seeds ({reported.seed}, {seeds[0]}-{seeds[-1]}) '
        f'against the standard error over the {len(images)} images, nats:\n'
        '| K | mean L_K | standard error over images | Monte Carlo std of the mean | '
        'Monte Carlo std of one image (median, max) |\n| ---: | ---: | ---: | ---: | ---: |')
  for count in reported.bounds:
    per_image = np.stack([run.bounds[count] for run in runs]).astype(np.float64)
    spread = np.std(per_image, axis=0, ddof=1)
    means = per_image.mean(axis=1)
    print(f'| {count} | {np.mean(means):.2f} | {reported.standard_errors[count]:.3f} | '
          f'{np.std(means, ddof=1):.4f} | {np.median(spread):.3f}, {np.max(spread):.3f} |')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--model-dir', default='outputs/serving/vae',
                      help='A SavedModel, or a serving folder (its newest version is used).')
  parser.add_argument('--data-dir', default='../shared/data/mnist',
                      help='MNIST; the first --examples of its t10k (eval) images are used.')
  parser.add_argument('--examples', type=int, default=200,
                      help="Images, the first of the eval split (default 200, the report's).")
  parser.add_argument('--samples', type=int, default=1000,
                      help="K, a power of ten (default 1000, the report's).")
  parser.add_argument('--seed', type=int, default=0, help="The product's seed (default 0).")
  parser.add_argument('--floor-batches', default='250,1000,2000',
                      help='Latents per decoder call of the floors, comma-separated.')
  parser.add_argument('--rounds', type=int, default=3,
                      help='Runs of each contender, alternating (default 3).')
  parser.add_argument('--mc-seeds', type=int, default=0,
                      help='More seeds to run the product on for the Monte Carlo error '
                           '(default 0: not measured).')
  args = parser.parse_args(argv)
  images, labels = mnist_files.load_split(args.data_dir, SPLIT)
  images, labels = images[:args.examples], labels[:args.examples]
  model_path = batch_scoring.resolve_model_dir(args.model_dir)
  model = export.load_exported_model(model_path)
  latents = tf.random.normal([len(images) * args.samples, model.latent_dim], seed=args.seed)
  product_results = []

  def product(concurrent_calls):
    def run():
      product_results.append(executor.heldout_likelihood(model, images, labels, args.samples,
                                                         args.seed, concurrent_calls))
    return run

  contenders = {'product': product(iwae.CONCURRENT_CALLS), 'product x1': product(1)}
  for batch in (int(b) for b in args.floor_batches.split(',')):
    contenders[f'floor {batch}'] = floor(model, images, latents, batch, 1)
    contenders[f'floor {batch} x{THREADS}'] = floor(model, images, latents, batch, THREADS)
  print(f'{args.rounds} rounds of {", ".join(contenders)}, alternating; {model_path}, the first '
        f'{len(images)} {SPLIT} images, K={args.samples}: {len(latents):,} latents', flush=True)
  first = measure(contenders['product'])
  print(f'warm-up: product {first["wall"]:.2f} s wall (the first call in the process), '
        f'load {first["load"]:.1f}', flush=True)
  for call in contenders.values():
    call()
  results = {c: [] for c in contenders}
  for round_number in range(1, args.rounds + 1):
    for contender, call in contenders.items():
      result = measure(call)
      results[contender].append(result)
      print(f'round {round_number} {contender:<16} {result["wall"]:6.2f} s wall '
            f'{result["cpu"]:6.2f} s CPU, load {result["load"]:.1f}', flush=True)
  print_table(results, len(latents))
  reported = product_results[-1]
  difference = max(float(np.max(np.abs(run.bounds[count] - reported.bounds[count])))
                   for run in product_results for count in reported.bounds)
  print(f'\nlargest difference of any image\'s L_K between the {len(product_results)} product '
        f'runs (both products, every round): {difference:.3g} nats')
  print('\nproduct: ' + ', '.join(
      f'K={count} {value:.2f} ± {reported.standard_errors[count]:.2f}'
      for count, value in reported.overall.items()))
  if args.mc_seeds:
    monte_carlo_spread(model, images, labels, args.samples,
                       list(range(args.seed + 1, args.seed + 1 + args.mc_seeds)), reported)


if __name__ == '__main__':
  main()
