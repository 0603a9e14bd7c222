"""The TFX Trainer module: run_fn trains the VAE (or the autoencoder) on Transform's `pixels`
and exports it.

Training runs whole epochs inside one tf.function: the loop over batches is a
graph while-loop over a (distributed) dataset iterator, so no Python runs per
batch and nothing returns to the host until the epoch ends. The same code runs
under the default strategy on CPU, OneDeviceStrategy on one GPU and
MirroredStrategy on several.

Outputs under fn_args.model_run_dir: TensorBoard summaries (train/ and eval/:
ELBO per epoch, images/s, and eval reconstructions) and history.json:
  {"hparams": {...}, "strategy": "...", "num_train_examples": N,
   "num_eval_examples": M, "epochs": [{"epoch": 1, "train_elbo": ..., "eval_elbo": ...,
   "images_per_second": ..., "seconds": ..., "eval_seconds": ..., "cpu_seconds": ...},
   ...],
   "monitor_examples": n, "start": {"warm": true, "base_model": "...", "reason": ""},
   "load_seconds": ..., "final_eval_elbo": ..., "final_eval_seconds": ...,
   "export_seconds": ...}
load_seconds is the time before the first epoch (both splits read and cached, the
model built or warm-started) and export_seconds the export's (tracing and writing
the signatures): with the epochs' `seconds` and `eval_seconds` and
final_eval_seconds they account for the Trainer's time (bench/run_bench.py).
`start` is how training began: from the base model's weights (a warm start), or
from fresh ones with the reason (TrainingLoop).
ELBOs are in nats per image (negative; higher is better). train_elbo is the mean
single-sample estimate over the epoch's batches as the weights changed;
eval_elbo is vae.fixed_noise_elbo after the epoch on `monitor_examples` held-out
images spread evenly through the split (the whole split when 0), and
final_eval_elbo the same over the whole split once training ends: the whole
10,000-image split after every epoch cost a quarter of the Trainer's time.
The autoencoder (--model ae, AutoencoderLoop) writes the same with its
reconstruction log-likelihood in place of the ELBO: train_/eval_/final_eval_
reconstruction_log_likelihood.
"""
import dataclasses
import functools
import json
import math
import os
import time
from typing import List, Optional, Tuple

import tensorflow as tf
import tensorflow_transform as tft
from tfx_bsl.public import tfxio

from vaetfx.models import autoencoder
from vaetfx.models import export
from vaetfx.models import vae as vae_lib
from vaetfx.models.hparams import TrainingHparams
from vaetfx.shared import features

READ_BATCH_SIZE = 1024
EVAL_BATCH_SIZE = 256
RECONSTRUCTION_IMAGES = 8


@dataclasses.dataclass(frozen=True)
class EpochStats:
  """One epoch; `seconds` is training wall time only, evaluation is `eval_seconds`.

  The objective is the model's metric in nats per image: the ELBO for a VAE,
  the reconstruction log-likelihood for the autoencoder (TrainingLoop.SCORE_KEY).
  `cpu_seconds` is the process's CPU time while training: on a shared machine
  images per CPU-second still compare when wall times do not.
  """
  epoch: int
  train_objective: float
  eval_objective: float
  images_per_second: float
  seconds: float
  eval_seconds: float
  cpu_seconds: float


@dataclasses.dataclass(frozen=True)
class Start:
  """How training started: from `base_model`'s weights (warm), or from fresh ones and why not."""
  warm: bool
  base_model: str
  reason: str  # Why the start is cold; empty when warm.

  def describe(self) -> str:
    if self.warm:
      return f'warm start from {self.base_model}'
    return f'cold start: {self.reason}'


def distribution_strategy() -> tf.distribute.Strategy:
  """MirroredStrategy over several GPUs, OneDeviceStrategy on one, the default strategy on CPU."""
  gpus = tf.config.list_logical_devices('GPU')
  if len(gpus) > 1:
    return tf.distribute.MirroredStrategy([gpu.name for gpu in gpus])
  if gpus:
    return tf.distribute.OneDeviceStrategy('/gpu:0')
  return tf.distribute.get_strategy()


def describe_strategy(strategy: tf.distribute.Strategy) -> str:
  devices = (tf.config.list_logical_devices('GPU') or tf.config.list_logical_devices('CPU'))
  return (f'{type(strategy).__name__}, {strategy.num_replicas_in_sync} replica(s), '
          f'devices {", ".join(device.name for device in devices)}')


def read_pixels(data_accessor, file_patterns: List[str], schema) -> tf.data.Dataset:
  """Transform's `pixels` [784] one example at a time, in file order (shuffling comes later)."""
  options = tfxio.TensorFlowDatasetOptions(
      batch_size=READ_BATCH_SIZE, num_epochs=1, shuffle=False)
  batches = data_accessor.tf_dataset_factory(file_patterns, options, schema)
  return batches.map(lambda batch: batch[features.PIXELS_KEY]).unbatch()


def cache_and_count(pixels: tf.data.Dataset) -> Tuple[tf.data.Dataset, int]:
  """Caches the examples in memory; counting them fills the cache before the first timed epoch."""
  cached = pixels.cache()
  return cached, int(cached.reduce(0, lambda count, _: count + 1))


def epoch_step_counts(num_examples: int, batch_size: int, epochs: int,
                      train_steps: Optional[int] = None) -> List[int]:
  """Batches per epoch: `epochs` whole passes, or, when positive, `train_steps` batches in all.

  TFX sets fn_args.train_steps from TrainArgs.num_steps (None when unset), so a
  pipeline that asks for a step count gets exactly that many; the last epoch is
  then cut short.
  """
  steps_per_epoch = math.ceil(num_examples / batch_size)
  if not train_steps or train_steps < 0:
    return [steps_per_epoch] * epochs
  whole_epochs, rest = divmod(train_steps, steps_per_epoch)
  return [steps_per_epoch] * whole_epochs + ([rest] if rest else [])


def learning_rate(hparams: TrainingHparams, total_steps: int):
  """The peak rate, decayed to 0 along a half cosine over `total_steps` unless constant.

  Annealing lets the last epochs settle into a minimum that a constant rate keeps
  jumping around (README: Trainer benchmark has the measured curves).
  """
  if hparams.learning_rate_schedule == 'constant':
    return hparams.learning_rate
  return tf.keras.optimizers.schedules.CosineDecay(hparams.learning_rate, max(total_steps, 1))


def make_optimizer(hparams: TrainingHparams, total_steps: int) -> tf.keras.optimizers.Optimizer:
  """Adam; under mixed precision wrapped in dynamic loss scaling, starting at 2^7.

  The loss sums 784 per-pixel terms, so its float16 gradients are large: from
  Keras' default 2^15 the scale halves through eight overflowing (skipped)
  steps before settling at 2^7 (measured), so it starts there.
  """
  optimizer = tf.keras.optimizers.Adam(learning_rate(hparams, total_steps))
  if hparams.mixed_precision:
    return tf.keras.mixed_precision.LossScaleOptimizer(optimizer, initial_scale=2 ** 7)
  return optimizer


class TrainingLoop:
  """A VAE, its optimizer and data, and the compiled epoch functions, under one strategy.

  Subclasses train another model on the same loop (AutoencoderLoop) by
  overriding the model, its per-example objective and loss, and its export.

  The train split is cached in memory once, then reshuffled (seeded) each epoch,
  batched and prefetched; the eval split is cached and batched in file order,
  whole and as the evenly spaced subset scored after each epoch.
  Keras draws initial weights from the global generators, so construction seeds
  Python's, NumPy's and TensorFlow's with hparams.seed. `step_counts` are the
  batches of each epoch (epoch_step_counts with `train_steps`).

  With `base_model`, a serving SavedModel of an earlier run, and hparams.warm_start,
  training starts from its weights when they fit this model (same kind, same
  architecture and latent size) and runs hparams.warm_start_epochs epochs with a
  fresh optimizer; otherwise it starts cold with hparams.epochs. `start` says which, and
  why a start is cold.
  """

  # The objective's key in history.json and TensorBoard (features.SCORE_NAMES: its words).
  SCORE_KEY = features.ELBO_KEY
  # Where the exported SavedModel keeps the weights, which a warm start reads back.
  WEIGHTS = export.VaeServingModule.WEIGHTS

  def __init__(self, hparams: TrainingHparams, train_pixels: tf.data.Dataset,
               eval_pixels: tf.data.Dataset, strategy: Optional[tf.distribute.Strategy] = None,
               train_steps: Optional[int] = None, base_model: Optional[str] = None):
    self.hparams = hparams
    self.strategy = strategy or distribution_strategy()
    tf.keras.utils.set_random_seed(hparams.seed)
    train_pixels, self.num_train_examples = cache_and_count(train_pixels)
    eval_pixels, self.num_eval_examples = cache_and_count(eval_pixels)
    with self.strategy.scope():
      self.model = self._build_model()
    self.start = self._warm_start(base_model)
    self.step_counts = epoch_step_counts(
        self.num_train_examples, hparams.batch_size,
        hparams.warm_start_epochs if self.start.warm else hparams.epochs, train_steps)
    self.train_batches = (train_pixels
                          .shuffle(self.num_train_examples, seed=hparams.seed)
                          .batch(hparams.batch_size)
                          .prefetch(tf.data.AUTOTUNE))
    self.eval_batches = self._eval_batches(eval_pixels)
    monitor_stride = max(1, self.num_eval_examples // (hparams.monitor_examples or 1))
    monitor_pixels = eval_pixels.shard(monitor_stride, 0) if hparams.monitor_examples else eval_pixels
    self.monitor_batches = self._eval_batches(monitor_pixels.take(hparams.monitor_examples or -1))
    self.num_monitor_examples = min(self.num_eval_examples, hparams.monitor_examples
                                    or self.num_eval_examples)
    self.reconstruction_inputs = next(iter(eval_pixels.batch(RECONSTRUCTION_IMAGES)))
    with self.strategy.scope():
      self.optimizer = make_optimizer(hparams, sum(self.step_counts))
      # Slots made now, not in the first traced call, which would then be traced twice.
      self.optimizer.build(self.model.trainable_variables)
    self.epochs_done = 0
    # Autograph is for the loop over batches only: converting the steps would also
    # transpile all of tf_keras they call, a minute of tracing for nothing. (The
    # steps are bound positionally: bound as a keyword, autograph converted them.)
    train_step = tf.autograph.experimental.do_not_convert(self._train_step)
    if hparams.xla:
      train_step = tf.function(train_step, jit_compile=True, autograph=False)
    eval_step = tf.autograph.experimental.do_not_convert(self._eval_step)
    self._train_epoch = tf.function(functools.partial(self._sum_over, train_step))
    self._evaluate = tf.function(functools.partial(self._sum_over, eval_step))

  def _warm_start(self, base_model: Optional[str]) -> 'Start':
    """Loads the base model's weights (a serving SavedModel: export.restore_weights) when
    warm starting is on and they fit; otherwise keeps the fresh weights and says why."""
    if not self.hparams.warm_start:
      return Start(False, base_model or '', 'warm starting is off (--no-warm-start)')
    if not base_model or not tf.io.gfile.exists(base_model):
      return Start(False, '', 'no base model to start from')
    try:
      export.restore_weights(self.model, base_model, self.WEIGHTS)
    except export.WeightsDoNotFit as e:
      return Start(False, base_model, str(e))
    return Start(True, base_model, '')

  def _eval_batches(self, pixels: tf.data.Dataset):
    return self.strategy.experimental_distribute_dataset(
        pixels.batch(EVAL_BATCH_SIZE).prefetch(tf.data.AUTOTUNE))

  def _build_model(self) -> vae_lib.VAE:
    """The VAE, with the noise of its training steps and of its deterministic held-out ELBO."""
    self.noise = tf.random.Generator.from_seed(self.hparams.seed)
    self.eval_noise = tf.constant(
        vae_lib.eval_noise(self.hparams.eval_samples, self.hparams.latent_dim))
    return self.hparams.kind.build(self.hparams)

  def _objective_and_loss(self, pixels: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    """Per image: a single-sample ELBO estimate, and the (beta-weighted) loss."""
    noise = self.noise.normal([tf.shape(pixels)[0], self.hparams.latent_dim])
    log_likelihood, kl = vae_lib.elbo_terms(self.model, pixels, noise, self.hparams.estimator)
    return log_likelihood - kl, self.hparams.beta * kl - log_likelihood

  def _heldout_objective(self, pixels: tf.Tensor) -> tf.Tensor:
    mean, logvar = self.model.encode(pixels)
    return vae_lib.fixed_noise_elbo(self.model.decode, pixels, mean, logvar, self.eval_noise)

  def _reconstruction_logits(self, pixels: tf.Tensor) -> tf.Tensor:
    mean, _ = self.model.encode(pixels)
    return self.model.decode(mean)

  def export(self, tf_transform_output: tft.TFTransformOutput, export_dir: str) -> str:
    return export.export_serving_model(self.model, self.hparams, tf_transform_output, export_dir)

  def _train_step(self, pixels: tf.Tensor) -> tf.Tensor:
    """One replica's update; returns [sum of the objective, number of images]."""
    with tf.GradientTape() as tape:
      objective, loss = self._objective_and_loss(pixels)
      loss = tf.nn.compute_average_loss(loss)
      if self.hparams.mixed_precision:
        loss = self.optimizer.get_scaled_loss(loss)
    variables = self.model.trainable_variables
    gradients = tape.gradient(loss, variables)
    if self.hparams.mixed_precision:
      gradients = self.optimizer.get_unscaled_gradients(gradients)
    self.optimizer.apply_gradients(zip(gradients, variables))
    return _sum_and_count(objective)

  def _eval_step(self, pixels: tf.Tensor) -> tf.Tensor:
    return _sum_and_count(self._heldout_objective(pixels))

  def _sum_over(self, step, batches) -> tf.Tensor:
    """Runs `step` on every batch in a graph loop and adds up its [sum, count] across replicas."""
    totals = tf.zeros([2])
    # iter(): a while-loop over the iterator in this graph. Over the bare dataset,
    # autograph would build a Dataset.reduce and run the step inside tf.data.
    for batch in iter(batches):
      per_replica = self.strategy.run(step, args=(batch,))
      totals += self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
    return totals

  def train_epoch(self, steps: int) -> Tuple[float, int]:
    """Trains on the next `steps` batches; returns (mean train objective, images seen)."""
    batches = self.strategy.experimental_distribute_dataset(self.train_batches.take(steps))
    total, images = self._train_epoch(batches).numpy()
    return float(total / images), int(images)

  def evaluate(self, whole_split: bool = True) -> float:
    """Mean held-out objective (the VAE's fixed-noise ELBO) over the whole eval split, or over
    the per-epoch monitor subset."""
    batches = self.eval_batches if whole_split else self.monitor_batches
    total, images = self._evaluate(batches).numpy()
    return float(total / images)

  def run_epoch(self, steps: int) -> EpochStats:
    """Trains one epoch of `steps` batches, then scores the monitor subset."""
    start, cpu_start = time.perf_counter(), time.process_time()
    train_objective, images = self.train_epoch(steps)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    eval_objective = self.evaluate(whole_split=False)
    self.epochs_done += 1
    return EpochStats(epoch=self.epochs_done, train_objective=train_objective,
                      eval_objective=eval_objective,
                      images_per_second=images / seconds, seconds=seconds,
                      eval_seconds=time.perf_counter() - start - seconds, cpu_seconds=cpu_seconds)

  def reconstruction_pairs(self) -> tf.Tensor:
    """[8, 28, 56, 1]: eval images beside their reconstructions (a VAE's from the latent mean)."""
    reconstructions = tf.sigmoid(self._reconstruction_logits(self.reconstruction_inputs))
    pairs = tf.stack([self.reconstruction_inputs, reconstructions], axis=1)
    size = features.IMAGE_SIZE
    rows_side_by_side = tf.transpose(tf.reshape(pairs, [-1, 2, size, size]), [0, 2, 1, 3])
    return tf.reshape(rows_side_by_side, [-1, size, 2 * size, 1])


class AutoencoderLoop(TrainingLoop):
  """Seed 003's autoencoder on the same loop: its objective, loss and held-out metric are the
  reconstruction log-likelihood (models/autoencoder.py); nothing is random but the shuffling."""

  SCORE_KEY = features.RECONSTRUCTION_LOG_LIKELIHOOD_KEY
  WEIGHTS = export.AutoencoderServingModule.WEIGHTS

  def _build_model(self) -> autoencoder.Autoencoder:
    return self.hparams.kind.build(self.hparams)

  def _objective_and_loss(self, pixels: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
    log_likelihood = self._heldout_objective(pixels)
    return log_likelihood, -log_likelihood

  def _heldout_objective(self, pixels: tf.Tensor) -> tf.Tensor:
    return autoencoder.reconstruction_log_likelihood(self.model, pixels)

  def _reconstruction_logits(self, pixels: tf.Tensor) -> tf.Tensor:
    return self.model.decode(self.model.encode(pixels))

  def export(self, tf_transform_output: tft.TFTransformOutput, export_dir: str) -> str:
    return export.export_autoencoder(self.model, self.hparams, tf_transform_output, export_dir)


def _sum_and_count(values: tf.Tensor) -> tf.Tensor:
  return tf.stack([tf.reduce_sum(values), tf.cast(tf.size(values), tf.float32)])


class TrainingLog:
  """Reports each epoch three ways: a printed line, TensorBoard summaries and history.json.

  Progress is printed, not logged with absl: an in-process Transform leaves absl
  silenced for the rest of the process.
  """

  def __init__(self, model_run_dir: str, loop: TrainingLoop, total_epochs: int,
               load_seconds: float):
    self.history_path = os.path.join(model_run_dir, 'history.json')
    self.total_epochs = total_epochs
    self.score_key = loop.SCORE_KEY
    self.train_writer = tf.summary.create_file_writer(os.path.join(model_run_dir, 'train'))
    self.eval_writer = tf.summary.create_file_writer(os.path.join(model_run_dir, 'eval'))
    self.history = {
        'hparams': loop.hparams.to_custom_config(),
        'strategy': describe_strategy(loop.strategy),
        'num_train_examples': loop.num_train_examples,
        'num_eval_examples': loop.num_eval_examples,
        'monitor_examples': loop.num_monitor_examples,
        'start': dataclasses.asdict(loop.start),
        'load_seconds': load_seconds,
        'epochs': [],
    }
    print(f'[trainer] {self.history["strategy"]}; {loop.num_train_examples} train and '
          f'{loop.num_eval_examples} eval images', flush=True)
    print(f'[trainer] {loop.start.describe()}; {total_epochs} epoch(s)', flush=True)

  def record(self, stats: EpochStats, reconstruction_pairs: tf.Tensor):
    key, label = self.score_key, features.SCORE_NAMES[self.score_key]
    print(f'[trainer] epoch {stats.epoch}/{self.total_epochs}  train {label} '
          f'{stats.train_objective:.2f}  eval {label} {stats.eval_objective:.2f}  '
          f'{stats.images_per_second:.0f} images/s  '
          f'{stats.seconds:.1f} s (+{stats.eval_seconds:.1f} s eval)', flush=True)
    with self.train_writer.as_default(step=stats.epoch):
      tf.summary.scalar(key, stats.train_objective)
      tf.summary.scalar('images_per_second', stats.images_per_second)
    with self.eval_writer.as_default(step=stats.epoch):
      tf.summary.scalar(key, stats.eval_objective)
      tf.summary.image('reconstructions', reconstruction_pairs, max_outputs=RECONSTRUCTION_IMAGES)
    record = dataclasses.asdict(stats)
    record[f'train_{key}'] = record.pop('train_objective')
    record[f'eval_{key}'] = record.pop('eval_objective')
    self.history['epochs'].append(record)
    self._write()

  def record_final(self, eval_objective: float, seconds: float):
    """The whole eval split's objective after the last epoch."""
    key, label = self.score_key, features.SCORE_NAMES[self.score_key]
    print(f'[trainer] held-out {label} on all {self.history["num_eval_examples"]} eval images: '
          f'{eval_objective:.2f}  ({seconds:.1f} s)', flush=True)
    with self.eval_writer.as_default(step=len(self.history['epochs'])):
      tf.summary.scalar(f'final_{key}', eval_objective)
    self.history.update({f'final_eval_{key}': eval_objective, 'final_eval_seconds': seconds})
    self._write()

  def record_export(self, export_dir: str, seconds: float):
    print(f'[trainer] exported the serving model to {export_dir} ({seconds:.1f} s)', flush=True)
    self.history['export_seconds'] = seconds
    self._write()

  def _write(self):
    with tf.io.gfile.GFile(self.history_path, 'w') as f:
      json.dump(self.history, f, indent=1)


def run_fn(fn_args):
  """TFX Trainer entry point: trains the model fn_args.custom_config describes, then exports it.

  Hyperparameters: TrainingHparams.from_custom_config(fn_args.custom_config).
  Epochs are passes over the whole train split unless TrainArgs.num_steps is
  set (see epoch_step_counts). EvalArgs.num_steps is ignored: the held-out ELBO
  always covers the whole eval split, so epochs and runs compare.
  fn_args.base_model (the Trainer's `base_model` input: the served model,
  components/warm_start_base) is the SavedModel a warm start begins from; see
  TrainingLoop.
  """
  start = time.perf_counter()
  hparams = TrainingHparams.from_custom_config(fn_args.custom_config or {})
  tf_transform_output = tft.TFTransformOutput(
      fn_args.transform_graph_path or fn_args.transform_output)
  schema = tf_transform_output.transformed_metadata.schema
  loop = hparams.kind.load('training_loop')(
      hparams, read_pixels(fn_args.data_accessor, fn_args.train_files, schema),
      read_pixels(fn_args.data_accessor, fn_args.eval_files, schema),
      train_steps=fn_args.train_steps, base_model=fn_args.base_model)
  log = TrainingLog(fn_args.model_run_dir, loop, len(loop.step_counts),
                    time.perf_counter() - start)
  for steps in loop.step_counts:
    log.record(loop.run_epoch(steps), loop.reconstruction_pairs())
  start = time.perf_counter()
  log.record_final(loop.evaluate(), time.perf_counter() - start)
  start = time.perf_counter()
  loop.export(tf_transform_output, fn_args.serving_model_dir)
  log.record_export(fn_args.serving_model_dir, time.perf_counter() - start)
