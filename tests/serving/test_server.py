"""The local server over real gRPC: every signature equals the in-process model, and each bad
request gets TF Serving's status code while the server keeps answering."""
import os
import subprocess
import sys
import textwrap

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, model_management_pb2,
                                     model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from tests.serving.helpers import MODEL_NAME, running_server
from vaetfx.serving import client, server, status, tensors

SEED = 7
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def signature_inputs(name, digits, examples, latent_dim):
  """Inputs of each signature, as numpy arrays with the contract's dtypes."""
  latent = np.linspace(-2, 2, 3 * latent_dim, dtype=np.float32).reshape(3, latent_dim)
  return {
      'serving_default': {'images': digits},
      'encode': {'images': digits},
      'decode': {'latent': latent},
      'sample': {'count': np.array(5, np.int32), 'seed': np.array(SEED, np.int64)},
      'from_examples': {'examples': examples},
  }[name]


@pytest.mark.parametrize('signature', ['serving_default', 'encode', 'decode', 'sample',
                                       'from_examples'])
def test_signature_equals_in_process_call(serving, reference, signature, digits, examples,
                                          latent_dim):
  inputs = signature_inputs(signature, digits, examples, latent_dim)
  served = serving.predict(signature, inputs)
  expected = reference.signatures[signature](**inputs)
  assert (served.version, served.signature_name) == (1, signature)
  assert sorted(served.outputs) == sorted(expected)
  for name, value in expected.items():
    np.testing.assert_array_equal(served.outputs[name], value.numpy(), err_msg=name)


def test_client_methods_match_the_contract(serving, digits, latent_dim):
  outputs = serving.reconstruct(digits)
  assert outputs['reconstruction'].shape == (8, 28, 28)
  assert outputs['elbo'].shape == (8,)
  mean, logvar = serving.encode(digits)
  assert mean.shape == logvar.shape == (8, latent_dim)
  np.testing.assert_array_equal(serving.score(digits), outputs['elbo'])
  assert serving.decode(mean).shape == (8, 28, 28)
  assert serving.sample(3).shape == (3, 28, 28)
  np.testing.assert_array_equal(serving.sample(4, SEED), serving.sample(4, SEED))


def test_version_label_and_number_choose_the_version(model_server, digits):
  for choice in ({'version': 1}, {'version_label': 'stable'}):
    with client.ServingClient(model_server.address, MODEL_NAME, **choice) as serving:
      assert serving.predict('serving_default', {'images': digits}).version == 1


def test_metadata_lists_the_signatures(serving, reference):
  version, signature_defs = serving.signature_defs()
  assert version == 1
  assert set(reference.signatures) <= set(signature_defs)
  images = signature_defs['serving_default'].inputs['images']
  assert tensors.dtype_name(images.dtype) == 'uint8'
  assert [dim.size for dim in images.tensor_shape.dim] == [-1, 28, 28]


def test_status_reports_the_available_version(serving):
  states = serving.version_states()
  assert [(s.version, s.state) for s in states] == [(1, client.AVAILABLE)]


def _predict_request(signature='serving_default', name=MODEL_NAME, **inputs):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = name
  request.model_spec.signature_name = signature
  for alias, array in inputs.items():
    tensors.to_proto(array, request.inputs[alias])
  return request


def _with(request, edit):
  edit(request)
  return request


def _bad_content(request):
  request.inputs['images'].tensor_content = b'\0' * 100


IMAGES = np.zeros((2, 28, 28), np.uint8)
BAD_PREDICTIONS = {
    'unknown model': (NOT_FOUND, _predict_request(name='nope', images=IMAGES)),
    'unknown version': (NOT_FOUND, _with(_predict_request(images=IMAGES),
                                         lambda r: setattr(r.model_spec.version, 'value', 99))),
    'unknown version label': (INVALID, _with(_predict_request(images=IMAGES),
                                             lambda r: setattr(r.model_spec, 'version_label',
                                                               'canary'))),
    'no model spec': (INVALID, _with(_predict_request(images=IMAGES),
                                     lambda r: r.ClearField('model_spec'))),
    'empty model name': (INVALID, _predict_request(name='', images=IMAGES)),
    'unknown signature': (grpc.StatusCode.FAILED_PRECONDITION,
                          _predict_request('classify', images=IMAGES)),
    'missing input': (INVALID, _predict_request()),
    'extra input': (INVALID, _predict_request(images=IMAGES, labels=np.zeros(2, np.int64))),
    'misnamed input': (INVALID, _predict_request(image=IMAGES)),
    'wrong dtype': (INVALID, _predict_request(images=IMAGES.astype(np.float32))),
    'flat images': (INVALID, _predict_request(images=IMAGES.reshape(2, 784))),
    'channel axis (aborts a conv in TF 2.16)':
        (INVALID, _predict_request(images=IMAGES[..., np.newaxis])),
    'wrong image size': (INVALID, _predict_request(images=IMAGES[:, :, :27])),
    'scalar image': (INVALID, _predict_request(images=np.array(0, np.uint8))),
    'content size mismatch': (INVALID, _with(_predict_request(images=IMAGES), _bad_content)),
    'vector count': (INVALID, _predict_request('sample', count=np.array([2], np.int32),
                                               seed=np.array(1, np.int64))),
    'latent of the wrong width': (INVALID, _predict_request('decode',
                                                            latent=np.zeros((1, 999), np.float32))),
    'unknown output': (INVALID, _with(_predict_request(images=IMAGES),
                                      lambda r: r.output_filter.append('logits'))),
    'duplicate output': (INVALID, _with(_predict_request(images=IMAGES),
                                        lambda r: r.output_filter.extend(['elbo', 'elbo']))),
    'unparsable examples (a model error)':
        (INVALID, _predict_request('from_examples', examples=np.array([b'junk'], object))),
    'unparsable examples that are not UTF-8 (TF cannot raise its error)':
        (INVALID, _predict_request('from_examples', examples=np.array([b'\n\xec\x06\xc8'],
                                                                      object))),
}


@pytest.fixture
def stubs(model_server):
  with grpc.insecure_channel(model_server.address) as channel:
    yield (prediction_service_pb2_grpc.PredictionServiceStub(channel),
           model_service_pb2_grpc.ModelServiceStub(channel))


def _code(call, request):
  with pytest.raises(grpc.RpcError) as raised:
    call(request, timeout=30)
  return raised.value.code()


@pytest.mark.parametrize('case', sorted(BAD_PREDICTIONS))
def test_bad_predict_gets_tf_serving_code_and_server_keeps_serving(stubs, serving, digits, case):
  expected, request = BAD_PREDICTIONS[case]
  assert _code(stubs[0].Predict, request) == expected
  assert serving.score(digits).shape == (8,)


def _metadata_request(fields=('signature_def',), name=MODEL_NAME):
  request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=list(fields))
  request.model_spec.name = name
  return request


def _status_request(name=MODEL_NAME, version=None):
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = name
  if version is not None:
    request.model_spec.version.value = version
  return request


OTHER_BAD_CALLS = {
    'metadata without fields': (0, 'GetModelMetadata', INVALID, _metadata_request(fields=())),
    'metadata field unknown': (0, 'GetModelMetadata', INVALID, _metadata_request(['labels'])),
    'metadata of unknown model': (0, 'GetModelMetadata', NOT_FOUND, _metadata_request(name='x')),
    'status of unknown model': (1, 'GetModelStatus', NOT_FOUND, _status_request('x')),
    'status of unknown version': (1, 'GetModelStatus', NOT_FOUND, _status_request(version=9)),
    'classify': (0, 'Classify', grpc.StatusCode.UNIMPLEMENTED,
                 classification_pb2.ClassificationRequest()),
    'reload config': (1, 'HandleReloadConfigRequest', grpc.StatusCode.UNIMPLEMENTED,
                      model_management_pb2.ReloadConfigRequest()),
}


@pytest.mark.parametrize('case', sorted(OTHER_BAD_CALLS))
def test_other_bad_calls_get_tf_serving_codes(stubs, serving, digits, case):
  stub, method, expected, request = OTHER_BAD_CALLS[case]
  assert _code(getattr(stubs[stub], method), request) == expected
  assert serving.score(digits).shape == (8,)


def test_client_explains_each_failure(model_server, digits):
  cases = [
      (client.ServingClient('127.0.0.1:1', timeout=5), 'cannot reach a model server'),
      (client.ServingClient(model_server.address, 'other'), 'model other is not loaded'),
      (client.ServingClient(model_server.address, version=42), 'model vae version 42 is not'),
  ]
  for serving, message in cases:
    with serving, pytest.raises(status.ServingError, match=message):
      serving.score(digits)
  with client.ServingClient(model_server.address) as serving:
    with pytest.raises(status.ServingError, match='rejected the .* bad input'):
      serving.predict('serving_default', {'images': digits.astype(np.float32)})


def test_a_port_in_use_is_an_error(model_server, serving_dir):
  with pytest.raises(OSError, match='cannot listen on 127.0.0.1'):
    server.ModelServer(server.ServerConfig(
        model_dir=model_server.config.model_dir, port=model_server.port)).start()


def test_oversized_request_is_refused(serving_dir):
  with running_server(serving_dir, max_message_bytes=10_000) as small:
    with client.ServingClient(small.address) as serving:
      with pytest.raises(status.ServingError) as raised:
        serving.score(np.zeros((100, 28, 28), np.uint8))
      assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
      assert serving.score(np.zeros((2, 28, 28), np.uint8)).shape == (2,)




@pytest.mark.parametrize('threads', [0, 1])
def test_tensorflow_thread_pools_are_sized_before_the_model_loads(serving_dir, threads):
  """In a fresh process, as `vaetfx serve` runs: the pools the config names (0 leaves
  TensorFlow's choice, which it reports as 0), then the server answering."""
  code = textwrap.dedent(f'''
      import numpy as np, tensorflow as tf
      from vaetfx.serving import client, server
      config = server.ServerConfig({os.path.join(serving_dir, MODEL_NAME)!r}, port=0,
                                   poll_seconds=0, intra_op_threads={threads},
                                   inter_op_threads={2 * threads})
      with server.ModelServer(config) as model_server:
        with client.ServingClient(model_server.address, {MODEL_NAME!r}) as serving:
          assert serving.reconstruct(np.zeros((1, 28, 28), np.uint8))['elbo'].shape == (1,)
      print(tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads())
      ''')
  done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                        timeout=300, check=False)
  assert done.stdout.split() == [str(threads), str(2 * threads)], done.stderr[-2000:]
