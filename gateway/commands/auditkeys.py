"""The audit log's Ed25519 signing key, its public half, and the writer's state file.

``init_key`` makes a key pair: the private key (PKCS#8 PEM, mode 0600) stays with the gateway and
never goes into a log; the public key (SubjectPublicKeyInfo PEM) goes to whoever verifies the log,
who needs no secret. A key is named in records by its id: the first 16 hex digits of SHA-256 over
the raw 32-byte public key.

The state file holds the last checkpoint the writer signed, byte for byte as it is in the log,
replaced atomically (temporary file, fsync, rename, fsync of the folder) after each checkpoint.
"""

import hashlib
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.commands.auditrecord import SIGNATURE_CONTEXT, AuditKeyError

KeySource = str | os.PathLike | Ed25519PrivateKey
PublicKeySource = str | os.PathLike | Ed25519PublicKey


def key_id(public_key: Ed25519PublicKey) -> str:
    """16 hex digits naming a public key in records and messages."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_path(key_path: str | os.PathLike) -> Path:
    """Where ``init_key`` writes the public half by default: ``KEY.pub``."""
    return Path(f"{key_path}.pub")


def init_key(key_path: str | os.PathLike, public_path: str | os.PathLike | None = None,
             force: bool = False) -> tuple[Path, Path, str]:
    """Write a new key pair; (private path, public path, key id). Refuses to overwrite without ``force``."""
    private, public = Path(key_path), Path(public_path) if public_path else public_key_path(key_path)
    if not force:
        for path in (private, public):
            if path.exists():
                raise AuditKeyError(f"{path} exists: keep it, or give --force to replace it (logs signed with "
                                    f"the old key then verify only with the old public key)")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_new(private, pem, 0o600)
    _write_new(public, pub, 0o644)
    return private, public, key_id(key.public_key())


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
        fsync_dir(path.parent)
    except OSError as exc:
        raise AuditKeyError(f"{path}: cannot write: {exc.strerror}") from exc


def load_private_key(source: KeySource) -> Ed25519PrivateKey:
    """The signing key from a PEM file readable by its owner only (or a key object, for tests)."""
    if isinstance(source, Ed25519PrivateKey):
        return source
    path = Path(source)
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except FileNotFoundError:
        raise AuditKeyError(f"{path}: no audit signing key: make one with `gridgate audit init --key {path}`") from None
    except OSError as exc:
        raise AuditKeyError(f"{path}: cannot read the audit signing key: {exc.strerror}") from exc
    if mode & 0o077:
        raise AuditKeyError(f"{path}: the audit signing key is readable by others (mode {mode & 0o777:o}): "
                            f"chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise AuditKeyError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditKeyError(f"{path}: not an Ed25519 key (make one with `gridgate audit init --key {path}`)")
    return key


def load_public_key(source: PublicKeySource) -> Ed25519PublicKey:
    """The verifying key from a PEM file (SubjectPublicKeyInfo), or a key object."""
    if isinstance(source, Ed25519PublicKey):
        return source
    path = Path(source)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AuditKeyError(f"{path}: cannot read the public key: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        if b"PRIVATE KEY" in data:
            raise AuditKeyError(f"{path}: is a private key; verify with its public half ({path}.pub)") from None
        raise AuditKeyError(f"{path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise AuditKeyError(f"{path}: not an Ed25519 public key")
    return key


def sign_hash(key: Ed25519PrivateKey, hash_hex: str) -> str:
    """Hex signature over a record's hash (with a context prefix, so it signs nothing else)."""
    return key.sign(SIGNATURE_CONTEXT + bytes.fromhex(hash_hex)).hex()


def signature_ok(key: Ed25519PublicKey, hash_hex: str, sig_hex: Any) -> bool:
    """True when ``sig_hex`` is ``key``'s signature over ``hash_hex``."""
    try:
        key.verify(bytes.fromhex(sig_hex), SIGNATURE_CONTEXT + bytes.fromhex(hash_hex))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def default_state_path(key_path: str | os.PathLike, log_path: str | os.PathLike) -> Path:
    """Beside the key, named after the log: ``<key folder>/<log name>.state``."""
    return Path(key_path).parent / f"{Path(log_path).name}.state"


def read_state(path: Path) -> bytes | None:
    """The last checkpoint line the writer recorded, or None when there is no state file."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuditKeyError(f"{path}: cannot read the audit state file: {exc.strerror}") from exc


def write_state(path: Path, line: bytes) -> None:
    """Replace the state with ``line`` atomically and durably."""
    _write_new(path, line, 0o600)


def fsync_dir(directory: Path) -> None:
    """Make a new or renamed file's directory entry durable, so it survives a power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
