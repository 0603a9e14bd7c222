"""Every command refuses bad input as users meet it: through the installed `vaetfx` entry point.

Each case asserts the exit status, one line of error that names the flag or file
and the fault, that nothing was written under the output and serving folders,
and, for flags and folders, that the refusal came before TensorFlow or TFX was
loaded (the time bound is generous: it guards against importing them, the
machine may be loaded; benchmarks measure speed).
"""
import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from tests import synthetic_mnist
from vaetfx import cli, flags

VAETFX = os.path.join(os.path.dirname(sys.executable), 'vaetfx')
BEFORE_TENSORFLOW_S = 10
UNWRITABLE = '/sys/vaetfx-test'  # refused even to root, unlike a chmod-ed folder


@pytest.fixture(scope='module')
def files(tmp_path_factory, mnist_splits):
  """Inputs good and bad: MNIST folders, a damaged mnist.npz, pictures, a regular file."""
  root = tmp_path_factory.mktemp('inputs')
  npz = synthetic_mnist.write_mnist_npz(str(root / 'good'), mnist_splits)
  with open(npz, 'rb') as f:
    valid = f.read()
  damaged = {'half-npz': valid[:len(valid) // 2], 'garbage-npz': b'\x00garbage' * 100}
  for name, data in damaged.items():
    os.makedirs(root / name)
    (root / name / 'mnist.npz').write_bytes(data)
  os.makedirs(root / 'empty')
  (root / 'a-file').write_bytes(b'x')
  Image.new('L', (20000, 20000)).save(root / 'bomb.png')  # 390 KB that claims 400 megapixels
  Image.new('L', (8000, 6000)).save(root / 'huge.png')
  (root / 'not-a.png').write_bytes(b'not a picture')
  np.save(root / 'floats.npy', np.full((2, 28, 28), 7.5))
  # A plain file beside its .gz that holds other labels, in a folder and in a span folder.
  # `window`: its older span-1 has them, its newest span-2 not.
  for twins in (root / 'twins', root / 'spans' / 'span-2', root / 'window' / 'span-1'):
    synthetic_mnist.write_mnist_idx(str(twins), mnist_splits, compress=True)
    synthetic_mnist.write_file(str(twins / 't10k-labels-idx1-ubyte'), synthetic_mnist.idx_bytes(
        (mnist_splits['eval'][1] + 1) % 10), compress=False)
  for good in (root / 'spans' / 'span-1', root / 'window' / 'span-2'):
    synthetic_mnist.write_mnist_idx(str(good), mnist_splits)
  np.save(root / 'inf-latents.npy', np.array([[0.5, 1.0], [np.inf, 0.0]]))
  (root / 'forged.npy').write_bytes(_npy_declaring((10**9, 28, 28)) + bytes(28 * 28))
  os.makedirs(root / 'corrupt-model')
  (root / 'corrupt-model' / 'saved_model.pb').write_bytes(b'\xff' * 64)
  return root


def _npy_declaring(shape):
  """An .npy header that declares `shape` of uint8, whatever data follows it."""
  header = io.BytesIO()
  np.lib.format.write_array_header_1_0(
      header, {'descr': '|u1', 'fortran_order': False, 'shape': shape})
  return header.getvalue()


# (case id, arguments, exit status, the error line must contain, checked before TF loads)
# {in} is the inputs folder, {out} an empty folder for outputs.
RUN = '--output-dir {out}/outputs --serving-dir {out}/serving --data-dir {in}/good'
SCORE = '--model-dir {in}/empty --output {out}/scores.csv'
CASES = [
    ('epochs-0', f'run {RUN} --epochs 0', 2, "argument --epochs: '0': expected a whole number >= 1"),
    ('latent-dim-negative', f'run {RUN} --latent-dim -3', 2, "--latent-dim: '-3': expected"),
    ('batch-size-0', f'run {RUN} --batch-size 0', 2, "--batch-size: '0': expected"),
    ('eval-samples-0', f'run {RUN} --eval-samples 0', 2, "--eval-samples: '0': expected"),
    ('keep-versions-0', f'run {RUN} --keep-versions 0', 2, "--keep-versions: '0': expected"),
    ('learning-rate-nan', f'run {RUN} --learning-rate nan', 2,
     "--learning-rate: 'nan': expected a finite number > 0"),
    ('learning-rate-0', f'run {RUN} --learning-rate 0', 2, "--learning-rate: '0': expected"),
    ('beta-inf', f'run {RUN} --beta inf', 2, "--beta: 'inf': expected a finite number >= 0"),
    ('beta-for-the-autoencoder', f'run {RUN} --model ae --beta 0.5 --eval-samples 3', 2,
     "vaetfx run: error: beta, eval_samples (--beta --eval-samples): VAE settings, which "
     "--model ae has not"),
    ('score-floor-nan', f'run {RUN} --score-floor nan', 2,
     "--score-floor/--elbo-floor: 'nan': expected a finite"),
    ('elbo-floor-alias-nan', f'run {RUN} --elbo-floor nan', 2,
     "--score-floor/--elbo-floor: 'nan': expected a finite"),
    ('elbo-tolerance-text', f'run {RUN} --score-tolerance lots', 2,
     "--score-tolerance/--elbo-tolerance: 'lots': expected a finite number"),
    ('elbo-tolerance-negative', f'run {RUN} --score-tolerance -1', 2,
     "--score-tolerance/--elbo-tolerance: '-1': expected a finite number >= 0"),
    ('digit-tolerance-nan', f'run {RUN} --digit-tolerance nan', 2,
     "--digit-tolerance: 'nan': expected a finite number >= 0"),
    ('monitor-examples-negative', f'run {RUN} --monitor-examples -1', 2,
     "--monitor-examples: '-1': expected"),
    ('schedule-unknown', f'run {RUN} --learning-rate-schedule step', 2,
     "--learning-rate-schedule: invalid choice: 'step'"),
    ('model-name-path', f'run {RUN} --model-name a/b', 2, "--model-name"),
    ('likelihood-samples-not-a-power-of-ten', f'run {RUN} --likelihood-samples 300', 2,
     "--likelihood-samples: '300': expected a power of ten"),
    ('digits-letter', f'run {RUN} --digits 1,a', 2,
     "--digits: '1,a': expected digits 0-9 separated by commas"),
    ('digits-10', f'run {RUN} --digits 10', 2, "--digits: '10': expected digits 0-9"),
    ('seed-overflow', f'run {RUN} --seed 99999999999', 2, "--seed: '99999999999': expected"),
    ('beam-workers-negative', f'run {RUN} --beam-workers -1', 2, "--beam-workers: '-1'"),
    ('beam-arg-bare', f'run {RUN} --beam-arg runner', 2, "--beam-arg: 'runner': expected a Beam"),
    ('model-unknown', f'run {RUN} --model rnn', 2, "--model: invalid choice: 'rnn'"),
    ('unknown-flag', f'run {RUN} --epoch 3', 2, 'unrecognized arguments: --epoch 3'),
    ('data-dir-missing', 'run --output-dir {out}/outputs --data-dir {in}/nowhere', 2,
     '--data-dir {in}/nowhere: no such folder'),
    ('data-dir-a-file', 'run --output-dir {out}/outputs --data-dir {in}/a-file', 2,
     '--data-dir {in}/a-file: is a file, expected a folder'),
    ('data-dir-without-mnist', 'run --output-dir {out}/outputs --data-dir {in}/empty', 2,
     '--data-dir {in}/empty: holds no MNIST'),
    ('data-dir-half-npz', 'run --output-dir {out}/outputs --data-dir {in}/half-npz', 2,
     'vaetfx run: error: {in}/half-npz/mnist.npz: corrupt or truncated .npz file'),
    ('output-dir-a-file', 'run --data-dir {in}/good --output-dir {in}/a-file', 2,
     '--output-dir {in}/a-file: is a file, expected a folder'),
    ('output-dir-under-a-file', 'run --data-dir {in}/good --output-dir {in}/a-file/out', 2,
     '--output-dir {in}/a-file/out: cannot be made: {in}/a-file is a file'),
    ('output-dir-read-only', f'run --data-dir {{in}}/good --output-dir {UNWRITABLE}', 2,
     f'--output-dir {UNWRITABLE}: cannot write in'),
    ('serving-dir-read-only',
     f'run --data-dir {{in}}/good --output-dir {{out}}/outputs --serving-dir {UNWRITABLE}', 2,
     f'--serving-dir {UNWRITABLE}: cannot write in'),
    ('kubeflow-root-not-uri', 'compile-kubeflow --image i --pipeline-root {out}/root '
     '--serving-dir gs://b/s --data-root gs://b/d', 2, "--pipeline-root: '{out}/root': expected a URI"),
    ('kubeflow-gpu-negative', 'compile-kubeflow --image i --pipeline-root gs://b/r '
     '--serving-dir gs://b/s --data-root gs://b/d --gpu-count -1', 2, "--gpu-count: '-1'"),
    ('serve-port-range', 'serve --model-dir {out} --port 70000', 2,
     "--port: '70000': expected a whole number from 0 to 65535"),
    ('serve-poll-nan', 'serve --model-dir {out} --poll-seconds nan', 2, "--poll-seconds: 'nan'"),
    ('serve-grace-negative', 'serve --model-dir {out} --grace-seconds -1', 2, "--grace-seconds"),
    ('serve-message-too-big', 'serve --model-dir {out} --max-message-mb 4096', 2,
     "--max-message-mb: '4096': expected a whole number from 1 to 2047"),
    ('serve-model-dir-missing', 'serve --model-dir {out}/nowhere', 2,
     '--model-dir {out}/nowhere: no such folder'),
    ('serve-version-policy-latest-0', 'serve --model-dir {out} --version-policy latest:0', 2,
     "--version-policy: 'latest:0': latest:N needs N >= 1"),
    ('serve-version-policy-unknown', 'serve --model-dir {out} --version-policy newest', 2,
     "--version-policy: 'newest': expected latest, latest:N, all or specific:V1,V2"),
    ('serve-tls-cert-missing', 'serve --model-dir {out} --tls-cert {in}/nowhere.pem '
     '--tls-key {in}/a-file', 2, "--tls-cert: '{in}/nowhere.pem': expected a file, there is no"),
    ('serve-batching-file-a-folder', 'serve --model-dir {out} --batching-parameters-file {in}',
     2, "--batching-parameters-file: '{in}': expected a file, this is a folder"),
    ('query-seed-overflow', 'query sample --seed 99999999999999999999', 2,
     "--seed: '99999999999999999999': expected a whole number from 0 to"),
    ('query-seed-negative', 'query sample --seed -5', 2, "--seed: '-5': expected"),
    ('query-count-0', 'query sample --count 0', 2, "--count: '0': expected"),
    ('query-count-over-the-servers-limit', 'query sample --count 1001', 2,
     "--count: '1001': expected a whole number from 1 to 1000"),
    ('query-npy-header-declaring-a-billion-images', 'query reconstruct {in}/forged.npy', 2,
     '{in}/forged.npy: its header declares more data than the file\'s 912 bytes hold'),
    ('query-decode-nan-latent', 'query decode --latent 0.5,nan', 2,
     '--latent: latent vector 0 holds nan: expected finite numbers'),
    ('query-decode-inf-latent-file', 'query decode --input {in}/inf-latents.npy', 2,
     '{in}/inf-latents.npy: latent vector 1 holds inf'),
    ('query-limit-negative', 'query score {in}/huge.png --limit -1', 2,
     "--limit: '-1': expected a whole number >= 0"),
    ('query-timeout-0', 'query sample --timeout 0', 2, "--timeout: '0': expected a finite number > 0"),
    ('query-threshold-nan', 'query score x.png --threshold nan', 2, "--threshold: 'nan'"),
    ('query-version-text', 'query sample --version latest', 2, "--version: 'latest': expected"),
    ('query-decompression-bomb', 'query reconstruct {in}/bomb.png -o {out}/r.png', 2,
     '{in}/bomb.png: cannot read it (Image size (400000000 pixels) exceeds limit'),
    ('query-huge-picture', 'query reconstruct {in}/huge.png -o {out}/r.png', 2,
     '{in}/huge.png: 8000x6000 pixels, more than the 40,000,000'),
    ('query-not-a-picture', 'query encode {in}/not-a.png', 2, '{in}/not-a.png: cannot read it'),
    ('query-missing-file', 'query score {in}/nowhere.png', 2, '{in}/nowhere.png: cannot read it'),
    ('query-bad-pixels', 'query score {in}/floats.npy', 2, '{in}/floats.npy: pixels must be'),
    ('score-data-dir-missing', f'score {SCORE} --data-dir {{in}}/nowhere', 2,
     '--data-dir {in}/nowhere: no such folder'),
    ('score-data-dir-a-file', f'score {SCORE} --data-dir {{in}}/a-file', 2,
     '--data-dir {in}/a-file: is a file, expected a folder'),
    ('score-data-dir-without-mnist', f'score {SCORE} --data-dir {{in}}/empty', 2,
     "{in}/empty: the 'eval' split is missing"),
    ('score-half-npz', f'score {SCORE} --data-dir {{in}}/half-npz', 2,
     '{in}/half-npz/mnist.npz: corrupt or truncated .npz file'),
    ('score-model-dir-missing', 'score --data-dir {in}/good --output {out}/s.csv '
     '--model-dir {in}/nowhere', 2, '--model-dir {in}/nowhere: no such folder'),
    ('score-model-dir-without-model', 'score --data-dir {in}/good --output {out}/s.csv '
     '--model-dir {in}/empty', 2, '--model-dir {in}/empty: holds neither saved_model.pb nor'),
    ('score-output-not-csv', 'score --data-dir {in}/good --model-dir {in}/empty '
     '--output {out}/s.txt', 2, '--output {out}/s.txt: expected a file name ending in .csv'),
    ('score-output-under-a-file', 'score --data-dir {in}/good --model-dir {in}/empty '
     '--output {in}/a-file/s.csv', 2, '--output folder {in}/a-file: is a file, expected a folder'),
    ('score-split-unknown', f'score {SCORE} --split test', 2, "--split: invalid choice: 'test'"),
    ('score-beam-workers-negative', f'score {SCORE} --beam-workers -1', 2, "--beam-workers: '-1'"),
    ('differing-gz-twins', f'run {RUN.replace("/good", "/twins")}', 2,
     '{in}/twins/t10k-labels-idx1-ubyte and {in}/twins/t10k-labels-idx1-ubyte.gz hold '
     'different data: keep only one of them'),
    ('differing-gz-twins-in-the-newest-span', f'run {RUN.replace("/good", "/spans")}', 2,
     '{in}/spans/span-2/t10k-labels-idx1-ubyte and {in}/spans/span-2/t10k-labels-idx1-ubyte.gz'),
    ('differing-gz-twins-in-the-windows-older-span',
     f'run {RUN.replace("/good", "/window")} --train-spans 2', 2,
     '{in}/window/span-1/t10k-labels-idx1-ubyte and {in}/window/span-1/t10k-labels-idx1-ubyte.gz'),
    ('train-spans-without-spans', f'run {RUN} --train-spans 2', 2,
     '--train-spans 2: {in}/good has no span-<N>/ folders to roll over'),
    ('train-spans-0', f'run {RUN} --train-spans 0', 2, "--train-spans: '0': expected"),
    ('score-without-model-dir', 'score --data-dir {in}/good', 2,
     'the following arguments are required: --model-dir'),
    ('no-command', '', 2, 'the following arguments are required: command'),
]


def _vaetfx(arguments):
  """Runs the entry point as a user would: without the C++ log level that conftest sets."""
  env = {name: value for name, value in os.environ.items() if name != 'TF_CPP_MIN_LOG_LEVEL'}
  start = time.monotonic()
  result = subprocess.run([VAETFX, *arguments], capture_output=True, text=True, timeout=600,
                          env=env)
  return result, time.monotonic() - start


def _written(folder):
  """Every file and folder under `folder`."""
  return sorted(os.path.relpath(os.path.join(parent, name), folder)
                for parent, folders, names in os.walk(folder) for name in folders + names)


@pytest.mark.parametrize('arguments, status, message', [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_bad_input_fails_fast_with_one_line(files, tmp_path, arguments, status, message):
  names = {'in': str(files), 'out': str(tmp_path)}
  result, seconds = _vaetfx(arguments.format(**names).split())
  assert result.returncode == status, result.stderr
  assert result.stderr.count('\n') == 1, result.stderr
  assert message.format(**names) in result.stderr
  assert 'Traceback' not in result.stderr + result.stdout
  assert seconds < BEFORE_TENSORFLOW_S, 'TensorFlow or TFX was imported before the check'
  assert _written(str(tmp_path)) == []


def test_a_corrupt_saved_model_is_named_by_score(files, tmp_path):
  """Parsing saved_model.pb needs TensorFlow's protos, so this one is not timed."""
  result, _ = _vaetfx(['score', '--data-dir', str(files / 'good'), '--output',
                       str(tmp_path / 's.csv'), '--model-dir', str(files / 'corrupt-model')])
  assert result.returncode == flags.EXIT_BAD_INPUT, result.stderr
  assert (f'--model-dir {files / "corrupt-model"}: saved_model.pb is not a SavedModel '
          '(corrupt or truncated' in result.stderr)
  assert 'Traceback' not in result.stderr + result.stdout
  assert _written(str(tmp_path)) == []


def _failing_handler(args):
  raise RuntimeError('a bug\nspread over lines')


def test_an_unexpected_failure_is_one_line_unless_verbose(capsys, monkeypatch):
  monkeypatch.setattr(cli, '_run', _failing_handler)
  assert cli.main(['run']) == flags.EXIT_FAILED
  assert capsys.readouterr().err == ('vaetfx run: failed: RuntimeError: a bug spread over lines '
                                     '(add --verbose for the traceback)\n')
  with pytest.raises(RuntimeError, match='a bug'):
    cli.main(['run', '--verbose'])
  monkeypatch.setenv(cli.VERBOSE_ENV, '1')
  with pytest.raises(RuntimeError, match='a bug'):
    cli.main(['run'])


def test_help_documents_the_exit_codes():
  result, _ = _vaetfx(['--help'])
  assert result.returncode == 0
  assert ' '.join(flags.EXIT_CODES_HELP.split()) in ' '.join(result.stdout.split())


def test_ctrl_c_during_training_cancels_it_in_ml_metadata(files, tmp_path):
  """SIGINT, as Ctrl-C sends it, while the Trainer runs: one line, status 130, nothing RUNNING.
  Seven components run before the Trainer: the data five, ServedModelImporter, WarmStartBase."""
  from ml_metadata.metadata_store import metadata_store  # pylint: disable=g-import-not-at-top
  from ml_metadata.proto import metadata_store_pb2  # pylint: disable=g-import-not-at-top
  output_dir = tmp_path / 'outputs'
  env = {name: value for name, value in os.environ.items() if name != 'TF_CPP_MIN_LOG_LEVEL'}
  process = subprocess.Popen(
      [VAETFX, 'run', '--data-dir', str(files / 'good'), '--output-dir', str(output_dir),
       '--epochs', '500', '--latent-dim', '2', '--batch-size', '32', '--eval-samples', '1'],
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  try:
    for line in process.stdout:
      if line.split()[1:3] == ['Trainer', 'running']:
        break
    time.sleep(5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
  finally:
    process.kill()
  assert process.returncode == flags.EXIT_INTERRUPTED, stderr
  assert stderr.strip().splitlines() == [
      'vaetfx run: interrupted during Trainer (8 components finished); '
      'a re-run resumes from the cache.']
  store = metadata_store.MetadataStore(
      metadata_store_pb2.ConnectionConfig(sqlite=metadata_store_pb2.SqliteMetadataSourceConfig(
          filename_uri=str(output_dir / 'metadata.db'))))
  states = {store.get_execution_types_by_id([e.type_id])[0].name.rsplit('.', 1)[-1]:
            e.last_known_state for e in store.get_executions()}
  assert states['Trainer'] == metadata_store_pb2.Execution.CANCELED
  assert metadata_store_pb2.Execution.RUNNING not in states.values()
