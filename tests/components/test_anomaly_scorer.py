"""The AnomalyScorer's executor on ExampleGen's examples with a model run_fn really exported.

Every example must come back once, with its own features untouched and the
model's own score of it added; an autoencoder's under its own name.
"""
import gzip
import os
import shutil

import numpy as np
import pytest
from tfx.types import standard_artifacts, standard_component_specs

from tests import artifacts, model_fixtures
from vaetfx.components.anomaly_scorer import executor
from vaetfx.models import export
from vaetfx.shared import features


def score_split(examples_uri: str, serving_model_dir: str, output_uri: str, score_key: str,
                split: str = features.EVAL_SPLIT) -> standard_artifacts.Examples:
  """Runs the executor as TFX would; returns its output artifact."""
  model = standard_artifacts.Model()
  model.uri = os.path.dirname(serving_model_dir)  # Format-Serving/ is TFX's layout under it
  output = standard_artifacts.Examples()
  output.uri = output_uri
  executor.Executor().Do(
      {standard_component_specs.EXAMPLES_KEY: [model_fixtures.examples_artifact(examples_uri)],
       standard_component_specs.MODEL_KEY: [model]},
      {standard_component_specs.OUTPUT_EXAMPLES_KEY: [output]},
      {executor.SPLIT_KEY: split, executor.SCORE_KEY_KEY: score_key})
  return output


def _images_labels_scores(examples, score_key):
  images = np.array([example.features.feature[features.IMAGE_KEY].int64_list.value
                     for example in examples]).reshape(-1, 28, 28).astype(np.uint8)
  labels = [example.features.feature[features.LABEL_KEY].int64_list.value[0]
            for example in examples]
  scores = np.array([example.features.feature[score_key].float_list.value[0]
                     for example in examples])
  return images, labels, scores


@pytest.mark.parametrize('model_fixture', ['trained_model', 'trained_autoencoder'])
def test_each_example_keeps_its_features_and_gains_the_models_own_score(
    request, tmp_path, transformed_mnist, model_fixture):
  model_dir = request.getfixturevalue(model_fixture).serving_model_dir
  model = export.load_exported_model(model_dir)
  output = score_split(transformed_mnist.raw_examples_dir, model_dir, str(tmp_path / 'scored'),
                       model.score_key)
  assert output.split_names == '["eval"]'
  given = artifacts.read_examples(transformed_mnist.raw_examples_dir, features.EVAL_SPLIT)
  scored = artifacts.read_examples(output.uri, features.EVAL_SPLIT)
  assert sorted(example.features.feature[features.IMAGE_KEY].SerializeToString()
                for example in scored) == sorted(
      example.features.feature[features.IMAGE_KEY].SerializeToString() for example in given)
  assert all(set(example.features.feature) == {features.IMAGE_KEY, features.LABEL_KEY,
                                               model.score_key} for example in scored)
  images, labels, scores = _images_labels_scores(scored, model.score_key)
  direct = model.reconstruct(images)[model.score_key]
  np.testing.assert_allclose(scores, direct, rtol=1e-5, atol=1e-3)
  assert len(set(scores.tolist())) > 1, 'every example got one score'
  assert sorted(labels) == sorted(example.features.feature[features.LABEL_KEY].int64_list.value[0]
                                  for example in given)


def test_chunks_become_files_and_every_example_is_scored_once(
    monkeypatch, tmp_path, transformed_mnist, trained_model):
  monkeypatch.setattr(executor, 'CHUNK_SIZE', 7)
  output = score_split(transformed_mnist.raw_examples_dir, trained_model.serving_model_dir,
                       str(tmp_path / 'scored'), features.ELBO_KEY)
  given = artifacts.read_examples(transformed_mnist.raw_examples_dir, features.EVAL_SPLIT)
  files = os.listdir(os.path.join(output.uri, 'Split-eval'))
  assert len(files) == -(-len(given) // 7) > 1
  images, _, scores = _images_labels_scores(
      artifacts.read_examples(output.uri, features.EVAL_SPLIT), features.ELBO_KEY)
  assert len(images) == len(given)
  direct = export.load_exported_model(trained_model.serving_model_dir).reconstruct(images)
  np.testing.assert_allclose(scores, direct[features.ELBO_KEY], rtol=1e-5, atol=1e-3)


def test_a_split_the_examples_do_not_have_is_an_error(tmp_path, transformed_mnist, trained_model):
  with pytest.raises(ValueError, match='holdout'):
    score_split(transformed_mnist.raw_examples_dir, trained_model.serving_model_dir,
                str(tmp_path / 'scored'), features.ELBO_KEY, split='holdout')


def test_a_cut_example_file_fails_the_scorer_naming_it(tmp_path, transformed_mnist, trained_model):
  examples_dir = tmp_path / 'examples'
  shutil.copytree(transformed_mnist.raw_examples_dir, examples_dir)
  [name] = os.listdir(examples_dir / 'Split-eval')
  path = examples_dir / 'Split-eval' / name
  with gzip.open(path, 'rb') as f:
    data = f.read()
  with gzip.open(path, 'wb') as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(Exception, match=f'{name}: cut short'):
    score_split(str(examples_dir), trained_model.serving_model_dir, str(tmp_path / 'scored'),
                features.ELBO_KEY)
