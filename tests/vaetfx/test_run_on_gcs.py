"""`vaetfx run`, `models` and `rollback` with every folder in a gs:// bucket (the GCS emulator of
tests/gcs_emulator.py, in its own namespace), as a user's shell runs them: URIs stay URIs."""
import json
import os
import shutil
import subprocess
import sys

from tests import gcs_emulator

BUCKET = f'gs://{gcs_emulator.TEST_BUCKET}'


def _vaetfx_in_bucket(gcs, tmp_path, *args) -> subprocess.CompletedProcess:
  """`vaetfx ARGS` inside the emulated bucket's namespace, as a user's shell would run it."""
  vaetfx = os.path.join(os.path.dirname(sys.executable), 'vaetfx')
  return subprocess.run(gcs.command([vaetfx, *args]), cwd=str(tmp_path),
                        env=dict(os.environ, HOME=str(tmp_path), **gcs.environment()),
                        capture_output=True, text=True, timeout=900, check=False)


def test_a_local_run_with_every_folder_on_gs_pushes_lists_and_rolls_back(gcs, mnist_idx_dir,
                                                                         tmp_path):
  """`vaetfx run` with the data, pipeline root and serving folder in the bucket: URIs stay
  URIs (no local folder named gs:), two runs push two versions, `vaetfx models` lists them
  from the bucket and `vaetfx rollback` serves the first again."""
  data_dir = f'{BUCKET}/local-run/mnist'
  shutil.copytree(mnist_idx_dir, gcs.local_path(data_dir))
  serving_dir = f'{BUCKET}/local-run/serving'
  run = ['run', '--data-dir', data_dir, '--output-dir', f'{BUCKET}/local-run/out',
         '--serving-dir', serving_dir, '--latent-dim', '2', '--epochs', '1',
         '--batch-size', '32', '--eval-samples', '1', '--score-floor=-1e6',
         '--score-tolerance', '1e6', '--likelihood-examples', '0']
  for seed in ('1', '2'):
    result = _vaetfx_in_bucket(gcs, tmp_path, *run, '--seed', seed)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert not os.path.exists(tmp_path / 'gs:')
  first, second = gcs.listdir(f'{serving_dir}/vae')
  assert os.path.isfile(os.path.join(tmp_path, '.cache', 'vaetfx', 'metadata', 'gs', gcs_emulator.TEST_BUCKET,
                                     'local-run', 'out', 'metadata.db'))
  listed = _vaetfx_in_bucket(gcs, tmp_path, 'models', '--serving-dir', serving_dir, '--json')
  rows = json.loads(listed.stdout)
  assert [str(row['version']) for row in rows] == [first, second]
  assert rows[1]['served'] and rows[1]['provenance']['replaced'] == int(first)
  rolled = _vaetfx_in_bucket(gcs, tmp_path, 'rollback', '--serving-dir', serving_dir)
  assert rolled.returncode == 0, rolled.stderr[-3000:]
  versions = gcs.listdir(f'{serving_dir}/vae')
  assert versions[:2] == [first, second] and len(versions) == 3
  with open(os.path.join(gcs.local_path(f'{serving_dir}/vae'), versions[2], 'assets.extra',
                         'vaetfx_provenance.json')) as f:
    assert json.load(f)['rollback_of'] == int(first)
