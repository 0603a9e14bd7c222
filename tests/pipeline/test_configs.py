"""Settings: bad ones are refused where they are made, before any component runs; Beam's own
defaults are left out of the Beam flags, so TFX builds no sdist of itself per component."""
import json
import os

import pytest
from apache_beam.options import pipeline_options

from vaetfx import cli, flags
from vaetfx.models import kinds
from vaetfx.pipeline import code_fingerprint, configs, pipeline

BAD_MODEL_NAMES = ('', '.', '..', 'a/b', '../serving', 'with space')


@pytest.mark.parametrize('name', BAD_MODEL_NAMES)
def test_push_config_refuses_a_bad_model_name(name):
  with pytest.raises(ValueError, match='model name'):
    configs.PushConfig(model_name=name)


@pytest.mark.parametrize('name', ('vae', 'vae-mnist_2', 'v1.2'))
def test_push_config_takes_a_tf_serving_model_name(name):
  assert configs.PushConfig(model_name=name).model_name == name


def test_push_config_refuses_keeping_no_version():
  with pytest.raises(ValueError, match='keep_versions=0'):
    configs.PushConfig(keep_versions=0)


@pytest.mark.parametrize('field', ('score_tolerance', 'digit_tolerance'))
@pytest.mark.parametrize('value', (-1.0, float('nan')))
def test_gate_config_refuses_a_negative_tolerance(field, value):
  with pytest.raises(ValueError, match=field):
    configs.GateConfig(**{field: value})


def test_digit_tolerance_is_off_by_default():
  assert configs.GateConfig().digit_tolerance is None
  args = cli.build_parser().parse_args(['run'])
  assert args.digit_tolerance is None
  assert cli.build_parser().parse_args(['run', '--digit-tolerance', '1.5']).digit_tolerance == 1.5


@pytest.mark.parametrize('name', BAD_MODEL_NAMES)
def test_vaetfx_run_refuses_a_bad_model_name_before_running_anything(name, tmp_path, capsys):
  output_dir = tmp_path / 'outputs'
  with pytest.raises(SystemExit) as exit_info:
    cli.main(['run', '--model-name', name, '--output-dir', str(output_dir),
              '--data-dir', str(tmp_path)])
  assert exit_info.value.code == 2
  [message] = [line for line in capsys.readouterr().err.splitlines() if 'error' in line]
  assert '--model-name' in message and f'model name {name!r}' in message
  assert not os.path.exists(output_dir)


def test_the_default_beam_settings_are_beams_own_and_pass_no_flags():
  direct = pipeline_options.PipelineOptions([]).view_as(pipeline_options.DirectOptions)
  assert (direct.direct_running_mode, direct.direct_num_workers) == (
      configs.BEAM_DEFAULT_RUNNING_MODE, configs.BEAM_DEFAULT_NUM_WORKERS)
  assert configs.BeamConfig().pipeline_args() == []


def test_other_beam_settings_are_passed():
  beam = configs.BeamConfig('multi_processing', 2, ('--runner=FlinkRunner',))
  assert beam.pipeline_args() == ['--direct_running_mode=multi_processing',
                                  '--direct_num_workers=2', '--runner=FlinkRunner']


def _run_config(*argv):
  args = cli.build_parser().parse_args(['run', *argv])
  return flags.pipeline_config(args, data_dir='data', output_dir='out')


def test_model_ae_takes_seed_003s_training_defaults_and_its_own_names():
  config = _run_config('--model', 'ae', '--digits', '1,5,6', '--latent-dim', '2')
  assert config.hparams.kind is kinds.AUTOENCODER and config.digits == (1, 5, 6)
  assert (config.hparams.epochs, config.hparams.batch_size, config.hparams.learning_rate,
          config.hparams.learning_rate_schedule) == (10, 50, 1e-3, 'constant')
  assert (config.pipeline_name, config.push.model_name) == ('ae-mnist', 'ae')
  vae = _run_config()
  assert (vae.hparams.epochs, vae.hparams.batch_size, vae.hparams.learning_rate,
          vae.hparams.learning_rate_schedule) == (22, 128, 4e-3, 'cosine')
  assert (vae.pipeline_name, vae.push.model_name) == ('vae-mnist', 'vae')


def test_settings_given_explicitly_are_kept_for_the_autoencoder():
  config = _run_config('--model', 'ae', '--epochs', '3', '--learning-rate-schedule', 'cosine',
                       '--pipeline-name', 'mine', '--model-name', 'seed3')
  assert (config.hparams.epochs, config.hparams.batch_size) == (3, 50)
  assert config.hparams.learning_rate_schedule == 'cosine'
  assert (config.pipeline_name, config.push.model_name) == ('mine', 'seed3')


def test_help_names_each_models_defaults():
  commands = next(action for action in cli.build_parser()._actions  # pylint: disable=protected-access
                  if action.dest == 'command').choices
  help_text = ' '.join(commands['run'].format_help().split())
  assert 'Default: 22 for conv/mlp, 10 for ae.' in help_text
  assert 'Default: 1.0 for conv/mlp; refused with --model ae.' in help_text
  assert 'Default: vae-mnist for conv/mlp, ae-mnist for ae.' in help_text
  assert 'Default: vae for conv/mlp, ae for ae.' in help_text
  training = help_text.split("training (the Trainer's custom_config):")[1]
  training = training.split('evaluator gate')[0]
  assert '(default: None)' not in training


def test_span_and_data_pattern_reach_the_example_gen():
  args = cli.build_parser().parse_args(['run', '--span', '4'])
  config = flags.pipeline_config(args, data_dir='data', output_dir='out',
                                 data_pattern=configs.SPAN_PATTERN)
  properties = _example_gen(config).exec_properties
  assert properties['input_config'].count('span-{SPAN}/*') == 2
  assert json.loads(properties['range_config'])['static_range'] == {'start_span_number': 4,
                                                                    'end_span_number': 4}
  assert _example_gen(_run_config()).exec_properties['range_config'] is None


def test_a_component_without_a_code_fingerprint_is_refused_when_the_pipeline_is_built():
  fingerprints = code_fingerprint.component_fingerprints()
  del fingerprints['VaeReport']
  with pytest.raises(ValueError, match='no code fingerprint for VaeReport'):
    pipeline.create_pipeline(_run_config(), fingerprints)


def _example_gen(config):
  built = pipeline.create_pipeline(config, code_fingerprint.component_fingerprints())
  return next(c for c in built.components if c.id == 'MnistExampleGen')
