"""The training loop on the synthetic digits, and run_fn end to end on a fake FnArgs."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from vaetfx.models import preprocessing, trainer
from vaetfx.models.hparams import TrainingHparams
from vaetfx.shared import features

TINY = TrainingHparams(latent_dim=2, batch_size=32, epochs=3, eval_samples=2)


def _pixels(images: np.ndarray) -> tf.data.Dataset:
  binarized = preprocessing.binarize(images.reshape(-1, features.NUM_PIXELS))
  return tf.data.Dataset.from_tensor_slices(binarized)


def _loop(mnist_splits, hparams, strategy=None) -> trainer.TrainingLoop:
  return trainer.TrainingLoop(hparams, _pixels(mnist_splits['train'][0]),
                              _pixels(mnist_splits['eval'][0]), strategy)


def _train(loop: trainer.TrainingLoop):
  return [loop.run_epoch(count) for count in loop.step_counts]


@pytest.mark.parametrize('hparams', [
    TINY,
    TrainingHparams(model='mlp', latent_dim=2, batch_size=32, epochs=3, eval_samples=2,
                    estimator='monte_carlo', beta=0.5),
    TrainingHparams(latent_dim=2, batch_size=32, epochs=3, eval_samples=2, xla=True),
], ids=['conv', 'mlp-monte-carlo-beta', 'xla'])
def test_a_few_epochs_raise_the_held_out_elbo(mnist_splits, hparams):
  loop = _loop(mnist_splits, hparams)
  before = loop.evaluate()
  epochs = _train(loop)
  assert [e.epoch for e in epochs] == [1, 2, 3]
  assert all(np.isfinite([e.train_objective, e.eval_objective]).all() for e in epochs)
  assert epochs[-1].eval_objective > before + 50, (before, epochs)
  assert epochs[-1].train_objective > epochs[0].train_objective
  assert sum(1 for _ in loop.train_batches) == 7  # 200 images, batches of 32


def test_mixed_precision_trains_on_cpu(mnist_splits):
  """Few and small batches: oneDNN's fused float16 MatMul+BiasAdd crawls on CPUs."""
  hparams = TrainingHparams(latent_dim=2, batch_size=8, epochs=2, eval_samples=1,
                            mixed_precision=True)
  images = mnist_splits['train'][0]
  loop = trainer.TrainingLoop(hparams, _pixels(images[:24]), _pixels(images[24:32]))
  assert isinstance(loop.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
  before = loop.evaluate()
  stats = _train(loop)[-1]
  assert np.isfinite(stats.train_objective) and stats.eval_objective > before + 1, (before, stats)
  assert loop.optimizer.loss_scale.numpy() >= 1


def test_epochs_reuse_one_trace(mnist_splits):
  loop = _loop(mnist_splits, TINY)
  loop.run_epoch(2)
  loop.run_epoch(3)
  assert loop._train_epoch.experimental_get_tracing_count() == 1  # pylint: disable=protected-access


TWO_REPLICAS = """
import json, os
os.environ['TF_USE_LEGACY_KERAS'] = '1'
import tensorflow as tf
cpu = tf.config.list_physical_devices('CPU')[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from tests import synthetic_mnist
from tests.models.test_trainer import TINY, _pixels, _train
from vaetfx.models import trainer, vae
images, _ = synthetic_mnist.draw_digits(200)
loop = trainer.TrainingLoop(TINY, _pixels(images), _pixels(images[:100]),
                            tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1']))
before = loop.evaluate()
after = _train(loop)[-1].eval_objective
exported = vae.float32_copy(loop.model, TINY).variables[0]
print(json.dumps([trainer.describe_strategy(loop.strategy), before, after,
                  type(exported).__name__]))
"""


def test_mirrored_strategy_trains_across_two_replicas():
  """The multi-GPU path (split batches, per-replica noise, all-reduce) on two logical CPUs.

  A subprocess, because logical devices must be set before TensorFlow starts.
  """
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  result = subprocess.run([sys.executable, '-c', TWO_REPLICAS], cwd=root, capture_output=True,
                          text=True, check=True)
  strategy, before, after, exported_type = json.loads(result.stdout.strip().splitlines()[-1])
  assert strategy.startswith('MirroredStrategy, 2 replica(s)')
  assert after > before + 50
  assert exported_type == 'ResourceVariable'


def test_training_is_reproducible_from_the_seed(mnist_splits):
  hparams = TrainingHparams(latent_dim=2, batch_size=32, epochs=1, eval_samples=2)
  first, second = (_train(_loop(mnist_splits, hparams))[0] for _ in range(2))
  assert first.eval_objective == pytest.approx(second.eval_objective, abs=1e-3)


def test_each_epoch_scores_an_evenly_spaced_subset_and_zero_means_the_whole_split(mnist_splits):
  subset = _loop(mnist_splits, dataclasses.replace(TINY, monitor_examples=10))
  whole = _loop(mnist_splits, dataclasses.replace(TINY, monitor_examples=0))
  assert (subset.num_monitor_examples, whole.num_monitor_examples) == (10, 100)
  [monitored] = [list(batch.numpy()) for batch in subset.monitor_batches]
  every_tenth = _pixels(mnist_splits['eval'][0]).shard(10, 0)
  assert np.array_equal(monitored, list(every_tenth.as_numpy_iterator()))
  assert whole.evaluate(whole_split=False) == whole.evaluate()
  assert subset.evaluate(whole_split=False) != subset.evaluate()


@pytest.mark.parametrize('schedule, last_rate', [('cosine', 1.1e-5), ('constant', 2e-3)])
def test_learning_rate_schedule_over_all_training_steps(mnist_splits, schedule, last_rate):
  """Cosine: 2e-3 at the first step, 2e-3 * (1 + cos(pi * 20 / 21)) / 2 at the 21st and last."""
  loop = _loop(mnist_splits, dataclasses.replace(TINY, learning_rate=2e-3,
                                                 learning_rate_schedule=schedule))
  assert sum(loop.step_counts) == 21
  _train(loop)
  assert loop.optimizer.iterations.numpy() == 21
  assert float(loop.optimizer.learning_rate) == pytest.approx(last_rate, rel=0.02)
  if schedule == 'cosine':
    rate = trainer.learning_rate(loop.hparams, 21)
    assert float(rate(0)) == pytest.approx(2e-3) and float(rate(10)) == pytest.approx(1.075e-3, rel=0.01)


@pytest.mark.parametrize('train_steps, expected', [
    (None, [7, 7, 7]), (0, [7, 7, 7]), (-1, [7, 7, 7]), (10, [7, 3]), (14, [7, 7]), (2, [2])])
def test_epoch_step_counts(train_steps, expected):
  assert trainer.epoch_step_counts(200, 32, 3, train_steps) == expected


def test_run_fn_writes_history_summaries_and_the_serving_model(trained_model):
  with open(os.path.join(trained_model.model_run_dir, 'history.json')) as f:
    history = json.load(f)
  assert history['hparams'] == trained_model.hparams.to_custom_config()
  assert (history['num_train_examples'], history['num_eval_examples']) == (200, 100)
  assert [e['epoch'] for e in history['epochs']] == [1, 2]
  assert history['monitor_examples'] == 100 and history['final_eval_elbo'] < 0
  for epoch in history['epochs']:
    assert epoch['train_elbo'] < 0 and epoch['eval_elbo'] < 0 and epoch['images_per_second'] > 0
  assert 'replica' in history['strategy']
  # The Trainer's time accounted for by part (bench/run_bench.py reads them): the loading before
  # the first epoch and the export are recorded beside the epochs and the final evaluation.
  assert history['load_seconds'] > 0 and history['export_seconds'] > 0
  for writer in ('train', 'eval'):
    assert tf.io.gfile.glob(os.path.join(trained_model.model_run_dir, writer, 'events.out.*'))
  assert tf.saved_model.contains_saved_model(trained_model.serving_model_dir)


# A warm start's first epoch is scored against the base model's last one: its weights are the
# base's, only the optimizer starts afresh (at the schedule's peak rate). The margin, in nats
# per image of the mean training ELBO, is what a fresh Adam's first steps may lose here.
WARM_FIRST_EPOCH_MARGIN = 25.0


def _base_history(trained_model):
  with open(os.path.join(trained_model.model_run_dir, 'history.json')) as f:
    return json.load(f)


def _warm_loop(mnist_splits, hparams, base_model, loop_class=trainer.TrainingLoop):
  return loop_class(hparams, _pixels(mnist_splits['train'][0]), _pixels(mnist_splits['eval'][0]),
                    base_model=base_model)


def test_a_warm_start_begins_at_the_base_models_loss_far_above_a_cold_one(mnist_splits,
                                                                            trained_model):
  """The base is run_fn's real export (the `trained_model` fixture, on these digits)."""
  base = _base_history(trained_model)
  hparams = dataclasses.replace(trained_model.hparams, warm_start_epochs=1)
  warm = _warm_loop(mnist_splits, hparams, trained_model.serving_model_dir)
  assert warm.start.warm and warm.start.reason == '', warm.start
  assert warm.step_counts == [7]  # warm_start_epochs, not the 2 cold epochs
  # The restored weights are the base's: the same held-out ELBO on the same images.
  assert warm.evaluate() == pytest.approx(base['final_eval_elbo'], abs=1e-3)
  cold = _loop(mnist_splits, dataclasses.replace(hparams, warm_start=False))
  warm_first, cold_first = _train(warm)[0], _train(cold)[0]
  base_last = base['epochs'][-1]['train_elbo']
  assert warm_first.train_objective > base_last - WARM_FIRST_EPOCH_MARGIN, (warm_first, base_last)
  assert cold_first.train_objective < base_last - 4 * WARM_FIRST_EPOCH_MARGIN, (cold_first,
                                                                               base_last)


def test_a_base_of_another_latent_size_or_kind_falls_back_to_a_cold_start(mnist_splits,
                                                                          trained_model):
  other_size = dataclasses.replace(trained_model.hparams, latent_dim=3)
  loop = _warm_loop(mnist_splits, other_size, trained_model.serving_model_dir)
  assert not loop.start.warm and 'latent size' in loop.start.reason, loop.start
  assert loop.step_counts == [7, 7]  # hparams.epochs: a cold start's
  fresh = _loop(mnist_splits, dataclasses.replace(other_size, warm_start=False))
  assert loop.evaluate() == pytest.approx(fresh.evaluate())  # the seed's fresh weights
  autoencoder = TrainingHparams(model='ae', latent_dim=2, epochs=1)
  loop = _warm_loop(mnist_splits, autoencoder, trained_model.serving_model_dir,
                    trainer.AutoencoderLoop)
  assert not loop.start.warm and 'another kind' in loop.start.reason, loop.start


@pytest.mark.parametrize('base', ['missing', 'not_a_model'])
def test_a_base_without_weights_falls_back_to_a_cold_start(mnist_splits, tmp_path, base):
  path = tmp_path / base
  if base == 'not_a_model':
    (path / 'variables').mkdir(parents=True)
    (path / 'variables' / 'variables.index').write_bytes(b'\0garbage')
  loop = _warm_loop(mnist_splits, dataclasses.replace(TINY, epochs=1), str(path))
  assert not loop.start.warm and loop.start.reason, loop.start


def test_no_warm_start_trains_from_scratch_with_a_base_given(mnist_splits, trained_model):
  hparams = dataclasses.replace(trained_model.hparams, warm_start=False)
  loop = _warm_loop(mnist_splits, hparams, trained_model.serving_model_dir)
  assert not loop.start.warm and '--no-warm-start' in loop.start.reason
  assert loop.evaluate() == pytest.approx(_loop(mnist_splits, hparams).evaluate())


def test_a_mixed_precision_loop_starts_from_the_float32_export(mnist_splits, trained_model):
  """The GPU path: float16 layers keep float32 variables, which take the exported values."""
  hparams = dataclasses.replace(trained_model.hparams, mixed_precision=True)
  images = mnist_splits['train'][0]
  loop = trainer.TrainingLoop(hparams, _pixels(images[:8]), _pixels(images[8:16]),
                              base_model=trained_model.serving_model_dir)
  float32 = _warm_loop(mnist_splits, trained_model.hparams, trained_model.serving_model_dir)
  assert loop.start.warm
  for mixed, plain in zip(loop.model.variables, float32.model.variables):
    assert mixed.dtype == tf.float32
    np.testing.assert_array_equal(mixed.numpy(), plain.numpy())


def test_run_fn_warm_starts_from_its_base_model_and_says_so(tmp_path, transformed_mnist,
                                                          trained_model):
  from tests import model_fixtures  # pylint: disable=g-import-not-at-top  (TFX)
  hparams = dataclasses.replace(trained_model.hparams, warm_start_epochs=1)
  warm = model_fixtures.train_tiny_model(transformed_mnist, str(tmp_path), hparams,
                                         base_model=trained_model.serving_model_dir)
  history = _base_history(warm)
  assert history['start'] == {'warm': True, 'base_model': trained_model.serving_model_dir,
                              'reason': ''}
  assert len(history['epochs']) == 1
  assert tf.saved_model.contains_saved_model(warm.serving_model_dir)
