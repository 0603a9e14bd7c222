"""VaeReport's executor on models the Trainer's run_fn really exported (tests/model_fixtures.py)."""
import dataclasses
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tfx.dsl.io import fileio
from tfx.types import channel, standard_artifacts
from tfx.utils import import_utils

from tests import model_fixtures
from vaetfx.components.vae_report import executor
from vaetfx.components.vae_report.component import VaeReport, VaeReportArtifact
from vaetfx.shared.examples import to_example

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
ALWAYS_DRAWN = (executor.RECONSTRUCTIONS_FILE, executor.PRIOR_SAMPLES_FILE,
                executor.LATENT_SPACE_FILE, executor.ELBO_CURVES_FILE,
                executor.LIKELIHOOD_PLOT_FILE)
LIKELIHOOD_EXAMPLES = 30
HISTORY = {'strategy': 'default', 'epochs': [  # models/trainer.py's TrainingLog, abridged.
    {'epoch': 1, 'train_elbo': -210.0, 'eval_elbo': -190.0, 'seconds': 1.0},
    {'epoch': 2, 'train_elbo': -150.0, 'eval_elbo': -145.0, 'seconds': 1.0},
    {'epoch': 3, 'train_elbo': -130.0, 'eval_elbo': -131.0, 'seconds': 1.0}]}


@pytest.fixture(scope='module')
def trained_model_5d(tmp_path_factory, transformed_mnist):
  """The tiny model of conftest's trained_model, with a 5-D latent space."""
  return model_fixtures.train_tiny_model(
      transformed_mnist, str(tmp_path_factory.mktemp('trained_model_5d')),
      dataclasses.replace(model_fixtures.TINY_HPARAMS, latent_dim=5))


def _artifact(artifact_class, uri):
  artifact = artifact_class()
  artifact.uri = uri
  return artifact


def _run(tmp_path, trained: model_fixtures.TrainedModel, transformed: model_fixtures.TransformedMnist,
         model_run_dir=None, likelihood_examples=LIKELIHOOD_EXAMPLES, report_uri=None,
         scored_examples_dir=None):
  """The executor on the Trainer's outputs: the Model uri holds Format-Serving/."""
  report = _artifact(VaeReportArtifact, report_uri or str(tmp_path / 'report'))
  inputs = {
      'model': [_artifact(standard_artifacts.Model, os.path.dirname(trained.serving_model_dir))],
      'model_run': [_artifact(standard_artifacts.ModelRun, model_run_dir or trained.model_run_dir)],
      'examples': [model_fixtures.examples_artifact(transformed.raw_examples_dir)]}
  if scored_examples_dir:
    inputs['scored_examples'] = [model_fixtures.examples_artifact(scored_examples_dir)]
  executor.Executor().Do(
      inputs, {'report': [report]},
      {executor.NUM_EXAMPLES_KEY: 80, executor.SEED_KEY: 0,
       executor.LIKELIHOOD_EXAMPLES_KEY: likelihood_examples, executor.LIKELIHOOD_SAMPLES_KEY: 10,
       executor.MODEL_KIND_KEY: trained.hparams.model})
  return report.uri


def _write_scored_examples(directory, mnist_splits, scores, feature='elbo'):
  """BulkInferrer's output_examples for the eval split: each digit's features plus `elbo` (or
  `feature`)."""
  images, labels = mnist_splits['eval']
  split_dir = os.path.join(directory, 'Split-eval')
  os.makedirs(split_dir)
  with tf.io.TFRecordWriter(os.path.join(split_dir, 'examples-00000-of-00001.gz'),
                            options='GZIP') as writer:
    for image, label, score in zip(images, labels, scores):
      example = tf.train.Example.FromString(to_example(image, label))
      example.features.feature[feature].float_list.value.append(score)
      writer.write(example.SerializeToString())
  return directory


def _pngs(report_dir):
  return sorted(name for name in os.listdir(report_dir) if name.endswith('.png'))


def _assert_valid_png(path):
  with open(path, 'rb') as f:
    assert f.read(len(PNG_SIGNATURE)) == PNG_SIGNATURE
  with Image.open(path) as image:
    image.verify()
  with Image.open(path) as image:
    assert image.width > 100 and image.height > 100


def _index(report_dir):
  with open(os.path.join(report_dir, executor.INDEX_FILE)) as f:
    return f.read()


def test_2d_latent_report_has_every_picture_and_the_manifold(tmp_path, trained_model,
                                                             transformed_mnist):
  report_dir = _run(tmp_path, trained_model, transformed_mnist)
  assert _pngs(report_dir) == sorted(ALWAYS_DRAWN + (executor.MANIFOLD_FILE,))
  for name in _pngs(report_dir):
    _assert_valid_png(os.path.join(report_dir, name))
    assert f'<img src="{name}"' in _index(report_dir)
  assert 'mean ELBO of 80 held-out digits' in _index(report_dir)
  assert 'held-out ELBO after epoch 2</th>' in _index(report_dir)
  assert f'IWAE bound K=10 ({LIKELIHOOD_EXAMPLES} digits)' in _index(report_dir)
  assert 'anomaly score' not in _index(report_dir)  # No BulkInferrer scores given.


def test_log_likelihood_is_written_overall_and_by_digit(tmp_path, trained_model,
                                                        transformed_mnist, mnist_splits):
  report_dir = _run(tmp_path, trained_model, transformed_mnist)
  with open(os.path.join(report_dir, executor.LIKELIHOOD_FILE)) as f:
    result = json.load(f)
  labels = mnist_splits['eval'][1][:LIKELIHOOD_EXAMPLES]
  assert result['num_examples'] == LIKELIHOOD_EXAMPLES
  assert result['samples'] == [1, 10]
  assert result['overall']['1'] < result['overall']['10'] < 0
  assert result['digit_counts'] == {str(d): int(np.sum(labels == d)) for d in np.unique(labels)}
  weighted = sum(result['by_digit'][d]['10'] * n for d, n in result['digit_counts'].items())
  assert weighted / LIKELIHOOD_EXAMPLES == pytest.approx(result['overall']['10'], abs=1e-3)
  assert set(result['standard_error']) == {'1', '10'}
  for count, error in result['standard_error'].items():
    assert 0 < error < abs(result['overall'][count])
    assert (f'IWAE bound K={count} ({LIKELIHOOD_EXAMPLES} digits) ± standard error over the '
            f'digits</th><td>{result["overall"][count]:.2f} ± {error:.2f}</td>') in _index(report_dir)


def test_no_likelihood_examples_leaves_out_only_the_likelihood(tmp_path, trained_model,
                                                               transformed_mnist):
  report_dir = _run(tmp_path, trained_model, transformed_mnist, likelihood_examples=0)
  assert executor.LIKELIHOOD_PLOT_FILE not in _pngs(report_dir)
  assert not os.path.exists(os.path.join(report_dir, executor.LIKELIHOOD_FILE))
  assert executor.ELBO_CURVES_FILE in _pngs(report_dir)


def test_bulk_inferrer_scores_add_the_lowest_scoring_digits_and_the_scores_per_digit(
    tmp_path, trained_model, transformed_mnist, mnist_splits):
  labels = mnist_splits['eval'][1]
  scores = -100.0 - np.arange(len(labels), dtype=np.float32)  # the last digit scores lowest
  scored_dir = _write_scored_examples(str(tmp_path / 'scored'), mnist_splits, scores)
  report_dir = _run(tmp_path, trained_model, transformed_mnist, scored_examples_dir=scored_dir)
  anomaly_pngs = (executor.LOWEST_SCORING_FILE, executor.SCORES_BY_DIGIT_FILE)
  assert _pngs(report_dir) == sorted(ALWAYS_DRAWN + (executor.MANIFOLD_FILE,) + anomaly_pngs)
  for name in anomaly_pngs:
    _assert_valid_png(os.path.join(report_dir, name))
  page = _index(report_dir)
  assert f'The 64 lowest-scoring of {len(labels)} held-out digits' in page
  assert f'<th>lowest anomaly score (ELBO)</th><td>{scores.min():.2f}</td>' in page
  scored = executor.read_scored_digits(os.path.join(scored_dir, 'Split-eval'))
  np.testing.assert_array_equal(scored.labels, labels)
  np.testing.assert_array_equal(scored.images, mnist_splits['eval'][0])
  np.testing.assert_array_equal(scored.scores, scores)


def test_higher_latent_dim_is_projected_and_has_no_manifold(tmp_path, trained_model_5d,
                                                            transformed_mnist):
  report_dir = _run(tmp_path, trained_model_5d, transformed_mnist)
  assert _pngs(report_dir) == sorted(ALWAYS_DRAWN)
  assert executor.MANIFOLD_FILE not in _index(report_dir)
  assert 'PCA of the 5-D latent means' in _index(report_dir)


@pytest.fixture(scope='module')
def trained_autoencoder_5d(tmp_path_factory, transformed_mnist):
  """The tiny autoencoder of conftest's trained_autoencoder, with a 5-D code."""
  return model_fixtures.train_tiny_model(
      transformed_mnist, str(tmp_path_factory.mktemp('trained_autoencoder_5d')),
      dataclasses.replace(model_fixtures.TINY_AUTOENCODER_HPARAMS, latent_dim=5, epochs=1))


AUTOENCODER_PNGS = (executor.RECONSTRUCTIONS_FILE, executor.CODE_SPACE_FILE,
                    executor.CODE_GRID_FILE, executor.ELBO_CURVES_FILE)


def test_autoencoder_report_draws_its_code_space_and_names_its_metric(
    tmp_path, trained_autoencoder, transformed_mnist, mnist_splits):
  labels = mnist_splits['eval'][1]
  scores = -100.0 - np.arange(len(labels), dtype=np.float32)
  scored_dir = _write_scored_examples(str(tmp_path / 'scored'), mnist_splits, scores,
                                      'reconstruction_log_likelihood')
  report_dir = _run(tmp_path, trained_autoencoder, transformed_mnist,
                    scored_examples_dir=scored_dir)
  assert _pngs(report_dir) == sorted(AUTOENCODER_PNGS + (executor.LOWEST_SCORING_FILE,
                                                         executor.SCORES_BY_DIGIT_FILE))
  for name in _pngs(report_dir):
    _assert_valid_png(os.path.join(report_dir, name))
  assert not os.path.exists(os.path.join(report_dir, executor.LIKELIHOOD_FILE))
  page = _index(report_dir)
  assert '<h1>Autoencoder report</h1>' in page and 'ELBO' not in page
  assert 'mean reconstruction log-likelihood of 80 held-out digits' in page
  assert 'held-out reconstruction log-likelihood after epoch 2</th>' in page
  assert '<th>not drawn</th><td>prior samples and the IWAE log-likelihood bound' in page
  assert ('<th>lowest anomaly score (reconstruction log-likelihood)</th>'
          f'<td>{scores.min():.2f}') in page
  assert 'grid of the code space, spanning the 5%..95% quantiles of the 80 held-out codes' in page


def test_autoencoder_with_a_higher_dimensional_code_is_drawn_on_its_principal_plane(
    tmp_path, trained_autoencoder_5d, transformed_mnist):
  report_dir = _run(tmp_path, trained_autoencoder_5d, transformed_mnist)
  assert _pngs(report_dir) == sorted(AUTOENCODER_PNGS)
  page = _index(report_dir)
  assert 'Code space of the autoencoder: 80 held-out digits (PCA of the 5-D codes)' in page
  assert 'grid of the plane of the codes&#x27; first two PCs' in page


def test_latent_plane_maps_its_points_back_to_latents():
  latents = np.random.default_rng(1).normal(size=(100, 5)) * np.array([3.0, 0.1, 1.0, 0.2, 2.0])
  plane = executor.latent_plane(latents, 'code')
  points = plane.project(latents)
  np.testing.assert_allclose(plane.project(plane.latents(points)), points, atol=1e-4)
  assert plane.axis_labels[0].startswith('PC1 (')
  two_d = executor.latent_plane(latents[:, :2], 'code')
  assert two_d.axis_labels == ('z1 (code)', 'z2 (code)')
  np.testing.assert_array_equal(two_d.project(latents[:, :2]), latents[:, :2])


def test_missing_history_leaves_out_only_the_curves(tmp_path, trained_model, transformed_mnist):
  os.makedirs(tmp_path / 'empty_model_run')
  report_dir = _run(tmp_path, trained_model, transformed_mnist, str(tmp_path / 'empty_model_run'))
  assert executor.ELBO_CURVES_FILE not in _pngs(report_dir)
  assert executor.MANIFOLD_FILE in _pngs(report_dir)


def test_report_reaches_a_non_local_uri_through_fileio(tmp_path, trained_model, transformed_mnist,
                                                       ram_fileio_root, monkeypatch):
  """On Kubeflow the report and the model run are gs://; here ram://, which no local call reaches."""
  model_run = f'{ram_fileio_root}/model_run'
  fileio.makedirs(model_run)
  fileio.copy(os.path.join(trained_model.model_run_dir, executor.HISTORY_FILE),
              f'{model_run}/{executor.HISTORY_FILE}')
  monkeypatch.chdir(tmp_path)  # A local file call would write under ./ram:/...
  report_uri = _run(tmp_path, trained_model, transformed_mnist, model_run,
                    report_uri=f'{ram_fileio_root}/report')
  pngs = sorted(name for name in fileio.listdir(report_uri) if name.endswith('.png'))
  assert pngs == sorted(ALWAYS_DRAWN + (executor.MANIFOLD_FILE,))
  for name in pngs:
    with fileio.open(f'{report_uri}/{name}', 'rb') as f, Image.open(io.BytesIO(f.read())) as image:
      assert image.format == 'PNG' and image.width > 100
  with fileio.open(f'{report_uri}/{executor.INDEX_FILE}', 'r') as f:
    assert 'held-out ELBO after epoch 2</th>' in f.read()
  assert os.listdir(tmp_path) == []


def test_elbo_history_reads_the_trainers_epochs(tmp_path):
  path = tmp_path / 'history.json'
  path.write_text(json.dumps(HISTORY))
  assert executor.read_elbo_history(str(path)) == {
      'training': [-210.0, -150.0, -130.0], 'held-out': [-190.0, -145.0, -131.0]}
  path.write_text(json.dumps({'epochs': []}))
  assert not executor.read_elbo_history(str(path))
  assert not executor.read_elbo_history(str(tmp_path / 'absent.json'))


def test_projection_keeps_2d_means_and_orders_components_by_variance():
  rng = np.random.default_rng(0)
  means_2d = rng.normal(size=(50, 2))
  np.testing.assert_array_equal(executor.project_to_2d(means_2d)[0], means_2d)
  stretched = rng.normal(size=(200, 4)) * np.array([0.1, 5.0, 0.2, 1.0])
  points, axis_labels = executor.project_to_2d(stretched)
  assert points.shape == (200, 2)
  assert np.var(points[:, 0]) > np.var(points[:, 1]) > np.var(stretched[:, 0])
  assert axis_labels[0].startswith('PC1 (9')


def test_manifold_grid_is_row_major_with_z2_decreasing():
  values, latents = executor.manifold_grid(3)
  np.testing.assert_allclose(values, [-1.645, 0.0, 1.645], atol=1e-3)
  np.testing.assert_allclose(latents[:3, 1], [values[2]] * 3)
  np.testing.assert_allclose(latents[:3, 0], values)


def test_component_takes_trainer_and_example_gen_channels():
  report = VaeReport(model=channel.Channel(type=standard_artifacts.Model),
                     model_run=channel.Channel(type=standard_artifacts.ModelRun),
                     examples=channel.Channel(type=standard_artifacts.Examples),
                     model_kind='mlp', likelihood_examples=200, likelihood_samples=1000)
  assert report.outputs['report'].type is VaeReportArtifact
  assert report.exec_properties == {'num_examples': 2000, 'seed': 0, 'code_fingerprint': None,
                                    'likelihood_examples': 200, 'likelihood_samples': 1000,
                                    'model_kind': 'mlp'}
  with pytest.raises(ValueError, match="model 'vae': expected one of conv, mlp, ae"):
    VaeReport(model=channel.Channel(type=standard_artifacts.Model),
              model_run=channel.Channel(type=standard_artifacts.ModelRun),
              examples=channel.Channel(type=standard_artifacts.Examples),
              model_kind='vae', likelihood_examples=200, likelihood_samples=1000)
  with pytest.raises(ValueError, match='power of ten'):
    VaeReport(model=channel.Channel(type=standard_artifacts.Model),
              model_run=channel.Channel(type=standard_artifacts.ModelRun),
              examples=channel.Channel(type=standard_artifacts.Examples),
              model_kind='conv', likelihood_examples=200, likelihood_samples=500)
  assert 'scored_examples' not in report.inputs


def test_component_rejects_other_artifact_types():
  with pytest.raises(TypeError):
    VaeReport(model=channel.Channel(type=standard_artifacts.Examples),
              model_run=channel.Channel(type=standard_artifacts.ModelRun),
              examples=channel.Channel(type=standard_artifacts.Examples),
              model_kind='conv', likelihood_examples=1, likelihood_samples=1)


def test_kubeflow_entrypoint_can_import_the_artifact_class_from_its_type_name():
  """TFX's Kubeflow V2 entrypoint types a task's custom artifacts by importing their type name."""
  assert import_utils.import_class_by_path(VaeReportArtifact.TYPE_NAME) is VaeReportArtifact
