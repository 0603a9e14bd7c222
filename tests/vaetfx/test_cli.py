"""vaetfx/cli.py and the garbage collector: the program freezes it once a command is done, so the
exit skips its last collections, and main(), which tests call in their own process, leaves it as
it found it; `vaetfx run` freezes what exists before the pipeline (the imported modules) while the
pipeline runs, and unfreezes it afterwards however the run ended."""
import gc
import sys

import pytest

from tests import synthetic_mnist
from vaetfx import cli, flags
from vaetfx.pipeline import local_runner


@pytest.fixture
def collector():
  """The collector unfrozen before and after, whatever the test did."""
  gc.unfreeze()
  yield
  gc.unfreeze()


def test_the_program_freezes_the_collector_once_its_command_returned(collector, tmp_path):
  assert gc.get_freeze_count() == 0
  assert cli.command_line(['models', '--serving-dir', str(tmp_path)]) == 0
  assert gc.get_freeze_count() > 0


def test_main_leaves_the_collector_alone(collector, tmp_path):
  assert cli.main(['models', '--serving-dir', str(tmp_path)]) == 0
  assert gc.get_freeze_count() == 0


@pytest.fixture
def mnist_dir(tmp_path):
  directory = tmp_path / 'mnist'
  synthetic_mnist.write_mnist_idx(str(directory), synthetic_mnist.make_splits(20, 10))
  return str(directory)


def _run_with_pipeline(mnist_dir, output_dir, monkeypatch, pipeline_run):
  """`vaetfx run` through main(), the pipeline replaced by `pipeline_run`; its exit code."""
  monkeypatch.setattr(local_runner, 'run', pipeline_run)
  return cli.main(['run', '--data-dir', mnist_dir, '--output-dir', str(output_dir)])


def _collector_state(seen):
  """A stand-in pipeline that notes the collector's state while it runs, then stops the run."""
  def pipeline_run(config):
    del config
    seen.append((gc.isenabled(), gc.get_freeze_count()))
    raise local_runner.Interrupted([], [])
  return pipeline_run


def test_run_freezes_what_exists_before_the_pipeline_and_unfreezes_after(
    collector, mnist_dir, tmp_path, monkeypatch):
  seen = []
  assert _run_with_pipeline(mnist_dir, tmp_path / 'out', monkeypatch,
                            _collector_state(seen)) == flags.EXIT_INTERRUPTED
  [(enabled, frozen)] = seen
  assert enabled and frozen > 0  # collecting what the pipeline makes, skipping what was there
  assert gc.isenabled() and gc.get_freeze_count() == 0


def test_run_leaves_a_paused_collector_paused(collector, mnist_dir, tmp_path, monkeypatch):
  seen = []
  gc.disable()
  try:
    _run_with_pipeline(mnist_dir, tmp_path / 'out', monkeypatch, _collector_state(seen))
    assert not gc.isenabled() and not seen[0][0]
  finally:
    gc.enable()
  assert gc.get_freeze_count() == 0


def test_run_unfreezes_when_the_pipeline_fails(collector, mnist_dir, tmp_path, monkeypatch):
  def failing(config):
    raise RuntimeError(f'broke on {config.pipeline_name}')
  assert _run_with_pipeline(mnist_dir, tmp_path / 'out', monkeypatch, failing) == flags.EXIT_FAILED
  assert gc.isenabled() and gc.get_freeze_count() == 0


def test_run_restores_the_collector_when_the_pipeline_cannot_load(
    collector, mnist_dir, tmp_path, monkeypatch):
  import vaetfx.pipeline  # pylint: disable=g-import-not-at-top
  monkeypatch.delattr(vaetfx.pipeline, 'local_runner')
  monkeypatch.setitem(sys.modules, 'vaetfx.pipeline.local_runner', None)  # importing it fails
  assert cli.main(['run', '--data-dir', mnist_dir, '--output-dir',
                   str(tmp_path / 'out')]) == flags.EXIT_FAILED
  assert gc.isenabled() and gc.get_freeze_count() == 0
