"""``gridgate certs``: a small CA for the TLS of the 104 master groups (IEC 62351-3) and the
gateway's OPC UA application certificate.

``init`` makes a CA (``ca.crt``, ``ca.key``), ``issue`` a server certificate (EKU serverAuth, with
the names masters connect to as SANs) or a client certificate (EKU clientAuth, one per dispatch
master), ``show`` prints what a certificate says and how long it has left. ECDSA P-256 unless
``--rsa`` (RSA-2048). Keys are unencrypted PEM (PKCS#8), mode 0600, and never overwritten
without ``--force``. The functions are usable from tests (``make_ca``, ``issue``, ``write_pair``,
``describe``); ``not_before`` makes certificates that are already expired or not yet valid.
"""

import argparse
import datetime
import ipaddress
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]
Role = Literal["server", "client", "opcua"]
CA_DAYS = 3650
LEAF_DAYS = 730
EKU_NAMES = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth", ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth"}


class CertError(Exception):
    """A certificate or key file that cannot be written, read or used as asked."""


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: PrivateKey


def utcnow() -> datetime.datetime:
    """The current time, timezone-aware UTC."""
    return datetime.datetime.now(datetime.timezone.utc)


def new_key(use_rsa: bool = False) -> PrivateKey:
    """A fresh ECDSA P-256 key, or RSA-2048 with ``use_rsa``."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048) if use_rsa else ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(days: int, not_before: datetime.datetime | None) -> tuple[datetime.datetime, datetime.datetime]:
    if not_before is not None:
        return not_before, not_before + datetime.timedelta(days=days)
    now = utcnow()
    return now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)  # slack for clocks behind


def make_ca(common_name: str = "gridgate CA", days: int = CA_DAYS, use_rsa: bool = False,
            not_before: datetime.datetime | None = None) -> KeyPair:
    """A self-signed CA that may sign end-entity certificates only (path length 0)."""
    key = new_key(use_rsa)
    start, end = _validity(days, not_before)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256()))
    return KeyPair(cert, key)


def issue(ca: KeyPair, name: str, role: Role, ips: Iterable[str] = (), dns: Iterable[str] = (),
          days: int = LEAF_DAYS, use_rsa: bool = False, not_before: datetime.datetime | None = None,
          uri: str | None = None) -> KeyPair:
    """A certificate with CN ``name`` signed by ``ca``: serverAuth with SANs, clientAuth, or an
    OPC UA application instance certificate; never valid after the CA.

    A server certificate needs at least one SAN (the address or name masters connect to): TLS
    clients check the name against the SANs, not the CN. An OPC UA certificate (``opcua``) is
    RSA with the application URI as a URI SAN (a server checks it against the client's
    ApplicationUri), the key usages OPC UA's security policies need, and both EKUs.
    """
    try:
        sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    except ValueError as exc:
        raise CertError(str(exc)) from None
    sans += [x509.DNSName(d) for d in dns]
    if role == "server" and not sans:
        raise CertError("a server certificate needs --ip or --dns: the address or name the masters connect to")
    if role == "opcua":
        if not uri:
            raise CertError("an OPC UA certificate needs --uri: the application URI (e.g. urn:gridgate:site1)")
        sans.insert(0, x509.UniformResourceIdentifier(uri))
        use_rsa = True
    if days < 1:
        raise CertError("--days must be at least 1")
    key = new_key(use_rsa)
    start, end = _validity(days, not_before)
    end = min(end, ca.cert.not_valid_after_utc)  # a certificate is never valid longer than its CA
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca.cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=use_rsa,
                                            content_commitment=role == "opcua", data_encipherment=role == "opcua",
                                            key_agreement=False, key_cert_sign=False, crl_sign=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(_ekus(role)), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return KeyPair(builder.sign(ca.key, hashes.SHA256()), key)


def _ekus(role: Role) -> list[x509.ObjectIdentifier]:
    if role == "opcua":
        return [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    return [ExtendedKeyUsageOID.SERVER_AUTH if role == "server" else ExtendedKeyUsageOID.CLIENT_AUTH]


# -- files ----------------------------------------------------------------------------------------

def _create(path: Path, data: bytes, mode: int, force: bool) -> None:
    """Write ``data`` to a new file of ``mode``; an existing file is an error unless ``force``."""
    if force:
        path.unlink(missing_ok=True)
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise CertError(f"{path} exists; not overwritten (use --force to replace it)") from None
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    os.chmod(path, mode)  # the umask may have taken bits away; never added any


def write_pair(pair: KeyPair, cert_path: Path, key_path: Path, force: bool = False) -> None:
    """Write the certificate (0644) and its key (0600, PKCS#8 PEM); refuse to replace either unless ``force``."""
    if not force:
        for path in (cert_path, key_path):
            if path.exists():
                raise CertError(f"{path} exists; not overwritten (use --force to replace it)")
    key_pem = pair.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
    _create(key_path, key_pem, 0o600, force)
    _create(cert_path, pair.cert.public_bytes(serialization.Encoding.PEM), 0o644, force)


def load_cert(path: Union[str, Path]) -> x509.Certificate:
    """The first PEM certificate in ``path``; CertError saying why not."""
    return load_certs(path)[0]


def load_certs(path: Union[str, Path]) -> list[x509.Certificate]:
    """Every PEM certificate in ``path`` (a CA file may hold several during a CA change)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CertError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertError(f"{path} is not a PEM certificate") from None


def load_key(path: Union[str, Path]) -> PrivateKey:
    """The unencrypted PEM private key in ``path``; CertError saying why not."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CertError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise CertError(f"{path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise CertError(f"{path}: only ECDSA and RSA keys are supported")
    return key


def key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    """Whether ``key`` is the private key of ``cert``."""
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(*der) == key.public_key().public_bytes(*der)


def load_ca(folder: Path) -> KeyPair:
    """The CA made by ``gridgate certs init`` in ``folder``."""
    cert, key = load_cert(folder / "ca.crt"), load_key(folder / "ca.key")
    if not key_matches(cert, key):
        raise CertError(f"{folder / 'ca.key'} is not the key of {folder / 'ca.crt'}")
    return KeyPair(cert, key)


# -- what a certificate says ----------------------------------------------------------------------

def common_name(name: x509.Name) -> str:
    """``CN=...`` of a name, or its full RFC 4514 form when it has no CN."""
    found = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return f"CN={found[0].value}" if found else name.rfc4514_string()


def days_left(cert: x509.Certificate, now: datetime.datetime | None = None) -> int:
    """Days until the certificate expires, part days counted as whole (negative once it has)."""
    return math.ceil((cert.not_valid_after_utc - (now or utcnow())) / datetime.timedelta(days=1))


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint as colon-separated hex, as ``openssl x509 -fingerprint -sha256`` prints it."""
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def sans(cert: x509.Certificate) -> list[str]:
    """Subject alternative names as ``URI:...`` / ``DNS:...`` / ``IP:...``."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return ([f"URI:{n}" for n in names.get_values_for_type(x509.UniformResourceIdentifier)]
            + [f"DNS:{n}" for n in names.get_values_for_type(x509.DNSName)]
            + [f"IP:{n}" for n in names.get_values_for_type(x509.IPAddress)])


def ekus(cert: x509.Certificate) -> list[str]:
    """Extended key usages by their short names (serverAuth, clientAuth, or the dotted OID)."""
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return []
    return [EKU_NAMES.get(u, u.dotted_string) for u in usages]


def expiry_text(cert: x509.Certificate, now: datetime.datetime | None = None) -> str:
    """``expires 2027-01-01 (401 days)`` or ``EXPIRED on 2025-01-01 (3 days ago)``."""
    left, date = days_left(cert, now), cert.not_valid_after_utc.date().isoformat()
    if cert.not_valid_after_utc <= (now or utcnow()):
        return f"EXPIRED on {date} ({-left} days ago)"
    return f"expires {date} ({left} days)"


def describe(cert: x509.Certificate, now: datetime.datetime | None = None) -> list[tuple[str, str]]:
    """What ``gridgate certs show`` prints, as (label, text) rows."""
    before = cert.not_valid_before_utc
    return [("subject", cert.subject.rfc4514_string()), ("issuer", cert.issuer.rfc4514_string()),
            ("serial", f"{cert.serial_number:X}"), ("sha256", fingerprint(cert)),
            ("not before", before.isoformat() + (" (NOT YET VALID)" if before > (now or utcnow()) else "")),
            ("not after", f"{cert.not_valid_after_utc.isoformat()}, {expiry_text(cert, now)}"),
            ("SANs", ", ".join(sans(cert)) or "-"), ("EKU", ", ".join(ekus(cert)) or "-")]


# -- command line ---------------------------------------------------------------------------------

def cmd_init(args: argparse.Namespace) -> int:
    """Make the CA in DIR."""
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca = make_ca(args.cn, args.days, args.rsa)
    write_pair(ca, folder / "ca.crt", folder / "ca.key", args.force)
    print(f"{folder / 'ca.crt'}: {common_name(ca.cert.subject)}, {expiry_text(ca.cert)}")
    print(f"{folder / 'ca.key'}: keep it offline; issue certificates with `gridgate certs issue {folder} ...`")
    return 0


def cmd_issue(args: argparse.Namespace) -> int:
    """Issue NAME.crt / NAME.key in DIR, signed by DIR's CA."""
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", args.name):
        raise CertError(f"--name {args.name!r}: letters, digits, '_', '.', '-' only (it names the files)")
    folder = Path(args.dir)
    ca = load_ca(folder)
    pair = issue(ca, args.name, args.role, args.ip, args.dns, args.days, args.rsa, uri=args.uri)
    out = Path(args.out) if args.out else folder
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_pair(pair, out / f"{args.name}.crt", out / f"{args.name}.key", args.force)
    extra = f", {', '.join(sans(pair.cert))}" if args.role != "client" else ""
    print(f"{out / (args.name + '.crt')}: {args.role} {common_name(pair.cert.subject)}{extra}, {expiry_text(pair.cert)}")
    print(f"  sha256 {fingerprint(pair.cert)}")
    if pair.cert.not_valid_after_utc == ca.cert.not_valid_after_utc:
        print("  valid only until the CA expires: renew the CA first (see certs/README.md)")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print each certificate; exit 1 if one could not be read."""
    code = 0
    for path in args.files:
        try:
            cert = load_cert(path)
        except CertError as exc:
            print(f"gridgate certs show: {exc}", file=sys.stderr)
            code = 1
            continue
        print(path)
        for label, text in describe(cert):
            print(f"  {label:<11} {text}")
    return code


def main(args: argparse.Namespace) -> int:
    """Run the chosen ``certs`` verb; CertError is a message and exit code 1."""
    try:
        return args.certs_func(args)
    except CertError as exc:
        print(f"gridgate certs {args.certs_command}: {exc}", file=sys.stderr)
        return 1


def add_parser(sub: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    """``gridgate certs init|issue|show``."""
    certs = sub.add_parser("certs", help="make a CA; issue and show TLS certificates")
    verbs = certs.add_subparsers(dest="certs_command", required=True)
    init = verbs.add_parser("init", help="make a CA (ca.crt, ca.key) in DIR")
    init.add_argument("dir")
    init.add_argument("--cn", default="gridgate CA", help="common name of the CA")
    init.add_argument("--days", type=int, default=CA_DAYS, help=f"validity (default {CA_DAYS})")
    init.set_defaults(certs_func=cmd_init)
    iss = verbs.add_parser("issue", help="issue NAME.crt and NAME.key signed by DIR's CA")
    iss.add_argument("dir")
    iss.add_argument("--name", required=True, help="common name, and the file names")
    iss.add_argument("--role", required=True, choices=["server", "client", "opcua"],
                     help="server: the gateway's outstation; client: one dispatch master; opcua: the gateway "
                          "as an OPC UA client (RSA, application URI SAN)")
    iss.add_argument("--uri", default=None, help="OPC UA application URI (role opcua), e.g. urn:gridgate:site1")
    iss.add_argument("--ip", action="append", default=[], help="IP address SAN (server; repeatable)")
    iss.add_argument("--dns", action="append", default=[], help="DNS name SAN (server; repeatable)")
    iss.add_argument("--days", type=int, default=LEAF_DAYS, help=f"validity (default {LEAF_DAYS})")
    iss.add_argument("--out", default=None, help="folder to write into (default: DIR)")
    iss.set_defaults(certs_func=cmd_issue)
    for verb in (init, iss):
        verb.add_argument("--rsa", action="store_true", help="RSA-2048 instead of ECDSA P-256")
        verb.add_argument("--force", action="store_true", help="replace existing files")
    show = verbs.add_parser("show", help="print subject, issuer, fingerprint, validity, SANs, EKU")
    show.add_argument("files", nargs="+", metavar="FILE")
    show.set_defaults(certs_func=cmd_show)
    certs.set_defaults(func=main)
    return certs
