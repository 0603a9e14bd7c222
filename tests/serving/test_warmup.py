"""Warmup at load as in TF Serving: recorded requests are replayed; a failing one fails the load."""
import os
import shutil

import numpy as np
import pytest
from tensorflow_serving.apis import prediction_log_pb2
from tfx.utils import io_utils

from tests.serving.helpers import running_server
from vaetfx.serving import limits, tensors, versions, warmup


def _predict_log(signature_name, **inputs):
  log = prediction_log_pb2.PredictionLog()
  request = log.predict_log.request
  request.model_spec.name = 'vae'
  request.model_spec.signature_name = signature_name
  for alias, array in inputs.items():
    tensors.to_proto(array, request.inputs[alias])
  return log


@pytest.fixture
def model_dir(exported_model_dir, tmp_path):
  """<tmp>/vae/1/: a copy of the tiny model, for warmup files of each test's own."""
  version_dir = tmp_path / 'vae' / '1'
  shutil.copytree(exported_model_dir, version_dir)
  return str(tmp_path / 'vae')


def _write_warmup(model_dir, *logs):
  io_utils.write_tfrecord_file(warmup.warmup_path(os.path.join(model_dir, '1')),
                               *logs)


def _load(model_dir):
  """A manager that gives up on the first failed load (TF Serving retries 5 times, 60 s apart)."""
  manager = versions.ModelManager('vae', model_dir, poll_seconds=0,
                                  retry=versions.RetryPolicy(max_retries=0))
  manager.start()
  return manager


def test_recorded_requests_are_read_back_and_replayed(model_dir, digits):
  logs = [_predict_log('encode', images=digits),
          _predict_log('sample', count=np.array(2, np.int32), seed=np.array(0, np.int64))]
  _write_warmup(model_dir, *logs)
  requests = warmup.read_warmup_requests(os.path.join(model_dir, '1'))
  assert [r.model_spec.signature_name for r in requests] == ['encode', 'sample']
  manager = _load(model_dir)
  assert manager.available_versions == [1]


def test_a_model_without_warmup_file_loads(model_dir):
  assert warmup.read_warmup_requests(os.path.join(model_dir, '1')) == []
  assert _load(model_dir).available_versions == [1]


@pytest.mark.parametrize('bad_log, message', [
    (_predict_log('decode', latent=np.zeros((2, 99), np.float32)), 'warmup request 1 (decode)'),
    (_predict_log('no_such_signature', images=np.zeros((1, 28, 28), np.uint8)),
     'Serving signature key "no_such_signature" not found'),
    (prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog()),
     'is a classify_log; only predict_log is supported'),
])
def test_a_failing_warmup_request_fails_the_load(model_dir, digits, bad_log, message):
  _write_warmup(model_dir, _predict_log('encode', images=digits), bad_log)
  manager = _load(model_dir)
  assert manager.available_versions == []
  [record] = manager.statuses().values()
  assert record.state == versions.State.END
  assert message in record.error.message


def test_more_records_than_tf_serving_allows_fail_the_load(model_dir, monkeypatch, digits):
  monkeypatch.setattr(warmup, 'MAX_RECORDS', 2)
  _write_warmup(model_dir, *[_predict_log('encode', images=digits)] * 3)
  manager = _load(model_dir)
  assert manager.available_versions == []
  assert 'exceeds the maximum (2)' in manager.statuses()[1].error.message


@pytest.mark.parametrize('config, warmup_log, error', [
    ({'limits': limits.Limits(max_sample_count=2000)},
     _predict_log('sample', count=np.array(1500, np.int32), seed=np.array(0, np.int64)), ''),
    ({'limits': limits.Limits(max_batch_rows=4)},
     _predict_log('encode', images=np.zeros((8, 28, 28), np.uint8)),
     'input images declares 8 rows; this server takes at most 4 per request (--max-batch-rows)'),
    ({'max_inflight_bytes': 4096},
     _predict_log('encode', images=np.zeros((8, 28, 28), np.uint8)),
     'this server holds at most 4096 (0.00390625 MiB) for all requests in flight '
     '(--max-inflight-mb)'),
], ids=['raised sample count', 'lowered row limit', 'small in-flight budget'])
def test_warmup_runs_under_the_servers_own_limits(model_dir, config, warmup_log, error):
  """Was: replayed under the default limits whatever the server's flags (sample count 1,000,
  10,000 rows, no budget)."""
  _write_warmup(model_dir, warmup_log)
  with running_server(os.path.dirname(model_dir), poll_seconds=0, max_load_retries=0,
                      **config) as model_server:
    assert model_server.manager.available_versions == ([] if error else [1])
    if error:
      assert error in model_server.manager.statuses()[1].error.message
