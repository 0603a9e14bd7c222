"""Settings: bad ones are refused where they are made, before any component runs; Beam's own
defaults are left out of the Beam flags, so TFX builds no sdist of itself per component."""
import os

import pytest
from apache_beam.options import pipeline_options

from vaetfx import cli
from vaetfx.pipeline import configs

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


@pytest.mark.parametrize('field', ('elbo_tolerance', 'digit_tolerance'))
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
