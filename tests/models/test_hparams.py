"""TrainingHparams: the custom_config round trip the CLI, the pipeline and run_fn rely on."""
import argparse
import dataclasses
import json
import re

import pytest

from vaetfx import flags
from vaetfx.models.hparams import TrainingHparams
from vaetfx.pipeline import configs


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


RANGED_FIELDS = [(cls, field) for cls in (TrainingHparams, configs.ReportConfig)
                 for field in dataclasses.fields(cls) if 'range' in field.metadata]
OUT_OF_RANGE = {'latent_dim': 0, 'epochs': 0, 'batch_size': -3, 'learning_rate': 0.0,
                'beta': -0.5, 'seed': 2**31, 'eval_samples': 0, 'monitor_examples': -1,
                'warm_start_epochs': 0,
                'likelihood_examples': -1, 'likelihood_samples': 300}


@pytest.mark.parametrize('cls, field', RANGED_FIELDS, ids=[f.name for _, f in RANGED_FIELDS])
def test_a_field_and_its_flag_refuse_the_same_value_in_the_same_words(cls, field):
  value = OUT_OF_RANGE[field.name]
  words = field.metadata['range'].describe()
  with pytest.raises(ValueError, match=f'{field.name}={value}: expected {re.escape(words)}'):
    cls(**{field.name: value})
  with pytest.raises(argparse.ArgumentTypeError, match=f"'{value}': expected {re.escape(words)}"):
    flags.ranged(field.metadata['range'])(str(value))
  assert cls(**{field.name: flags.ranged(field.metadata['range'])(str(field.default or 1))})


def test_every_ranged_field_is_tried():
  assert {field.name for _, field in RANGED_FIELDS} == set(OUT_OF_RANGE)


def test_the_autoencoder_has_no_vae_settings_and_refuses_them():
  autoencoder = TrainingHparams(model='ae')
  assert (autoencoder.estimator, autoencoder.beta, autoencoder.eval_samples) == (None, None, None)
  assert TrainingHparams.from_custom_config(
      json.loads(json.dumps(autoencoder.to_custom_config()))) == autoencoder
  vae = TrainingHparams(model='mlp')
  assert (vae.estimator, vae.beta, vae.eval_samples) == ('analytic', 1.0, 2)
  with pytest.raises(ValueError, match=r'^beta \(--beta\): VAE settings, which --model ae has not'):
    TrainingHparams(model='ae', beta=1.0)
