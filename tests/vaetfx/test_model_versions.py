"""`vaetfx models` and `vaetfx rollback` on serving folders made by hand: versions this product
wrote (with a provenance record), and foreign ones it must list and leave alone."""
import json
import os
import subprocess
import sys

import pytest

from vaetfx import cli, flags
from vaetfx.shared import serving_folder


def _version(model_dir, number, payload, **story):
  """A version folder as the Pusher writes one: a 'model' and, unless foreign, its record."""
  path = os.path.join(model_dir, str(number))
  os.makedirs(os.path.join(path, 'variables'))
  with open(os.path.join(path, 'variables', 'variables.index'), 'w') as f:
    f.write(payload)
  with open(os.path.join(path, serving_folder.SAVED_MODEL_FILE), 'w') as f:
    f.write(f'graph of {payload}')
  if not story.pop('foreign', False):
    record = {'producer': 'vaetfx', 'version': number, 'pipeline_name': 'a',
              'run_id': f'run-{number}', 'pushed_at': f'2026-12-0{number % 9 + 1}T10:00:00+00:00',
              'model': {'kind': 'conv', 'score_key': 'elbo'},
              'scores': {'metric': 'mean_elbo', 'candidate': -100.0 - number, 'baseline': None},
              'data': {'root': '/data/mnist'}, 'rollback_of': None, **story}
    os.makedirs(os.path.join(path, 'assets.extra'))
    with open(os.path.join(path, serving_folder.PROVENANCE_FILE), 'w') as f:
      json.dump(record, f)
  return path


@pytest.fixture
def model_dir(tmp_path):
  """Versions 1 and 2 pushed by vaetfx, 3 copied in by hand, an empty 4, and 5 a symlink to a
  model outside the folder; 2 is the newest of vaetfx's, 5 is what TF Serving serves."""
  model_dir = str(tmp_path / 'serving' / 'vae')
  _version(model_dir, 1, 'A')
  _version(model_dir, 2, 'B')
  _version(model_dir, 3, 'C', foreign=True)
  os.makedirs(os.path.join(model_dir, '4'))
  outside = _version(str(tmp_path / 'archive'), 9, 'G')
  os.symlink(outside, os.path.join(model_dir, '5'))
  return model_dir


def test_versions_are_listed_with_their_story_and_what_is_served(model_dir, capsys):
  status = cli.main(['models', '--serving-dir', os.path.dirname(model_dir)])
  out = capsys.readouterr().out
  assert status == flags.EXIT_OK
  lines = out.splitlines()
  assert lines[0].split()[:3] == ['version', 'pushed', 'at']
  [one] = [line for line in lines if line.startswith('1 ')]
  assert 'run-1' in one and '-101.00 (no baseline)' in one and '/data/mnist' in one
  [three] = [line for line in lines if line.startswith('3 ')]
  assert 'foreign: version 3 was not pushed by vaetfx' in three
  [five] = [line for line in lines if line.startswith('5 ')]
  assert 'SERVED' in five and 'symlink' in five
  assert 'TF Serving serves version 5' in out


def test_models_json_lists_whole_records(model_dir, capsys):
  cli.main(['models', '--serving-dir', os.path.dirname(model_dir), '--json'])
  rows = json.loads(capsys.readouterr().out)
  assert [row['version'] for row in rows] == [1, 2, 3, 4, 5]
  assert rows[1]['provenance']['run_id'] == 'run-2'
  assert [row['foreign'] for row in rows] == [False, False, True, True, True]


def test_models_lists_without_importing_tensorflow(model_dir):
  code = ('import sys; from vaetfx import cli; '
          f'cli.main(["models", "--serving-dir", {os.path.dirname(model_dir)!r}]); '
          'assert "tensorflow" not in sys.modules, "tensorflow was imported"')
  subprocess.run([sys.executable, '-c', code], check=True, capture_output=True)


def _served(model_dir):
  return serving_folder.served_version(serving_folder.list_versions(model_dir))


def test_rollback_defaults_to_the_version_before_the_newest(tmp_path):
  model_dir = str(tmp_path / 'vae')
  _version(model_dir, 1, 'A')
  _version(model_dir, 2, 'B')
  assert cli.main(['rollback', '--serving-dir', str(tmp_path)]) == flags.EXIT_OK
  served = _served(model_dir)
  assert served.number > 2 and serving_folder.same_content(served.path,
                                                           os.path.join(model_dir, '1'))
  assert (served.provenance['rollback_of'], served.provenance['replaced']) == (1, 2)
  assert served.provenance['run_id'] == 'vaetfx rollback'
  assert [v.number for v in serving_folder.list_versions(model_dir)] == [1, 2, served.number]


def test_rollback_to_a_named_version_and_foreign_things_stay(model_dir):
  before = {name: sorted(os.listdir(os.path.join(model_dir, name)))
            for name in ('3', '4', '5')}
  assert cli.main(['rollback', '--serving-dir', os.path.dirname(model_dir), '--to', '2']) == 0
  served = _served(model_dir)
  assert served.number > 5 and served.provenance['rollback_of'] == 2
  assert serving_folder.same_content(served.path, os.path.join(model_dir, '2'))
  assert {name: sorted(os.listdir(os.path.join(model_dir, name)))
          for name in ('3', '4', '5')} == before
  assert os.path.islink(os.path.join(model_dir, '5'))


@pytest.mark.parametrize('to, message', [
    ('3', 'version 3 was not pushed by vaetfx (no assets.extra/vaetfx_provenance.json); '
          'rollback republishes only what vaetfx pushed'),
    ('5', 'version 5 is a symlink'),
    ('7', 'there is no version 7 (versions: 1, 2, 3, 4, 5)'),
])
def test_rollback_refuses_what_it_cannot_republish(model_dir, capsys, to, message):
  status = cli.main(['rollback', '--serving-dir', os.path.dirname(model_dir), '--to', to])
  assert status == flags.EXIT_BAD_INPUT
  assert message in capsys.readouterr().err
  assert [v.number for v in serving_folder.list_versions(model_dir)] == [1, 2, 3, 4, 5]


def test_rollback_of_the_served_version_or_with_nothing_older_is_refused(tmp_path, capsys):
  model_dir = str(tmp_path / 'vae')
  _version(model_dir, 1, 'A')
  assert cli.main(['rollback', '--serving-dir', str(tmp_path), '--to', '1']) == 2
  assert 'version 1 is already the served one' in capsys.readouterr().err
  assert cli.main(['rollback', '--serving-dir', str(tmp_path)]) == 2
  assert 'no version pushed by vaetfx is older than the served one' in capsys.readouterr().err


def test_a_model_of_another_kind_or_foreign_is_no_baseline(model_dir, tmp_path):
  with pytest.raises(serving_folder.IncomparableServedModel, match='version 5 is a symlink'):
    serving_folder.comparable_baseline(model_dir, 'elbo')
  ae_dir = str(tmp_path / 'ae')
  _version(ae_dir, 1, 'A', model={'kind': 'ae', 'score_key': 'reconstruction_log_likelihood'})
  with pytest.raises(serving_folder.IncomparableServedModel, match='a --model ae scored by its '
                     'reconstruction_log_likelihood; this run\'s model is scored by its elbo'):
    serving_folder.comparable_baseline(ae_dir, 'elbo')
  assert serving_folder.comparable_baseline(ae_dir, 'reconstruction_log_likelihood').number == 1
  assert serving_folder.comparable_baseline(str(tmp_path / 'nothing'), 'elbo') is None


def test_served_state_changes_with_what_is_served(tmp_path):
  model_dir = str(tmp_path / 'vae')
  assert serving_folder.served_state(model_dir) == 'none'
  _version(model_dir, 1, 'A')
  first = serving_folder.served_state(model_dir)
  os.makedirs(os.path.join(model_dir, '2'))  # incomplete: not served, state unchanged
  assert serving_folder.served_state(model_dir) == first
  with open(os.path.join(model_dir, '1', 'variables', 'variables.index'), 'w') as f:
    f.write('A edited in place')
  assert serving_folder.served_state(model_dir) != first
