"""One audit record: its event names, its two hash forms, its encoding, and the typed errors.

Pure: values in, values out. ``audit.py`` writes records, ``auditverify.py`` checks them; both
use the definitions here so that the writer and the verifier cannot drift apart.

Two hash forms exist (see ``audit.py`` for why):

* **written form** (every record of a signed log, from its ``open`` record on): the hash is over
  the record's bytes as written, up to and without ``,"hash":…``, closed with ``}``. The writer
  puts ``hash`` (and, on a checkpoint, ``sig``) last, so the verifier hashes a slice of the line
  it has already read: no re-serialisation, one hash per record.
* **canonical form** (logs written before signing, and the unsigned mode): the hash is over the
  record's canonical JSON (sorted keys, no ``hash``), so key order on disk does not matter.
"""

import hashlib
import json
import math
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Callable

from cryptography.hazmat.primitives import hashes

from gateway.errors import GatewayError

RECEIVED = "received"
REFUSED = "refused"
WRITTEN = "written"
READ_BACK = "read_back"
CONFIRMED = "confirmed"
SELECTED = "selected"
DESELECTED = "deselected"
FAILED = "failed"
FAILSAFE = "failsafe"
# The log's own records: written by AuditLog only, refused from callers of append.
OPEN = "open"                # the signed genesis, first record of every file
CHECKPOINT = "checkpoint"    # a signed seal of the chain head
CHAIN_EVENTS = frozenset({OPEN, CHECKPOINT})

GENESIS = "0" * 64
RESERVED = frozenset({"seq", "ts", "ts_local", "alg", "event", "prev", "hash", "sig"})
SIGNATURE_CONTEXT = b"gridgate audit checkpoint v1\x00"


class AuditError(GatewayError):
    """The audit log cannot take a record (broken chain, write failure, bad field); fail closed."""


class AuditKeyError(AuditError):
    """A signing key, public key or state file that cannot be made, read or used."""


class AuditFinding(AuditError):
    """A problem found in a log, naming the file, the line and the seq where it shows.

    ``first_bad`` is the seq of the first record that is not trustworthy (edited, removed, out of
    place), or the line number when the line is not a record at all.
    """

    def __init__(self, what: str, file: Any = None, line: int | None = None, seq: int | None = None,
                 first_bad: int | None = None) -> None:
        self.what, self.file, self.line, self.seq = what, file, line, seq
        self.first_bad = first_bad if first_bad is not None else seq
        super().__init__(self.where() + what)

    def where(self) -> str:
        """``file:line: seq N: `` as far as known."""
        place = str(self.file) if self.file is not None else ""
        if self.line:
            place = f"{place}:{self.line}" if place else f"line {self.line}"
        parts = [place] if place else []
        if self.seq is not None:
            parts.append(f"seq {self.seq}")
        return "".join(f"{part}: " for part in parts)


class RecordDamaged(AuditFinding):
    """A line that is not a record, is torn, or whose hash does not match its content (edited)."""


class ChainBroken(AuditFinding):
    """Records removed, reordered, duplicated, or edited and re-hashed: a link does not hold."""


class SignatureInvalid(AuditFinding):
    """A checkpoint whose signature does not verify: the records before it were re-chained without the key."""


class WrongKey(AuditFinding):
    """A log (or state) signed by another key than the one given: the file was replaced."""


class LogCut(AuditFinding):
    """Records cut off: an empty file, a cut before a checkpoint the state remembers, a missing part."""


class LogReplaced(AuditFinding):
    """A file that is not the log it should be: another log id, or unsigned where a signed log was."""


def _sm3() -> Callable[[bytes], str]:
    if "sm3" in hashlib.algorithms_available:
        return lambda data: hashlib.new("sm3", data).hexdigest()

    def with_cryptography(data: bytes) -> str:  # pragma: no cover - OpenSSL without SM3 in hashlib
        hasher = hashes.Hash(hashes.SM3())
        hasher.update(data)
        return hasher.finalize().hex()
    return with_cryptography


HASHERS: dict[str, Callable[[bytes], str]] = {"sha256": lambda data: hashlib.sha256(data).hexdigest(), "sm3": _sm3()}
ALGORITHMS = HASHERS  # the names accepted for ``AuditLog(path, algorithm)``


def digest(data: bytes, algorithm: str) -> str:
    """Hex digest of ``data`` with ``algorithm`` (``sha256`` or ``sm3``, both 256 bits)."""
    return HASHERS[algorithm](data)


def canonical(record: dict[str, Any]) -> bytes:
    """The canonical JSON of a record without ``hash`` and ``sig``."""
    body = {key: value for key, value in record.items() if key not in ("hash", "sig")}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def record_hash(record: dict[str, Any], algorithm: str) -> str:
    """The canonical-form hash of a record (logs written before signing, the unsigned mode)."""
    return digest(canonical(record), algorithm)


def json_safe(value: Any, name: str) -> Any:
    """``value`` as plain JSON that hashes the same after a round trip; NaN/Inf become strings."""
    if isinstance(value, Enum):
        return json_safe(value.value, name)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [json_safe(item, name) for item in value]
    if isinstance(value, dict):
        return {str(key): json_safe(item, f"{name}.{key}") for key, item in value.items()}
    raise AuditError(f"audit field {name!r}: {type(value).__name__} is not a JSON value")


def encode_written(body: dict[str, Any], algorithm: str,
                   sign: Callable[[str], str] | None = None) -> tuple[bytes, dict[str, Any]]:
    """(line, record) of a written-form record: ``body`` ends with ``prev``; ``hash`` and ``sig`` are added."""
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    record = dict(body)
    record["hash"] = digest(text, algorithm)
    suffix = b',"hash":"' + record["hash"].encode() + b'"'
    if sign is not None:
        record["sig"] = sign(record["hash"])
        suffix += b',"sig":"' + record["sig"].encode() + b'"'
    return text[:-1] + suffix + b"}\n", record


def encode_canonical(body: dict[str, Any], algorithm: str) -> tuple[bytes, dict[str, Any]]:
    """(line, record) of a canonical-form record (the unsigned mode)."""
    record = dict(body)
    record["hash"] = record_hash(record, algorithm)
    line = json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n"
    return line.encode("utf-8"), record


def written_hash_ok(raw: bytes, record: dict[str, Any]) -> bool:
    """True when ``record["hash"]`` is the hash of ``raw`` in the written form (``hash``/``sig`` last)."""
    suffix = b',"hash":"' + record["hash"].encode() + b'"'
    sig = record.get("sig")
    if sig is not None:
        if not isinstance(sig, str):
            return False
        suffix += b',"sig":"' + sig.encode() + b'"'
    suffix += b"}\n"
    if not raw.endswith(suffix):
        return False
    return HASHERS[record["alg"]](raw[:-len(suffix)] + b"}") == record["hash"]


def canonical_hash_ok(record: dict[str, Any]) -> bool:
    """True when ``record["hash"]`` is its canonical-form hash."""
    try:
        return record_hash(record, record["alg"]) == record["hash"]
    except ValueError:  # NaN/Infinity literals: never written by append
        return False


def parse_line(raw: bytes, line: int, file: Any = None, duplicates: bool = False) -> dict[str, Any]:
    """The record on one line, or RecordDamaged saying why the line is not one.

    ``duplicates`` refuses a key given twice (needed for the canonical form, where a reader could
    see the other value than the hash covered); the written form hashes the bytes themselves.
    """
    if not raw.endswith(b"\n"):
        raise RecordDamaged("torn record (no end of line): a write was interrupted, e.g. by a crash or power loss",
                            file, line, first_bad=line)
    try:
        text = raw.decode("utf-8")
        record = json.loads(text, object_pairs_hook=_no_duplicates) if duplicates else json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RecordDamaged(f"not a JSON record ({exc}): damaged or edited", file, line, first_bad=line) from None
    if not isinstance(record, dict):
        raise RecordDamaged("not a JSON object: damaged or edited", file, line, first_bad=line)
    for key, kind in (("seq", int), ("prev", str), ("hash", str), ("alg", str), ("event", str)):
        value = record.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise RecordDamaged(f"field {key!r} missing or not {kind.__name__}: damaged or edited", file, line,
                                first_bad=line)
    if record["alg"] not in HASHERS:
        raise RecordDamaged(f"unknown hash algorithm {record['alg']!r}", file, line, record["seq"])
    return record


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object; a repeated key (a reader might show the other value) is an edit."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {key!r} appears twice")
        result[key] = value
    return result
