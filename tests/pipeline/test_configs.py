"""BeamConfig's flags: Beam's own defaults are left out, so TFX builds no sdist of itself per component."""
from apache_beam.options import pipeline_options

from vaetfx.pipeline import configs


def test_the_default_beam_settings_are_beams_own_and_pass_no_flags():
  direct = pipeline_options.PipelineOptions([]).view_as(pipeline_options.DirectOptions)
  assert (direct.direct_running_mode, direct.direct_num_workers) == (
      configs.BEAM_DEFAULT_RUNNING_MODE, configs.BEAM_DEFAULT_NUM_WORKERS)
  assert configs.BeamConfig().pipeline_args() == []


def test_other_beam_settings_are_passed():
  beam = configs.BeamConfig('multi_processing', 2, ('--runner=FlinkRunner',))
  assert beam.pipeline_args() == ['--direct_running_mode=multi_processing',
                                  '--direct_num_workers=2', '--runner=FlinkRunner']
