"""TLS between the client and the server, with a self-signed certificate made for the test."""
import datetime
import ipaddress

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.serving.helpers import MODEL_NAME, running_server
from vaetfx.serving import client, status


@pytest.fixture(scope='module')
def certificate(tmp_path_factory):
  """(cert.pem, key.pem) for 127.0.0.1, valid for a day."""
  key = ec.generate_private_key(ec.SECP256R1())
  name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'localhost')])
  now = datetime.datetime.now(datetime.timezone.utc)
  cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
          .public_key(key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.SubjectAlternativeName(
              [x509.DNSName('localhost'), x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]),
                         critical=False)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(key, hashes.SHA256()))
  directory = tmp_path_factory.mktemp('tls')
  cert_path, key_path = directory / 'cert.pem', directory / 'key.pem'
  cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
  key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                         serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
  return str(cert_path), str(key_path)


def test_tls_client_queries_tls_server(serving_dir, certificate, digits):
  cert, key = certificate
  with running_server(serving_dir, tls_cert_file=cert, tls_key_file=key) as model_server:
    with client.ServingClient(model_server.address, MODEL_NAME, tls_ca_file=cert) as serving:
      assert serving.score(digits).shape == (8,)
    with client.ServingClient(model_server.address, MODEL_NAME, timeout=5) as plaintext:
      with pytest.raises(status.ServingError) as raised:
        plaintext.score(digits)
      assert raised.value.code == grpc.StatusCode.UNAVAILABLE
