"""`vaetfx score` on Beam with a model run_fn really exported (tests/model_fixtures.py).

Images unlike the training data (inverted digits, noise) must score clearly
below real held-out digits, each row must hold the score of the image it names,
and a serving folder resolves to its newest version.
"""
import contextlib
import csv
import io
import os

import numpy as np
import pytest
import tensorflow as tf

from tests import artifacts, synthetic_mnist
from tests.components import test_anomaly_scorer
from vaetfx import cli, flags
from vaetfx.components.mnist_example_gen import executor as example_gen_executor
from vaetfx.models import export
from vaetfx.pipeline import batch_scoring
from vaetfx.shared import features

REAL, INVERTED, NOISE = 100, 20, 20
# Measured with the tiny model (2 epochs on 200 drawn digits): real digits -409 to -481 nats,
# noise -550 to -585, inverted digits -644 to -834. Demand a gap of at least this.
MARGIN_NATS = 30


@pytest.fixture(scope='module')
def mixed_data_dir(tmp_path_factory, mnist_splits):
  """The held-out digits, then inverted copies of some, then uniform noise, as t10k IDX files."""
  images, labels = mnist_splits['eval']
  rng = np.random.default_rng(0)
  noise = rng.integers(0, 256, size=(NOISE, 28, 28), dtype=np.uint8)
  mixed = np.concatenate([images[:REAL], 255 - images[:INVERTED], noise])
  mixed_labels = np.concatenate([labels[:REAL], labels[:INVERTED], np.zeros(NOISE, np.uint8)])
  directory = str(tmp_path_factory.mktemp('mixed'))
  images_name, labels_name = synthetic_mnist.IDX_NAMES['eval']
  synthetic_mnist.write_file(os.path.join(directory, images_name),
                             synthetic_mnist.idx_bytes(mixed), compress=True)
  synthetic_mnist.write_file(os.path.join(directory, labels_name),
                             synthetic_mnist.idx_bytes(mixed_labels), compress=False)
  return directory, mixed


@pytest.fixture(scope='module')
def serving_dir(tmp_path_factory, exported_model_dir):
  """<serving>/vae with versions 3 and 20 (the model) and a staging folder the Pusher leaves."""
  model_dir = tmp_path_factory.mktemp('serving') / 'vae'
  os.makedirs(model_dir / '.staging-21')
  for version in ('3', '20'):
    os.symlink(exported_model_dir, model_dir / version)
  return str(model_dir)


@pytest.fixture(scope='module')
def scored(tmp_path_factory, mixed_data_dir, serving_dir):
  """`vaetfx score` on the mixed images: (exit status, the CSV's rows, what it printed)."""
  data_dir, _ = mixed_data_dir
  output = str(tmp_path_factory.mktemp('scores') / 'scores.csv')
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    status = cli.main(['score', '--data-dir', data_dir, '--model-dir', serving_dir,
                       '--output', output])
  with open(output, newline='') as f:
    rows = list(csv.DictReader(f))
  return status, rows, printed.getvalue()


def test_out_of_distribution_images_score_clearly_below_real_digits(scored):
  status, rows, _ = scored
  assert status == flags.EXIT_OK
  elbo = {int(row['index']): float(row['elbo']) for row in rows}
  real = np.array([elbo[i] for i in range(REAL)])
  unlike = np.array([elbo[i] for i in range(REAL, REAL + INVERTED + NOISE)])
  assert unlike.max() < real.min() - MARGIN_NATS, (real.min(), unlike.max())
  assert {int(row['index']) for row in rows[:INVERTED + NOISE]} == set(
      range(REAL, REAL + INVERTED + NOISE))


def test_rows_are_ranked_worst_first_and_hold_each_images_own_score(scored, mixed_data_dir,
                                                                    exported_model_dir):
  _, rows, _ = scored
  _, images = mixed_data_dir
  assert [row['rank'] for row in rows] == [str(rank) for rank in range(1, len(images) + 1)]
  assert {row['split'] for row in rows} == {'eval'}
  scores = [float(row['elbo']) for row in rows]
  assert scores == sorted(scores)
  by_index = np.array([float(row['elbo']) for row in sorted(rows, key=lambda r: int(r['index']))])
  direct = export.load_exported_model(exported_model_dir).reconstruct(images)['elbo']
  np.testing.assert_allclose(by_index, direct, rtol=1e-4, atol=1e-2)


def test_the_pipelines_scorer_gives_each_image_the_score_vaetfx_score_gives_it(
    scored, mixed_data_dir, exported_model_dir, tmp_path):
  """The same images as ExampleGen writes them, through the pipeline's AnomalyScorer."""
  _, rows, _ = scored
  _, images = mixed_data_dir
  examples_dir = tmp_path / 'examples'
  os.makedirs(examples_dir / 'Split-eval')
  example_gen_executor.write_examples(
      str(examples_dir / 'Split-eval' / example_gen_executor.FILE_NAME), images,
      np.array([int(row['label']) for row in sorted(rows, key=lambda r: int(r['index']))]))
  output = test_anomaly_scorer.score_split(str(examples_dir), exported_model_dir,
                                           str(tmp_path / 'scored'), 'elbo')
  by_image = {}
  for example in artifacts.read_examples(output.uri, features.EVAL_SPLIT):
    image = bytes(np.array(example.features.feature['image'].int64_list.value, np.uint8))
    by_image[image] = example.features.feature['elbo'].float_list.value[0]
  csv_scores = {int(row['index']): float(row['elbo']) for row in rows}
  assert len(csv_scores) == len(images)
  for index, image in enumerate(images):
    assert round(by_image[image.tobytes()], 4) == pytest.approx(csv_scores[index], abs=1e-4)


def test_progress_line_and_summary_name_the_newest_version(scored, serving_dir):
  _, _, printed = scored
  lines = printed.splitlines()
  assert lines[0].startswith(f'vaetfx score: scoring {REAL + INVERTED + NOISE} images (eval ')
  newest = os.path.join(serving_dir, '20')
  assert f'with {newest} on Beam (DirectRunner, in_memory)' in lines[0]
  assert lines[1].startswith(f'Scored {REAL + INVERTED + NOISE} images in ')
  assert 'worst first' in lines[1]
  assert lines[2].startswith('ELBO (nats per image, low = unusual): median ')
  assert lines[3].startswith('Lowest 5: eval #')
  assert lines[4].startswith('Median per digit: 0: ')


def test_a_model_without_the_examples_signature_is_bad_input(tmp_path, mixed_data_dir, capsys):
  module = tf.Module()
  module.double = tf.function(lambda x: {'y': 2 * x},
                              input_signature=[tf.TensorSpec([None], tf.float32)])
  tf.saved_model.save(module, str(tmp_path / 'model'), signatures={'double': module.double})
  status = cli.main(['score', '--data-dir', mixed_data_dir[0], '--model-dir',
                     str(tmp_path / 'model'), '--output', str(tmp_path / 'out' / 'scores.csv')])
  assert status == flags.EXIT_BAD_INPUT
  assert capsys.readouterr().err == (
      f'vaetfx score: error: --model-dir {tmp_path / "model"}: the model has no '
      "'from_examples' signature (it has ['double']); export it with vaetfx's Trainer\n")
  assert not os.path.exists(tmp_path / 'out')


def test_csv_ties_keep_split_and_index_order():
  text = batch_scoring.format_csv([(('eval', 2, 1), -5.0), (('eval', 1, 7), -5.0),
                                   (('train', 0, 3), -9.0)])
  assert text.splitlines() == ['rank,split,index,label,elbo', '1,train,0,3,-9.0000',
                               '2,eval,1,7,-5.0000', '3,eval,2,1,-5.0000']


def test_an_autoencoder_is_scored_by_its_reconstruction_log_likelihood(
    tmp_path, mixed_data_dir, trained_autoencoder, capsys):
  data_dir, images = mixed_data_dir
  output = str(tmp_path / 'scores.csv')
  assert cli.main(['score', '--data-dir', data_dir, '--model-dir',
                   trained_autoencoder.serving_model_dir, '--output', output]) == flags.EXIT_OK
  with open(output, newline='') as f:
    reader = csv.DictReader(f)
    rows = sorted(reader, key=lambda row: int(row['index']))
  assert reader.fieldnames == ['rank', 'split', 'index', 'label', 'reconstruction_log_likelihood']
  scores = np.array([float(row['reconstruction_log_likelihood']) for row in rows])
  direct = export.load_exported_model(trained_autoencoder.serving_model_dir).reconstruct(images)
  np.testing.assert_allclose(scores, direct['reconstruction_log_likelihood'], rtol=1e-4, atol=1e-2)
  assert scores[REAL:].max() < scores[:REAL].min(), (scores[:REAL].min(), scores[REAL:].max())
  printed = capsys.readouterr().out.splitlines()
  assert printed[2].startswith('reconstruction log-likelihood (nats per image, low = unusual): ')
  assert 'ELBO' not in '\n'.join(printed)
