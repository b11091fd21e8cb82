"""Self-signed application certificates for the simulated OPC UA servers.

A secured endpoint needs a server certificate, and a test or a demo needs that certificate as a
file to put into the client's trust folder: so each endpoint gets its own RSA-2048 key and
certificate, written as DER (what OPC UA exchanges) and the key as PEM. The fields are those an
OPC UA client checks (asyncua's ``CertificateValidator`` with ``TRUSTED_VALIDATION``): the
application URI in the SAN, the four key usages, server and client EKUs. It is a plain end-entity
certificate (no ``cA``, no ``keyCertSign``): asyncua's ``TrustStore`` accepts it as its own trust
anchor once the DER file sits in the trust folder, and refuses any other.
"""

import datetime
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 365
KEY_BITS = 2048


def application_uri(host: str, port: int) -> str:
    """The simulated server's application URI, also the URI in its certificate's SAN."""
    return f"urn:gridgate:sim:{host}:{port}"


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    """Where one endpoint's certificate (DER) and private key (PEM) are."""

    certificate: Path
    private_key: Path


def _alternative_names(host: str, uri: str) -> list[x509.GeneralName]:
    """URI, plus the names a client may have dialled: the host, localhost, 127.0.0.1, this machine.

    asyncua's server logs a warning at start when the machine's host name is missing, so it is in.
    """
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    dns = {"localhost", socket.gethostname()}
    addresses = {ipaddress.ip_address("127.0.0.1")}
    try:
        addresses.add(ipaddress.ip_address(host))
    except ValueError:
        dns.add(host)
    names += [x509.DNSName(name) for name in sorted(dns)]
    names += [x509.IPAddress(address) for address in sorted(addresses, key=str)]
    return names


def _certificate(key: rsa.RSAPrivateKey, host: str, port: int) -> x509.Certificate:
    uri = application_uri(host, port)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"gridgate simulator {host}:{port}"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gridgate")])
    now = datetime.datetime.now(datetime.timezone.utc)
    usage = x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=True,
                          data_encipherment=True, key_agreement=False, key_cert_sign=False,
                          crl_sign=False, encipher_only=False, decipher_only=False)
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))  # peers with a clock slightly behind
            .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(_alternative_names(host, uri)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))


def kept_certificate(folder: Path, host: str, port: int) -> CertificateFiles:
    """The endpoint's certificate already in ``folder`` (still valid), else a new one: a simulator
    restarted with the same folder keeps the certificate its clients already trust."""
    files = CertificateFiles(folder / f"sim-{host}-{port}.der", folder / f"sim-{host}-{port}.key.pem")
    if files.certificate.is_file() and files.private_key.is_file():
        cert = x509.load_der_x509_certificate(files.certificate.read_bytes())
        if cert.not_valid_after_utc > datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1):
            return files
    return write_certificate(folder, host, port)


def write_certificate(folder: Path, host: str, port: int) -> CertificateFiles:
    """A fresh key and certificate for the endpoint ``host:port``, written into ``folder``.

    The same file names every time, so a regenerated certificate replaces the previous one.
    """
    folder.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    files = CertificateFiles(folder / f"sim-{host}-{port}.der", folder / f"sim-{host}-{port}.key.pem")
    files.certificate.write_bytes(_certificate(key, host, port).public_bytes(serialization.Encoding.DER))
    files.private_key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                    serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    files.private_key.chmod(0o600)
    return files
