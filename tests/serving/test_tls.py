"""TLS between the client and the server, with a self-signed certificate made for the test."""

import grpc
import pytest

from tests.serving.helpers import MODEL_NAME, running_server
from vaetfx.serving import client, status


def test_tls_client_queries_tls_server(serving_dir, certificate, digits):
  cert, key = certificate
  with running_server(serving_dir, tls_cert_file=cert, tls_key_file=key) as model_server:
    with client.ServingClient(model_server.address, MODEL_NAME, tls_ca_file=cert) as serving:
      assert serving.score(digits).shape == (8,)
    with client.ServingClient(model_server.address, MODEL_NAME, timeout=5) as plaintext:
      with pytest.raises(status.ServingError) as raised:
        plaintext.score(digits)
      assert raised.value.code == grpc.StatusCode.UNAVAILABLE
