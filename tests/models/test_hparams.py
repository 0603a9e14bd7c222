"""TrainingHparams: the custom_config round trip the CLI, the pipeline and run_fn rely on."""
import dataclasses
import json

import pytest

from vaetfx.models.hparams import TrainingHparams


def test_custom_config_round_trips_through_json():
  hparams = TrainingHparams(model='mlp', latent_dim=2, learning_rate=3e-4, mixed_precision=True)
  config = json.loads(json.dumps(hparams.to_custom_config()))
  assert TrainingHparams.from_custom_config(config) == hparams


def test_missing_keys_take_defaults_and_ints_become_floats():
  hparams = TrainingHparams.from_custom_config({'learning_rate': 1, 'beta': 2})
  assert hparams.learning_rate == 1.0 and isinstance(hparams.learning_rate, float)
  assert hparams.beta == 2.0 and hparams.latent_dim == TrainingHparams().latent_dim


@pytest.mark.parametrize('config, error', [
    ({'latent_dims': 2}, ValueError),
    ({'model': 'resnet'}, ValueError),
    ({'estimator': 'exact'}, ValueError),
    ({'batch_size': 0}, ValueError),
    ({'learning_rate': -1.0}, ValueError),
    ({'epochs': '3'}, TypeError),
    ({'xla': 1}, TypeError),
])
def test_bad_config_is_rejected(config, error):
  with pytest.raises(error):
    TrainingHparams.from_custom_config(config)


def test_every_field_has_help_for_the_cli():
  for field in dataclasses.fields(TrainingHparams):
    assert field.metadata.get('help'), field.name
