"""Trainer benchmark: the Trainer's VAE against the seed tutorial's own training loop, side by side.

Both train on the same binarized MNIST (models/preprocessing.binarize) and are
scored after every epoch by the same deterministic held-out ELBO
(vae.fixed_noise_elbo over the whole test split). Their epochs alternate, so
load from other processes on a shared machine hits both alike; the ratios are
the numbers to trust. Times are training wall time; evaluation is excluded for
both, as the tutorial's own timing does.

The tutorial (TensorFlow's CVAE tutorial, seed 001's model): latent_dim 2,
Adam(1e-4), batch 32, the single-sample Monte Carlo loss, a tf.function
train_step called from a Python loop over the batches.

  TF_USE_LEGACY_KERAS=1 python bench/train_bench.py --data-dir ../shared/data/mnist
  ... --tutorial-epochs 3            # a quicker, partial comparison
  ... --hparam batch_size=256 ...    # try other Trainer hyperparameters
"""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import argparse  # pylint: disable=g-import-not-at-top,wrong-import-position
import dataclasses  # pylint: disable=g-import-not-at-top,wrong-import-position
import itertools  # pylint: disable=g-import-not-at-top,wrong-import-position
import json  # pylint: disable=g-import-not-at-top,wrong-import-position
import statistics  # pylint: disable=g-import-not-at-top,wrong-import-position
import time  # pylint: disable=g-import-not-at-top,wrong-import-position
from typing import Iterator, List, Optional  # pylint: disable=g-import-not-at-top,wrong-import-position

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

from vaetfx.models import preprocessing, trainer  # pylint: disable=g-import-not-at-top,wrong-import-position
from vaetfx.models import vae as vae_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from vaetfx.models.hparams import TrainingHparams  # pylint: disable=g-import-not-at-top,wrong-import-position
from vaetfx.shared import mnist_files  # pylint: disable=g-import-not-at-top,wrong-import-position
from vaetfx.shared import features  # pylint: disable=g-import-not-at-top,wrong-import-position

TUTORIAL_LATENT_DIM = 2
TUTORIAL_BATCH_SIZE = 32
TUTORIAL_LEARNING_RATE = 1e-4
IMAGE_SHAPE = (features.IMAGE_SIZE, features.IMAGE_SIZE, 1)


class TutorialCVAE(tf.keras.Model):
  """Seed 001's model, as the tutorial writes it."""

  def __init__(self, latent_dim):
    super().__init__()
    self.latent_dim = latent_dim
    self.encoder = tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=IMAGE_SHAPE),
        tf.keras.layers.Conv2D(filters=32, kernel_size=3, strides=(2, 2), activation='relu'),
        tf.keras.layers.Conv2D(filters=64, kernel_size=3, strides=(2, 2), activation='relu'),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(latent_dim + latent_dim),
    ])
    self.decoder = tf.keras.Sequential([
        tf.keras.layers.InputLayer(input_shape=(latent_dim,)),
        tf.keras.layers.Dense(units=7 * 7 * 32, activation=tf.nn.relu),
        tf.keras.layers.Reshape(target_shape=(7, 7, 32)),
        tf.keras.layers.Conv2DTranspose(
            filters=64, kernel_size=3, strides=2, padding='same', activation='relu'),
        tf.keras.layers.Conv2DTranspose(
            filters=32, kernel_size=3, strides=2, padding='same', activation='relu'),
        tf.keras.layers.Conv2DTranspose(filters=1, kernel_size=3, strides=1, padding='same'),
    ])

  def encode(self, x):
    mean, logvar = tf.split(self.encoder(x), num_or_size_splits=2, axis=1)
    return mean, logvar

  def reparameterize(self, mean, logvar):
    eps = tf.random.normal(shape=mean.shape)
    return eps * tf.exp(logvar * .5) + mean

  def decode(self, z):
    return self.decoder(z)


def tutorial_compute_loss(model, x):
  """The tutorial's loss: -(log p(x|z) + log p(z) - log q(z|x)), one z per image."""
  mean, logvar = model.encode(x)
  z = model.reparameterize(mean, logvar)
  x_logit = model.decode(z)
  cross_ent = tf.nn.sigmoid_cross_entropy_with_logits(logits=x_logit, labels=x)
  logpx_z = -tf.reduce_sum(cross_ent, axis=[1, 2, 3])
  logpz = vae_lib.log_normal_pdf(z, 0., 0.)
  logqz_x = vae_lib.log_normal_pdf(z, mean, logvar)
  return -tf.reduce_mean(logpx_z + logpz - logqz_x)


@dataclasses.dataclass
class Run:
  """One contender's epochs."""
  name: str
  epochs: List[trainer.EpochStats] = dataclasses.field(default_factory=list)

  def steady_images_per_second(self) -> float:
    """Median over the epochs after the first, which also traces and warms up."""
    return statistics.median(e.images_per_second for e in self.epochs[1:] or self.epochs)

  def steady_seconds_per_epoch(self) -> float:
    return statistics.median(e.seconds for e in self.epochs[1:] or self.epochs)

  def steady_images_per_cpu_second(self) -> float:
    return statistics.median(e.images_per_second * e.seconds / e.cpu_seconds
                             for e in self.epochs[1:] or self.epochs)

  def seconds_to_reach(self, elbo: float, clock: str = 'seconds') -> Optional[float]:
    """Training time (`seconds` or `cpu_seconds`) to the end of the first epoch whose
    held-out ELBO is >= elbo."""
    elapsed = 0.0
    for epoch in self.epochs:
      elapsed += getattr(epoch, clock)
      if epoch.eval_objective >= elbo:
        return elapsed
    return None


def tutorial_epochs(train_pixels: np.ndarray, test_pixels: np.ndarray, epochs: int,
                    eval_samples: int, seed: int) -> Iterator[trainer.EpochStats]:
  """The tutorial's training loop, timed, with the Trainer's held-out ELBO after each epoch."""
  tf.keras.utils.set_random_seed(seed)
  model = TutorialCVAE(TUTORIAL_LATENT_DIM)
  optimizer = tf.keras.optimizers.Adam(TUTORIAL_LEARNING_RATE)
  train_images = train_pixels.reshape((-1,) + IMAGE_SHAPE)
  train_dataset = (tf.data.Dataset.from_tensor_slices(train_images)
                   .shuffle(len(train_images)).batch(TUTORIAL_BATCH_SIZE))

  @tf.function
  def train_step(model, x, optimizer):
    with tf.GradientTape() as tape:
      loss = tutorial_compute_loss(model, x)
    gradients = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))

  evaluate = held_out_elbo_fn(model, test_pixels, eval_samples)
  for epoch in range(1, epochs + 1):
    start_time, cpu_start = time.perf_counter(), time.process_time()
    for train_x in train_dataset:
      train_step(model, train_x, optimizer)
    seconds, cpu_seconds = time.perf_counter() - start_time, time.process_time() - cpu_start
    eval_start = time.perf_counter()
    eval_elbo = evaluate()
    yield trainer.EpochStats(epoch, float('nan'), eval_elbo, len(train_images) / seconds,
                             seconds, time.perf_counter() - eval_start, cpu_seconds)


def held_out_elbo_fn(model: TutorialCVAE, test_pixels: np.ndarray, eval_samples: int):
  """The Trainer's evaluation (fixed_noise_elbo, the same noise table) on the tutorial's model."""
  noise = tf.constant(vae_lib.eval_noise(eval_samples, TUTORIAL_LATENT_DIM))
  batches = tf.data.Dataset.from_tensor_slices(test_pixels).batch(trainer.EVAL_BATCH_SIZE)
  decode = lambda latent: tf.reshape(model.decode(latent), [-1, features.NUM_PIXELS])

  @tf.function
  def elbo_sum(pixels):
    mean, logvar = model.encode(tf.reshape(pixels, (-1,) + IMAGE_SHAPE))
    return tf.reduce_sum(vae_lib.fixed_noise_elbo(decode, pixels, mean, logvar, noise))

  return lambda: float(sum(elbo_sum(batch) for batch in batches)) / len(test_pixels)


def trainer_epochs(hparams: TrainingHparams, train_pixels: np.ndarray,
                   test_pixels: np.ndarray) -> Iterator[trainer.EpochStats]:
  """The Trainer's own TrainingLoop (input pipeline, strategy, compiled epochs) on the same data."""
  # monitor_examples=0: every epoch scored on the whole test split, as the tutorial's are.
  loop = trainer.TrainingLoop(dataclasses.replace(hparams, monitor_examples=0),
                              tf.data.Dataset.from_tensor_slices(train_pixels),
                              tf.data.Dataset.from_tensor_slices(test_pixels))
  print(f'Trainer: {trainer.describe_strategy(loop.strategy)}', flush=True)
  for steps in loop.step_counts:
    yield loop.run_epoch(steps)


def load_binarized(data_dir: str, split: str) -> np.ndarray:
  images, _ = mnist_files.load_split(data_dir, split)
  pixels = images.reshape(-1, features.NUM_PIXELS)
  return preprocessing.binarize(tf.constant(pixels)).numpy()


def print_epoch(run: Run, stats: trainer.EpochStats):
  print(f'{run.name:<9} epoch {stats.epoch:>2}  held-out ELBO {stats.eval_objective:8.2f}  '
        f'{stats.images_per_second:6.0f} images/s  {stats.seconds:6.1f} s '
        f'({stats.cpu_seconds:.1f} CPU-s, +{stats.eval_seconds:.1f} s eval)', flush=True)


def print_summary(trainer_run: Run, tutorial_run: Run):
  target = tutorial_run.epochs[-1].eval_objective
  rows = [('steady training images/s', lambda r: f'{r.steady_images_per_second():.0f}'),
          ('training images per CPU-second', lambda r: f'{r.steady_images_per_cpu_second():.0f}'),
          ('wall time per epoch (s)', lambda r: f'{r.steady_seconds_per_epoch():.1f}'),
          ('epochs', lambda r: f'{len(r.epochs)}'),
          ('total training time (s)', lambda r: f'{sum(e.seconds for e in r.epochs):.0f}'),
          ('final held-out ELBO', lambda r: f'{r.epochs[-1].eval_objective:.2f}'),
          (f'time to held-out ELBO {target:.2f} (s)',
           lambda r: _seconds_or_never(r.seconds_to_reach(target)))]
  print(f'\n| | {trainer_run.name} | {tutorial_run.name} |\n|---|---|---|')
  for label, cell in rows:
    print(f'| {label} | {cell(trainer_run)} | {cell(tutorial_run)} |')
  print('\nper-epoch ELBO (held-out, nats):')
  print('| epoch | ' + ' | '.join(run.name for run in (trainer_run, tutorial_run)) + ' |\n|---|---|---|')
  for epoch, (ours, theirs) in enumerate(itertools.zip_longest(trainer_run.epochs,
                                                               tutorial_run.epochs), 1):
    cells = [f'{e.eval_objective:.2f} ({e.seconds:.1f} s)' if e else '' for e in (ours, theirs)]
    print(f'| {epoch} | {cells[0]} | {cells[1]} |')
  ratio = trainer_run.steady_images_per_second() / tutorial_run.steady_images_per_second()
  cpu_ratio = (trainer_run.steady_images_per_cpu_second()
               / tutorial_run.steady_images_per_cpu_second())
  print(f'\nthroughput ratio Trainer / tutorial: {ratio:.2f}x wall, {cpu_ratio:.2f}x per CPU-second')
  for clock, unit in (('seconds', 's'), ('cpu_seconds', 'CPU-s')):
    ours = trainer_run.seconds_to_reach(target, clock)
    theirs = tutorial_run.seconds_to_reach(target, clock)
    if ours is None:
      print('the Trainer never reached the tutorial\'s final held-out ELBO')
      return
    print(f'time to the tutorial\'s {len(tutorial_run.epochs)}-epoch held-out ELBO: '
          f'{ours:.0f} {unit} vs {theirs:.0f} {unit} ({ours / theirs:.2f} of the tutorial\'s)')


def _seconds_or_never(seconds: Optional[float]) -> str:
  return 'never' if seconds is None else f'{seconds:.0f}'


def _hparam(text: str):
  """KEY=VALUE with a JSON value (256, 0.002, true), or a bare string (mlp)."""
  key, _, value = text.partition('=')
  try:
    return key, json.loads(value)
  except json.JSONDecodeError:
    return key, value


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--data-dir', default='../shared/data/mnist', help='MNIST IDX files.')
  parser.add_argument('--tutorial-epochs', type=int, default=10,
                      help='Epochs of the tutorial\'s loop (the tutorial runs 10).')
  parser.add_argument('--hparam', type=_hparam, action='append', default=[], metavar='KEY=VALUE',
                      help='Override a TrainingHparams default, e.g. batch_size=256; repeatable.')
  args = parser.parse_args(argv)
  hparams = TrainingHparams.from_custom_config(dict(args.hparam))
  train_pixels = load_binarized(args.data_dir, features.TRAIN_SPLIT)
  test_pixels = load_binarized(args.data_dir, features.EVAL_SPLIT)
  print(f'{len(train_pixels)} train and {len(test_pixels)} test images; Trainer {hparams}',
        flush=True)
  runs = {'Trainer': Run('Trainer'), 'tutorial': Run('tutorial')}
  contenders = {'Trainer': trainer_epochs(hparams, train_pixels, test_pixels),
                'tutorial': tutorial_epochs(train_pixels, test_pixels, args.tutorial_epochs,
                                            hparams.eval_samples, hparams.seed)}
  while contenders:
    for name in list(contenders):
      stats = next(contenders[name], None)
      if stats is None:
        del contenders[name]
        continue
      runs[name].epochs.append(stats)
      print_epoch(runs[name], stats)
  print_summary(runs['Trainer'], runs['tutorial'])


if __name__ == '__main__':
  main()
