"""Whether the gateway trusts the certificate an OPC UA server shows, decided before any
credentials or data are exchanged.

asyncua alone trusts whatever the endpoint list offers unless both a loaded trust store and the
right validator options are set, and a pinned but different certificate surfaces only as a
timeout (research/drivers-next.md section 1). So the driver reads the server's certificate from
its endpoints first and decides here:

* trusted: the same certificate is in the ``trust`` folder (DER or PEM), or it chains to a CA
  certificate there (``cryptography``'s X.509 path validation, as asyncua's ``TrustStore`` does
  it) and no CRL in ``<trust>/crl/`` revokes it;
* ``trust_on_first_use: true`` and no certificate pinned for this endpoint yet: the one shown is
  written to the trust folder (``<host>_<port>.der``) and trusted from then on, so a later,
  different certificate is refused like any untrusted one;
* otherwise refused: the certificate is kept in ``<trust>/rejected/`` and the error says which
  certificate (subject, application URI, SHA-256) and which file to move to trust it.
"""

import hashlib
import logging
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.errors import DeviceError

log = logging.getLogger(__name__)


class UntrustedServer(DeviceError):
    """The server's certificate is not in the trust folder (nor issued by a CA there)."""


def load_certificate(data: bytes) -> x509.Certificate:
    """A certificate in PEM or DER, told by its content (file suffixes lie: ``.crt`` is often PEM)."""
    if data.lstrip().startswith(b"-----"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def application_uris(cert: x509.Certificate) -> list[str]:
    """The URIs in the certificate's SAN (an OPC UA application URI is the first)."""
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        return []


def describe(cert: x509.Certificate) -> str:
    """Subject, application URI and SHA-256 fingerprint: what an operator compares."""
    uris = application_uris(cert)
    fingerprint = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
    return f"{cert.subject.rfc4514_string()}, URI {', '.join(uris) or 'none'}, SHA-256 {fingerprint[:32]}..."


def _trusted_files(folder: Path) -> list[x509.Certificate]:
    found = []
    for path in sorted(folder.glob("*")):
        if path.suffix.lower() in (".der", ".pem", ".crt", ".cer") and path.is_file():
            found.append(load_certificate(path.read_bytes()))
    return found


def check_server(device: str, endpoint: tuple[str, int], der: bytes, trust: Path | None,
                       first_use: bool) -> None:
    """Return when the server certificate ``der`` is trusted; UntrustedServer naming it otherwise."""
    cert = x509.load_der_x509_certificate(der)
    folder = trust or Path("trusted")
    pinned = folder / f"{endpoint[0]}_{endpoint[1]}.der"
    known = _trusted_files(folder) if folder.is_dir() else []
    if any(c.public_bytes(Encoding.DER) == der for c in known) or (known and _chains(known, cert, folder / "crl")):
        return
    if first_use and not pinned.exists():
        folder.mkdir(parents=True, exist_ok=True)
        pinned.write_bytes(der)
        log.warning("%s: trusting the server certificate seen first (%s), pinned in %s", device, describe(cert), pinned)
        return
    rejected = folder / "rejected" / f"{hashlib.sha256(der).hexdigest()[:16]}.der"
    rejected.parent.mkdir(parents=True, exist_ok=True)
    rejected.write_bytes(der)
    changed = " (a different one is pinned for this endpoint)" if pinned.exists() else ""
    raise UntrustedServer(device, f"server certificate of opc.tcp://{endpoint[0]}:{endpoint[1]} is not trusted"
                                  f"{changed}: {describe(cert)}; if it is this server's, move {rejected} into {folder}")


def _chains(known: list[x509.Certificate], cert: x509.Certificate, crls: Path) -> bool:
    """Issued by a trusted CA (path validation), and not revoked by a CRL of that folder."""
    cas = [c for c in known if _is_ca(c)]
    if not cas:
        return False
    builder = x509.verification.PolicyBuilder().store(x509.verification.Store(cas)).extension_policies(
        ca_policy=x509.verification.ExtensionPolicy.webpki_defaults_ca(),
        ee_policy=x509.verification.ExtensionPolicy.permit_all())
    try:
        builder.build_client_verifier().verify(cert, [])
    except x509.verification.VerificationError:
        return False
    return not any(crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
                   for crl in _crls(crls))


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _crls(folder: Path) -> list[x509.CertificateRevocationList]:
    found = []
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        data = path.read_bytes()
        loader = x509.load_pem_x509_crl if data.startswith(b"-----") else x509.load_der_x509_crl
        found.append(loader(data))
    return found
