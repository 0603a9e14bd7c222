"""Self-signed certificates for the tests' TLS servers: `vaetfx serve --tls-cert` and the GCS
emulator (tests/gcs_emulator.py)."""
import datetime
import ipaddress
import os
from typing import Sequence, Tuple


def write_self_signed(directory: str, hosts: Sequence[str], cert_name: str = 'cert.pem',
                      key_name: str = 'key.pem') -> Tuple[str, str]:
  """(certificate path, key path): a CA certificate for `hosts` and 127.0.0.1, valid from a day
  ago for a week, so clients that trust it as their CA accept the server."""
  # cryptography is a test dependency (setup.py's extras): imported where it is used.
  from cryptography import x509  # pylint: disable=g-import-not-at-top
  from cryptography.hazmat.primitives import hashes, serialization  # pylint: disable=g-import-not-at-top
  from cryptography.hazmat.primitives.asymmetric import ec  # pylint: disable=g-import-not-at-top
  key = ec.generate_private_key(ec.SECP256R1())
  name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, hosts[0])])
  now = datetime.datetime.now(datetime.timezone.utc)
  certificate = (
      x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
      .serial_number(x509.random_serial_number())
      .not_valid_before(now - datetime.timedelta(days=1))
      .not_valid_after(now + datetime.timedelta(days=7))
      .add_extension(x509.SubjectAlternativeName(
          [x509.DNSName(host) for host in hosts] +
          [x509.IPAddress(ipaddress.ip_address('127.0.0.1'))]), critical=False)
      .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
      .sign(key, hashes.SHA256()))
  key_path, cert_path = os.path.join(directory, key_name), os.path.join(directory, cert_name)
  with open(key_path, 'wb') as f:
    f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
  with open(cert_path, 'wb') as f:
    f.write(certificate.public_bytes(serialization.Encoding.PEM))
  return cert_path, key_path
