"""The whole pipeline end to end on drawn digits, as TFX's MNIST end-to-end test does it:
every component runs once, a re-run recomputes no data or training work, a changed
hyperparameter re-trains, a gate that must fail pushes nothing, and bad input stops at ExampleGen.

The runs share one output folder and go in order, each building on the last.
"""
import dataclasses
import io
import os
from unittest import mock

import numpy as np
import portpicker
import pytest
import tensorflow as tf
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2
from PIL import Image

from tests import artifacts, synthetic_mnist
from tests.pipeline import test_code_fingerprint
from vaetfx import cli, flags
from vaetfx.components.anomaly_scorer import executor as anomaly_scorer_executor
from vaetfx.components.vae_report import executor as vae_report_executor
from vaetfx.models import score_metrics, export
from vaetfx.models.hparams import TrainingHparams
from vaetfx.pipeline import configs, local_runner, run_summary
from vaetfx.serving import client, server, warmup
from vaetfx.shared import mnist_files, serving_folder

Execution = metadata_store_pb2.Execution
SIGNATURES = {'serving_default', 'encode', 'decode', 'sample', 'from_examples'}
DATA_COMPONENTS = ('MnistExampleGen', 'StatisticsGen', 'SchemaGen', 'ExampleValidator', 'Transform')
TINY_TRAINING = TrainingHparams(latent_dim=2, epochs=3, batch_size=32, eval_samples=1)


def _store(config):
  return metadata_store.MetadataStore(local_runner.metadata_connection(config))


def _output_uri(store, component_id, type_name):
  """The latest artifact of `type_name` that `component_id` wrote (its URI names the component)."""
  uris = [a.uri for a in sorted(store.get_artifacts_by_type(type_name), key=lambda a: a.id)
          if f'{os.sep}{component_id}{os.sep}' in a.uri]
  return uris[-1]


def _versions(config):
  model_dir = os.path.join(config.serving_dir, config.push.model_name)
  return sorted(int(name) for name in os.listdir(model_dir) if name.isdigit())


def _run(config):
  out = io.StringIO()
  summary = local_runner.run(config, out=out)
  return summary, out.getvalue()


@pytest.fixture(scope='module')
def base_config(tmp_path_factory, mnist_idx_dir):
  return configs.PipelineConfig(
      data_dir=mnist_idx_dir, output_dir=str(tmp_path_factory.mktemp('pipeline')),
      hparams=TINY_TRAINING, gate=configs.GateConfig(score_floor=-1000.0, score_tolerance=2.0),
      report=configs.ReportConfig(likelihood_examples=20, likelihood_samples=10))


@pytest.fixture(scope='module')
def first_run(base_config):
  return _run(base_config)


def test_every_component_runs_once_with_progress_lines(base_config, first_run):
  summary, printed = first_run
  component_ids = [c.id for c in local_runner.build_pipeline(base_config).components]
  assert [run.component for run in summary.runs] == component_ids
  assert not any(run.cached for run in summary.runs)
  executions = _store(base_config).get_executions()
  assert len(executions) == len(component_ids)
  assert all(e.last_known_state == Execution.COMPLETE for e in executions)
  for index, component_id in enumerate(component_ids, start=1):
    assert f'[{index}/{len(component_ids)}] {component_id}' in printed


def test_first_model_is_blessed_and_pushed_with_every_signature(base_config, first_run):
  summary, _ = first_run
  assert summary.blessed and summary.baseline_score is None
  assert -1000.0 < summary.candidate_score < 0
  [version] = _versions(base_config)
  assert summary.pushed_path.rstrip('/').endswith(f'{base_config.push.model_name}/{version}')
  assert SIGNATURES <= set(tf.saved_model.load(summary.pushed_path).signatures)
  assert summary.infra_blessed and not summary.infra_failures
  assert os.path.exists(os.path.join(summary.pushed_path, warmup.WARMUP_FILE))


def test_summary_reports_the_log_likelihood_and_infra_validation(first_run):
  summary, _ = first_run
  assert summary.log_likelihood['num_examples'] == 20
  assert summary.log_likelihood['samples'] == [1, 10]
  text = run_summary.format_summary(summary)
  assert ('Held-out log-likelihood (IWAE bound, first 20 eval digits, nats per image, '
          '± standard error over the digits): K=1 ') in text
  assert 'Infra validation: BLESSED' in text


def test_report_pictures_are_pngs(first_run):
  summary, _ = first_run
  report_dir = os.path.dirname(summary.report_path)
  pngs = [name for name in os.listdir(report_dir) if name.endswith('.png')]
  assert {'reconstructions.png', 'prior_samples.png', 'latent_space.png', 'manifold.png',
          'elbo_curves.png', 'lowest_scoring.png', 'scores_by_digit.png'} <= set(pngs)
  for name in pngs:
    with Image.open(os.path.join(report_dir, name)) as image:
      assert image.format == 'PNG' and image.size[0] > 100
    assert name in open(summary.report_path).read()


def test_bulk_inferrer_scores_every_heldout_digit_with_the_exported_elbo(base_config, first_run,
                                                                       mnist_splits):
  summary, _ = first_run
  uri = _output_uri(_store(base_config), 'BulkInferrer', 'Examples')
  scored = vae_report_executor.read_scored_digits(os.path.join(uri, 'Split-eval'))
  images = mnist_splits['eval'][0]
  assert len(scored.scores) == len(images) and np.all(np.isfinite(scored.scores))
  direct = export.load_exported_model(summary.pushed_path).reconstruct(scored.images)['elbo']
  np.testing.assert_allclose(scored.scores, direct, rtol=1e-4, atol=1e-2)
  assert f'<td>{scored.scores.min():.2f}</td>' in open(summary.report_path).read()


def test_transformed_pixels_are_the_numpy_binarization(base_config, first_run, mnist_splits):
  store = _store(base_config)
  transformed = artifacts.read_examples(_output_uri(store, 'Transform', 'Examples'), 'eval')
  pixels = np.array([e.features.feature['pixels'].float_list.value for e in transformed])
  assert set(np.unique(pixels)) == {0.0, 1.0}
  images = mnist_splits['eval'][0].reshape(len(pixels), -1)
  expected = (images / 255.0 >= 0.5).astype(np.float32)
  # Beam does not keep record order: compare the images sorted the same way.
  def in_order(rows):
    return rows[np.lexsort(rows.T)]
  np.testing.assert_array_equal(in_order(pixels), in_order(expected))


def test_the_first_run_says_drift_was_not_checked_and_why(first_run):
  summary, _ = first_run
  assert summary.drift is not None and not summary.drift.checked and not summary.drift_stopped
  assert ('Data drift: not checked: nothing is served yet, so there is no previous data to '
          'compare with') in run_summary.format_summary(summary)
  assert not summary.drift.picture


def test_statistics_schema_and_anomalies_are_written(base_config, first_run):
  store = _store(base_config)
  assert os.path.exists(os.path.join(_output_uri(store, 'SchemaGen', 'Schema'), 'schema.pbtxt'))
  for component_id, type_name in (('StatisticsGen', 'ExampleStatistics'),
                                  ('ExampleValidator', 'ExampleAnomalies')):
    uri = _output_uri(store, component_id, type_name)
    assert {'Split-train', 'Split-eval'} <= set(os.listdir(uri))


def test_rerun_recomputes_no_data_or_training_and_pushes_nothing_new(base_config, first_run):
  """The Evaluator re-runs (it now has a baseline), and the Pusher finds its model served.
  So does the drift check, which now has a served model to compare with."""
  versions = _versions(base_config)
  summary, _ = _run(base_config)
  cached = {run.component for run in summary.runs if run.cached}
  assert {*DATA_COMPONENTS, 'WarmStartBase', 'Trainer', 'BulkInferrer', 'VaeReport',
          'ServingInfraValidator'} <= cached
  assert 'DriftCheck' not in cached
  assert summary.blessed and summary.already_served
  assert summary.pushed_version == str(versions[-1])
  assert _versions(base_config) == versions
  assert f'Pushed: nothing new; version {versions[-1]}, the served one, already holds' in (
      run_summary.format_summary(summary))
  # The drift check compared the data with itself, the served model's evaluation data.
  drift = summary.drift
  assert drift.checked and not drift.drifted and drift.scores_against['served_version'] == versions[-1]
  assert drift.label_l_infinity == 0 and drift.score_ks == 0
  assert 'Data drift: no drift (threshold 0.1); labels L-infinity 0.000' in (
      run_summary.format_summary(summary))
  with Image.open(drift.picture) as picture:
    assert picture.format == 'PNG'
  assert f'the served model\'s scores of both, as histograms: {drift.picture}' in (
      run_summary.format_summary(summary))


def test_drifted_data_with_on_drift_stop_ends_the_run_before_training(base_config, first_run,
                                                                      mnist_splits, tmp_path,
                                                                      capsys):
  """Inverted digits against the served model's: exit 3 before any Trainer execution, the
  distances in the summary, nothing pushed."""
  inverted = {split: (255 - images, labels) for split, (images, labels) in mnist_splits.items()}
  data_dir = synthetic_mnist.write_mnist_idx(str(tmp_path / 'inverted'), inverted)
  versions, trainings = _versions(base_config), _trainer_executions(base_config)
  status = cli.main(['run', '--data-dir', data_dir, '--output-dir', base_config.output_dir,
                     '--on-drift', 'stop', '--latent-dim', '2'])
  out = capsys.readouterr().out
  assert status == flags.EXIT_NOT_PUSHED
  assert _trainer_executions(base_config) == trainings and _versions(base_config) == versions
  [drift_line] = [line for line in out.splitlines() if line.startswith('Data drift: ')]
  assert drift_line.startswith('Data drift: DRIFTED: served model\'s ELBO (Kolmogorov-Smirnov) '
                               'above 0.1; labels L-infinity 0.000 against served version ')
  assert '; served model\'s ELBO KS 1.000, median ' in drift_line
  assert '  DriftCheck                     stopped' in out
  [picture] = [line.split(' as histograms: ')[1] for line in out.splitlines()
               if ' as histograms: ' in line]
  with Image.open(picture) as image:  # Kept, though TFX removes a failed execution's outputs.
    assert image.format == 'PNG'
  assert out.rstrip().endswith('Result: stopped before training: the data drifted (exit status 3).')


def test_a_code_edit_reruns_the_components_that_run_that_code(base_config, first_run, tmp_path):
  """An edit to models/vae.py re-trains and re-evaluates on cached data; the next,
  unchanged run recomputes no data or training and pushes nothing new."""
  with test_code_fingerprint.with_edited('vaetfx.models.vae', tmp_path):
    summary, _ = _run(base_config)
    runs = {run.component: run for run in summary.runs}
    assert all(runs[name].cached for name in DATA_COMPONENTS)
    assert not runs['Trainer'].cached and not runs['Evaluator'].cached
    assert not runs['BulkInferrer'].cached and not runs['VaeReport'].cached
    versions = _versions(base_config)
    rerun, _ = _run(base_config)
  cached = {run.component for run in rerun.runs if run.cached}
  assert {*DATA_COMPONENTS, 'Trainer', 'BulkInferrer', 'VaeReport'} <= cached
  assert _versions(base_config) == versions


def test_unreachable_floor_pushes_nothing(base_config, first_run):
  versions = _versions(base_config)
  config = dataclasses.replace(base_config, gate=configs.GateConfig(score_floor=0.0))
  summary, _ = _run(config)
  assert summary.blessed is False and not summary.pushed_path
  assert any(failure.startswith('mean_elbo over all digits is') and 'below the floor of 0.00'
             in failure for failure in summary.gate_failures)
  assert _versions(base_config) == versions
  tf.saved_model.load(os.path.join(base_config.serving_dir, 'vae', str(versions[-1])))


def test_changed_hyperparameter_retrains_and_an_untrained_candidate_loses(base_config, first_run):
  """A learning rate of 1e-9 re-trains (on cached data) into a model no better than its
  initialization, which the blessed baseline beats by far more than the tolerance."""
  versions = _versions(base_config)
  barely_trained = dataclasses.replace(TINY_TRAINING, epochs=1, learning_rate=1e-9)
  config = dataclasses.replace(base_config, hparams=barely_trained,
                               gate=configs.GateConfig(score_floor=-1e9, score_tolerance=2.0))
  summary, _ = _run(config)
  runs = {run.component: run for run in summary.runs}
  assert all(runs[name].cached for name in DATA_COMPONENTS)
  assert not runs['Trainer'].cached
  assert summary.blessed is False
  assert summary.candidate_score < summary.baseline_score - 2.0
  assert _versions(base_config) == versions


@pytest.mark.parametrize('failing, executor_class, seed', [
    ('VaeReport', vae_report_executor.Executor, 7),
    ('BulkInferrer', anomaly_scorer_executor.Executor, 8),
])
def test_a_component_after_the_push_failing_does_not_block_it(base_config, first_run, failing,
                                                             executor_class, seed):
  """The scorer and the report run after the Pusher; a failure is in the summary, and the
  report, which draws the scores, does not run after a failed scorer."""
  versions = _versions(base_config)
  config = dataclasses.replace(base_config, hparams=dataclasses.replace(TINY_TRAINING, seed=seed),
                               gate=configs.GateConfig(score_floor=-1000.0, score_tolerance=1000.0),
                               push=dataclasses.replace(base_config.push, keep_versions=10))
  with mock.patch.object(executor_class, 'Do', side_effect=RuntimeError('out of ink')):
    summary, printed = _run(config)
  assert summary.blessed and summary.pushed_version and not summary.already_served
  assert _versions(base_config) == sorted([*versions, int(summary.pushed_version)])
  # A new seed on the first run's data: WarmStartBase is cached from the run that found the
  # folder empty; the folder serves a model now, so that reason is stated as the past.
  assert summary.start.startswith('cold start: when this data first came, ')
  [failed_line] = [line for line in printed.splitlines() if 'FAILED after' in line]
  assert failing in failed_line and 'out of ink' in failed_line
  if failing == 'VaeReport':
    assert summary.report_error == 'RuntimeError: out of ink'
    assert 'Report: FAILED (RuntimeError: out of ink)' in run_summary.format_summary(summary)
  else:
    assert 'VaeReport' not in [run.component for run in summary.runs]


def test_the_first_run_trained_cold_as_nothing_was_served(first_run):
  summary, _ = first_run
  assert summary.start.startswith('cold start: ') and 'serves no model' in summary.start
  assert summary.start.endswith('(3 epochs)')
  assert 'Trainer: cold start: ' in run_summary.format_summary(summary)


def test_new_data_trains_warm_from_the_served_version_and_its_push_names_it(base_config,
                                                                           first_run, tmp_path):
  """New digits (another span, in effect) re-decide the base: the served version, whose weights
  the Trainer loads; the pushed version's provenance names it. --no-warm-start on the same data
  trains cold, and re-running the warm configuration recomputes no training."""
  served = _versions(base_config)[-1]
  new_data = synthetic_mnist.write_mnist_idx(str(tmp_path / 'new'),
                                             synthetic_mnist.make_splits(seed=24))
  warm = dataclasses.replace(
      base_config, data_dir=new_data,
      hparams=dataclasses.replace(TINY_TRAINING, warm_start_epochs=1),
      gate=configs.GateConfig(score_floor=-1e9, score_tolerance=1e9))
  summary, _ = _run(warm)
  runs = {run.component: run for run in summary.runs}
  assert not runs['WarmStartBase'].cached and not runs['Trainer'].cached
  assert summary.start == f'warm start from version {served} (1 epochs)'
  pushed = serving_folder.read_provenance(summary.pushed_path)
  assert pushed['warm_start'] == {'base_version': served, 'reason': ''}
  assert pushed['data']['input_fingerprint'] != serving_folder.read_provenance(
      os.path.join(base_config.serving_dir, 'vae', str(served)))['data']['input_fingerprint']

  rerun, _ = _run(warm)  # Now the served model is the one trained on this data.
  assert {'WarmStartBase', 'Trainer'} <= {run.component for run in rerun.runs if run.cached}
  assert rerun.start == (f'warm start from version {served}, as decided when this data first '
                         'came (1 epochs)')

  cold, _ = _run(dataclasses.replace(warm, hparams=dataclasses.replace(
      warm.hparams, warm_start=False)))
  assert cold.start == 'cold start: warm starting is off (--no-warm-start) (3 epochs)'


def test_bad_input_fails_at_example_gen_with_nothing_published(tmp_path, mnist_splits):
  data_dir = synthetic_mnist.write_mnist_idx(str(tmp_path / 'data'), mnist_splits)
  with open(os.path.join(data_dir, 'train-images-idx3-ubyte.gz'), 'wb') as f:
    f.write(b'')
  config = configs.PipelineConfig(data_dir=data_dir, output_dir=str(tmp_path / 'out'))
  with pytest.raises(mnist_files.MnistFormatError, match='train-images-idx3-ubyte.gz: the file is empty'):
    local_runner.run(config, out=io.StringIO())
  store = _store(config)
  [execution] = store.get_executions()
  assert execution.last_known_state == Execution.FAILED
  assert not [a for a in store.get_artifacts() if a.state == metadata_store_pb2.Artifact.LIVE]


AUTOENCODER_SIGNATURES = {'serving_default', 'encode', 'decode', 'from_examples'}
SEED_DIGITS = (1, 5, 6)


@pytest.fixture(scope='module')
def autoencoder_config(base_config):
  """Seed 003's run, `--model ae --digits 1,5,6 --latent-dim 2`, for one epoch, in the VAE
  runs' folder under its own pipeline and model names (its kind's, models/kinds.py)."""
  hparams = TrainingHparams(model='ae', latent_dim=2, epochs=1)
  return dataclasses.replace(
      base_config, pipeline_name=hparams.kind.pipeline_name, digits=SEED_DIGITS, hparams=hparams,
      push=dataclasses.replace(base_config.push, model_name=hparams.kind.serving_model_name))


@pytest.fixture(scope='module')
def autoencoder_run(autoencoder_config):
  return _run(autoencoder_config)


def test_the_seeds_autoencoder_is_gated_on_its_reconstruction_log_likelihood_and_pushed(
    autoencoder_config, autoencoder_run):
  summary, _ = autoencoder_run
  assert summary.blessed and summary.infra_blessed and summary.baseline_score is None
  assert summary.gate_metric == score_metrics.MEAN_RECONSTRUCTION_LOG_LIKELIHOOD
  assert -1000.0 < summary.candidate_score < 0
  text = run_summary.format_summary(summary)
  assert 'Held-out reconstruction log-likelihood: candidate' in text and 'ELBO' not in text
  assert 'Not computed or drawn: prior samples and the IWAE log-likelihood bound' in text
  [version] = _versions(autoencoder_config)
  assert summary.pushed_path.rstrip('/').endswith(f'ae/{version}')
  assert set(tf.saved_model.load(summary.pushed_path).signatures) == AUTOENCODER_SIGNATURES


def test_the_pushed_autoencoder_is_served(autoencoder_config, autoencoder_run, mnist_splits):
  summary, _ = autoencoder_run
  images, labels = mnist_splits['eval']
  digits = images[np.isin(labels, SEED_DIGITS)][:4]
  in_process = export.load_exported_model(summary.pushed_path)
  model_server = server.ModelServer(server.ServerConfig(
      model_dir=os.path.join(autoencoder_config.serving_dir, 'ae'),
      port=portpicker.pick_unused_port()))
  model_server.start()
  try:
    with client.ServingClient(model_server.address, 'ae') as serving:
      code, _ = serving.encode(digits)
      np.testing.assert_allclose(code, in_process.encode(digits)['latent'], atol=1e-4)
      np.testing.assert_allclose(serving.decode(code), in_process.decode(code), atol=1e-4)
      outputs = serving.reconstruct(digits)
      np.testing.assert_allclose(outputs['reconstruction_log_likelihood'],
                                 in_process.reconstruct(digits)['reconstruction_log_likelihood'],
                                 rtol=1e-4, atol=1e-2)
  finally:
    model_server.stop(grace=1)


def test_the_autoencoders_report_draws_its_code_space_and_scores(autoencoder_config,
                                                                  autoencoder_run):
  summary, _ = autoencoder_run
  report_dir = os.path.dirname(summary.report_path)
  pngs = {name for name in os.listdir(report_dir) if name.endswith('.png')}
  assert pngs == {'reconstructions.png', 'code_space.png', 'code_grid.png', 'elbo_curves.png',
                  'lowest_scoring.png', 'scores_by_digit.png'}
  page = open(summary.report_path).read()
  assert 'reconstruction log-likelihood' in page and 'ELBO' not in page
  scored = vae_report_executor.read_scored_digits(
      os.path.join(_output_uri(_store(autoencoder_config), 'BulkInferrer', 'Examples'),
                   'Split-eval'), 'reconstruction_log_likelihood')
  assert set(np.unique(scored.labels)) == set(SEED_DIGITS)


def test_a_vae_aimed_at_the_autoencoders_serving_folder_is_refused_before_training(
    autoencoder_config, autoencoder_run, capsys):
  """`vaetfx run` of a VAE with --model-name ae stops before any component runs: its push would
  switch the kind of model the clients of `ae` get."""
  executions = len(_store(autoencoder_config).get_executions())
  status = cli.main(['run', '--data-dir', autoencoder_config.data_dir, '--output-dir',
                     autoencoder_config.output_dir, '--model-name', 'ae'])
  assert status == flags.EXIT_BAD_INPUT
  err = capsys.readouterr().err
  assert err.startswith(f"vaetfx run: error: {os.path.join(autoencoder_config.serving_dir, 'ae')} "
                        'serves version ') and err.count('\n') == 1
  assert ('a --model ae scored by its reconstruction_log_likelihood; this run\'s model is scored '
          'by its elbo') in err and '--on-incomparable-baseline floor' in err
  assert len(_store(autoencoder_config).get_executions()) == executions


def test_the_importer_refuses_another_kind_at_run_time_too(autoencoder_config, autoencoder_run):
  """The folder can change between the command's check and the run: ServedModelImporter, the
  first component, checks again, so nothing trains (on Kubeflow this is the only check)."""
  config = dataclasses.replace(autoencoder_config, hparams=TINY_TRAINING,
                               pipeline_name='vae-into-ae')
  trainings = _trainer_executions(config)
  with pytest.raises(serving_folder.IncomparableServedModel, match='serves version'):
    _run(config)
  assert _trainer_executions(config) == trainings


def _trainer_executions(config):
  store = _store(config)
  types = {t.id: t.name for t in store.get_execution_types()}
  return sum(types[e.type_id].endswith('.Trainer') for e in store.get_executions())


def test_a_new_span_is_compared_with_the_previous_span_found_in_ml_metadata(tmp_path,
                                                                            mnist_splits):
  """Span 1 (digits 5-9) is trained and pushed; span 2 (digits 0-4) arrives and, with
  --on-drift stop, the drift check's driver finds span 1's Examples in ML Metadata, the labels
  drift from them, and the run stops before training."""
  data_dir = tmp_path / 'spans'
  for span, keep in ((1, lambda labels: labels >= 5), (2, lambda labels: labels < 5)):
    synthetic_mnist.write_mnist_idx(str(data_dir / f'span-{span}'), {
        split: (images[keep(labels)], labels[keep(labels)])
        for split, (images, labels) in mnist_splits.items()})
  config = configs.PipelineConfig(
      data_dir=str(data_dir), output_dir=str(tmp_path / 'out'), data_pattern=configs.SPAN_PATTERN,
      span=1, hparams=TINY_TRAINING, gate=configs.GateConfig(score_floor=-1000.0),
      report=configs.ReportConfig(likelihood_examples=0))
  first, _ = _run(config)
  assert first.pushed_path and not first.drift.checked
  trainings = _trainer_executions(config)
  second, printed = _run(dataclasses.replace(
      config, span=2, drift=configs.DriftConfig(on_drift='stop')))
  assert second.drift_stopped and _trainer_executions(config) == trainings
  drift = second.drift
  assert drift.labels_against['what'] == 'the previous span, 1'
  # The served model was trained on span 1 too: both signals compared with its Examples.
  assert drift.scores_against['span'] == 1
  assert drift.labels_against['examples_uri'] == drift.scores_against['examples_uri']
  assert drift.label_l_infinity == pytest.approx(0.2, abs=0.05)
  assert 'label distribution (L-infinity)' in drift.over_threshold
  assert 'against the previous span, 1' in run_summary.format_summary(second)
  assert 'DriftCheck                     stopped after' in printed
