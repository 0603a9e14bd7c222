"""vaetfx/cli.py's program entry: the garbage collector is frozen once a command is done, so the
exit skips its last collections; main(), which tests call in their own process, is left alone."""
import gc

import pytest

from vaetfx import cli


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
