"""`vaetfx serve`'s flags: out-of-range values refused in one line naming the flag, before
anything loads; the limits and retry flags reach the server's config."""
import pytest

from vaetfx import cli, serving_commands
from vaetfx.serving import batching, defaults, limits, server, version_policy


@pytest.mark.parametrize('flag, value, expected', [
    ('--port', '-5', 'a whole number from 0 to 65535'),
    ('--port', '70000', 'a whole number from 0 to 65535'),
    ('--port', 'http', 'a whole number from 0 to 65535'),
    ('--rest-port', '65536', 'a whole number from 0 to 65535'),
    ('--poll-seconds', '-1', 'a finite number >= 0'),
    ('--poll-seconds', 'nan', 'a finite number >= 0'),
    ('--grace-seconds', 'inf', 'a finite number >= 0'),
    ('--threads', '0', 'a whole number >= 1'),
    ('--max-message-mb', '4096', 'a whole number from 1 to 2047'),
    ('--max-batch-rows', '0', 'a whole number >= 1'),
    ('--max-decoded-mb', '-1', 'a whole number >= 1'),
    ('--max-sample-count', '1.5', 'a whole number >= 1'),
    ('--max-inflight-mb', '0', 'a whole number >= 1'),
    ('--slice-rows', '0', 'a whole number >= 1'),
    ('--tensorflow-intra-op-parallelism', '-1', 'a whole number >= 0'),
    ('--max-num-load-retries', '-1', 'a whole number >= 0'),
    ('--load-retry-interval-seconds', '-0.5', 'a finite number >= 0'),
])
def test_out_of_range_flag_is_refused_in_one_line(tmp_path, capsys, flag, value, expected):
  with pytest.raises(SystemExit) as raised:
    cli.main(['serve', '--model-dir', str(tmp_path), f'{flag}={value}'])
  assert raised.value.code == 2
  error = capsys.readouterr().err.strip().splitlines()[-1]
  assert error == (f"vaetfx serve: error: argument {flag}: '{value}': expected {expected} "
                   '(see vaetfx serve --help)')


def test_limit_and_retry_flags_reach_the_server_config(tmp_path):
  args = cli.build_parser().parse_args([
      'serve', '--model-dir', str(tmp_path), '--port', '0', '--max-batch-rows', '300',
      '--max-decoded-mb', '5', '--max-sample-count', '7', '--slice-rows', '32',
      '--max-num-load-retries', '2', '--load-retry-interval-seconds', '0.5',
      '--max-inflight-mb', '100', '--version-policy', 'specific:3,1'])
  config = serving_commands._server_config(args)  # pylint: disable=protected-access
  assert config.limits == limits.Limits(max_batch_rows=300, max_decoded_bytes=5 << 20,
                                        max_sample_count=7, slice_rows=32)
  assert (config.port, config.max_load_retries, config.load_retry_seconds) == (0, 2, 0.5)
  assert config.max_inflight_bytes == 100 << 20
  assert config.version_policy == version_policy.VersionPolicy(specific=(1, 3))
  assert config.rest_port is None
  rest_args = cli.build_parser().parse_args(['serve', '--model-dir', str(tmp_path),
                                             '--rest-port', '8501'])
  assert serving_commands._server_config(rest_args).rest_port == 8501  # pylint: disable=protected-access


def test_defaults_are_tf_serving_and_the_issue_figures(tmp_path):
  config = serving_commands._server_config(  # pylint: disable=protected-access
      cli.build_parser().parse_args(['serve', '--model-dir', str(tmp_path)]))
  assert config.limits == limits.Limits()
  assert config.max_inflight_bytes == defaults.MAX_INFLIGHT_BYTES
  assert config.limits.max_batch_rows >= 10_000
  assert (config.max_load_retries, config.load_retry_seconds) == (5, 60.0)
  assert isinstance(config, server.ServerConfig)


def test_batching_is_on_by_default_sized_by_the_row_limit_and_can_be_turned_off(tmp_path):
  """On: batches as large as the largest request (a request of --max-batch-rows must not meet
  the batcher's own size limit), no timeout, one batch at a time; off: no batcher."""
  def config(*flags):
    return serving_commands._server_config(  # pylint: disable=protected-access
        cli.build_parser().parse_args(['serve', '--model-dir', str(tmp_path), *flags]))
  assert config('--max-batch-rows', '300').batching_parameters == batching.BatchingParameters(
      max_batch_size=300, batch_timeout_micros=0, num_batch_threads=1)
  assert config('--no-enable-batching').batching_parameters is None
  parameters_file = tmp_path / 'batching_parameters.txt'
  parameters_file.write_text('max_batch_size { value: 8 }\nnum_batch_threads { value: 3 }\n')
  assert config('--batching-parameters-file', str(parameters_file)).batching_parameters == (
      batching.BatchingParameters(max_batch_size=8, num_batch_threads=3))
  with pytest.raises(ValueError, match='contradicts --no-enable-batching'):
    config('--no-enable-batching', '--batching-parameters-file', str(parameters_file))


def test_tensorflow_thread_flags_reach_the_server_config(tmp_path):
  def config(*flags):
    return serving_commands._server_config(  # pylint: disable=protected-access
        cli.build_parser().parse_args(['serve', '--model-dir', str(tmp_path), *flags]))
  assert (config().intra_op_threads, config().inter_op_threads) == (1, 1)
  chosen = config('--tensorflow-intra-op-parallelism', '0',
                  '--tensorflow-inter-op-parallelism', '3')
  assert (chosen.intra_op_threads, chosen.inter_op_threads) == (0, 3)
