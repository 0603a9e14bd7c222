"""The serving folder is the truth: two pipelines, each with its own name and output folder, push
into one serving folder; each run gates against what TF Serving serves there, whoever pushed it.

The runs go in order, each building on the last (module fixtures and test order).
"""
import dataclasses
import io
import json
import os
import shutil

import pytest
from ml_metadata.metadata_store import metadata_store

from vaetfx import cli
from vaetfx.models.hparams import TrainingHparams
from vaetfx.pipeline import configs, local_runner, run_summary
from vaetfx.shared import serving_folder

TINY = TrainingHparams(latent_dim=2, epochs=3, batch_size=32, eval_samples=1)
REPORT = configs.ReportConfig(likelihood_examples=0)


def _run(config):
  return local_runner.run(config, out=io.StringIO())


def _model_dir(config):
  return os.path.join(config.serving_dir, config.push.model_name)


def _served(config):
  return serving_folder.served_version(serving_folder.list_versions(_model_dir(config)))


@pytest.fixture(scope='module')
def serving_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('serving'))


@pytest.fixture(scope='module')
def pipeline_a(tmp_path_factory, mnist_idx_dir, serving_dir):
  config = configs.PipelineConfig(
      data_dir=mnist_idx_dir, output_dir=str(tmp_path_factory.mktemp('a')), pipeline_name='a',
      hparams=TINY, gate=configs.GateConfig(score_floor=-1000.0, score_tolerance=2.0),
      push=configs.PushConfig(serving_dir=serving_dir), report=REPORT)
  summary = _run(config)
  assert summary.blessed and summary.pushed_on_disk and summary.baseline_version == -1
  return config, summary


def _pipeline_b(pipeline_a, output_dir, **training):
  config, _ = pipeline_a
  return dataclasses.replace(config, pipeline_name='b', output_dir=output_dir,
                             hparams=dataclasses.replace(TINY, **training))


def test_another_pipeline_with_a_worse_model_is_refused_against_the_served_one(
    pipeline_a, tmp_path_factory):
  """Pipeline b has its own name, output folder and metadata.db: no ML Metadata of a's."""
  config_a, summary_a = pipeline_a
  served = _served(config_a)
  worse = _pipeline_b(pipeline_a, str(tmp_path_factory.mktemp('b_worse')), epochs=1,
                      learning_rate=1e-9)
  summary = _run(worse)
  assert summary.baseline_version == served.number
  assert summary.baseline_score == pytest.approx(summary_a.candidate_score, abs=1e-3)
  assert summary.blessed is False and not summary.pushed_path
  assert _served(config_a).number == served.number
  assert f'(version {served.number}, served)' in run_summary.format_summary(summary)


@pytest.fixture(scope='module')
def better_b(pipeline_a, tmp_path_factory):
  config = _pipeline_b(pipeline_a, str(tmp_path_factory.mktemp('b_better')), epochs=12)
  return config, _run(config)


def test_another_pipeline_with_a_better_model_is_pushed_and_both_tell_their_story(
    pipeline_a, better_b, capsys):
  config_a, summary_a = pipeline_a
  config_b, summary_b = better_b
  assert summary_b.blessed and summary_b.pushed_on_disk
  assert summary_b.baseline_version == int(summary_a.pushed_version)
  served = _served(config_a)
  assert served.number == int(summary_b.pushed_version)
  assert served.provenance['pipeline_name'] == 'b'
  assert served.provenance['replaced'] == int(summary_a.pushed_version)
  assert served.provenance['scores']['candidate'] == pytest.approx(summary_b.candidate_score)
  assert served.provenance['scores']['baseline'] == pytest.approx(summary_a.candidate_score,
                                                                  abs=1e-3)
  assert served.provenance['model']['hparams']['epochs'] == 12
  assert served.provenance['data']['root'] == config_b.data_dir
  assert len(served.provenance['code_fingerprint']) == 64
  assert cli.main(['models', '--serving-dir', config_a.serving_dir, '--json']) == 0
  rows = {row['version']: row for row in json.loads(capsys.readouterr().out)}
  assert rows[int(summary_a.pushed_version)]['pipeline'] == 'a'
  assert rows[served.number]['pipeline'] == 'b' and rows[served.number]['served']


def test_push_a_then_b_then_a_again_serves_a(pipeline_a, better_b):
  """A's unchanged pipeline, gated loosely, re-publishes A's model as the newest version."""
  config_a, summary_a = pipeline_a
  _, summary_b = better_b
  loose = dataclasses.replace(config_a, gate=dataclasses.replace(config_a.gate,
                                                                 score_tolerance=1000.0))
  summary = _run(loose)
  assert summary.baseline_version == int(summary_b.pushed_version)
  assert summary.pushed_on_disk and not summary.already_served
  assert summary.rollback_of == int(summary_a.pushed_version)
  served = _served(config_a)
  assert served.number == int(summary.pushed_version) > int(summary_b.pushed_version)
  assert serving_folder.same_content(served.path, os.path.join(
      _model_dir(config_a), summary_a.pushed_version))
  assert 'a rollback' in run_summary.format_summary(summary)


def test_rollback_serves_b_again_and_the_next_run_gates_against_it(pipeline_a, better_b):
  config_a, _ = pipeline_a
  _, summary_b = better_b
  assert cli.main(['rollback', '--serving-dir', config_a.serving_dir, '--to',
                   summary_b.pushed_version]) == 0
  served = _served(config_a)
  assert served.provenance['rollback_of'] == int(summary_b.pushed_version)
  summary = _run(config_a)  # a's model against the served B: refused, B stays.
  assert summary.baseline_version == served.number
  assert summary.blessed is False and _served(config_a).number == served.number


def test_a_removed_serving_folder_is_published_again_not_reported(pipeline_a, better_b):
  """The serving folder vanishes between two unchanged runs: the re-run sees nothing served,
  gates on the floor, and publishes b's model again; the summary matches the disk."""
  config_b, summary_b = better_b
  shutil.rmtree(config_b.serving_dir)
  summary = _run(config_b)
  runs = {run.component: run for run in summary.runs}
  assert runs['Trainer'].cached and not runs['AtomicPusher'].cached
  assert summary.baseline_version == -1 and summary.baseline_score is None
  assert summary.pushed_on_disk and not summary.already_served
  assert _served(config_b).number == int(summary.pushed_version)
  rerun = _run(config_b)  # Unchanged again: now the push is cached and still true.
  # The served version is a new one (b's model, published again): what reads it runs again.
  assert {run.component for run in rerun.runs if not run.cached} <= {
      'ServedModelImporter', 'DriftCheck', 'Evaluator', 'AtomicPusher'}
  assert rerun.pushed_version == summary.pushed_version and rerun.pushed_on_disk


def test_a_version_deleted_after_a_cached_push_is_reported_missing_then_republished(better_b):
  config_b, _ = better_b
  summary = _run(config_b)
  shutil.rmtree(summary.pushed_path)
  store = metadata_store.MetadataStore(local_runner.metadata_connection(config_b))
  text = run_summary.format_summary(run_summary.summarize(store, summary.runs))
  assert 'Pushed: MISSING' in text
  again = _run(config_b)
  assert again.pushed_on_disk and os.path.isdir(again.pushed_path)


def test_a_served_model_pushed_by_hand_stops_the_run_unless_floor_is_asked(pipeline_a, capsys):
  config_a, _ = pipeline_a
  model_dir = _model_dir(config_a)
  by_hand = os.path.join(model_dir, str(_served(config_a).number + 1))
  shutil.copytree(_served(config_a).path, by_hand)
  os.remove(os.path.join(by_hand, serving_folder.PROVENANCE_FILE))
  args = ['run', '--data-dir', config_a.data_dir, '--output-dir', config_a.output_dir,
          '--pipeline-name', 'a', '--serving-dir', config_a.serving_dir]
  assert cli.main(args) == 2
  err = capsys.readouterr().err
  assert 'was not pushed by vaetfx' in err and '--on-incomparable-baseline floor' in err
  summary = _run(dataclasses.replace(config_a, gate=dataclasses.replace(
      config_a.gate, on_incomparable_baseline='floor')))
  assert summary.baseline_version == -1 and 'was not pushed by vaetfx' in (
      summary.baseline_not_compared)
  assert summary.pushed_on_disk and os.path.isdir(by_hand)
  assert any('was not pushed by vaetfx' in line for line in summary.foreign_versions)
