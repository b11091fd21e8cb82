"""The command audit log: append-only JSON Lines, each record chained to the previous one by hash.

A dispatch command must leave evidence that survives a crash and shows tampering: every record is
flushed and fsynced before ``append`` returns, and carries ``prev`` (the hash of the record before
it) and ``hash`` (SHA-256 or SM3 over its own canonical JSON, ``hash`` left out). Editing,
removing or reordering any record breaks the chain at that record, and ``verify`` names it.
A chain cannot show that records were cut off *at the end*: compare the last hash ``verify``
prints with one kept elsewhere (a signed checkpoint, the site's SIEM) to cover that.

The command gate writes these fields (all optional, ``show`` displays them): ``command`` (the id
from ``new_command_id``), ``group`` (master group), ``point`` (device.point), ``value``,
``reason``, plus ``ioa``, ``type``, ``issued_at``, ``origin``, ``latency_ms``.
"""

import json
import math
import os
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import date, datetime, timezone
from enum import Enum
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Literal

from cryptography.hazmat.primitives import hashes

from gateway.errors import GatewayError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no writer lock
    fcntl = None  # type: ignore[assignment]

RECEIVED = "received"
REFUSED = "refused"
WRITTEN = "written"
READ_BACK = "read_back"
CONFIRMED = "confirmed"
SELECTED = "selected"
DESELECTED = "deselected"
FAILED = "failed"
FAILSAFE = "failsafe"

Algorithm = Literal["sha256", "sm3"]
ALGORITHMS: dict[str, Callable[[], hashes.HashAlgorithm]] = {"sha256": hashes.SHA256, "sm3": hashes.SM3}
GENESIS = "0" * 64
RESERVED = frozenset({"seq", "ts", "ts_local", "alg", "event", "prev", "hash"})


class AuditError(GatewayError):
    """The audit log cannot take a record (broken chain, write failure, bad field); fail closed."""


def new_command_id() -> str:
    """A short id that ties together every record of one command."""
    return uuid.uuid4().hex[:12]


def digest(data: bytes, algorithm: str) -> str:
    """Hex digest of ``data`` with ``algorithm`` (``sha256`` or ``sm3``, both 256 bits)."""
    hasher = hashes.Hash(ALGORITHMS[algorithm]())
    hasher.update(data)
    return hasher.finalize().hex()


def record_hash(record: dict[str, Any], algorithm: str) -> str:
    """The hash of a record: its canonical JSON without ``hash``, so key order on disk does not matter."""
    body = {key: value for key, value in record.items() if key != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return digest(canonical.encode("utf-8"), algorithm)


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


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class AuditLog:
    """One writer of one hash-chained log file; reopening continues the chain.

    The file is locked against a second writer (two chains in one file would break both). If the
    last record on disk is torn or does not hash, ``problem`` says so and ``append`` refuses:
    the evidence is kept as it is, and commands fail closed until an operator moves it aside.
    Call from one thread (the reactor's).
    """

    def __init__(self, path: str | os.PathLike, algorithm: Algorithm = "sha256",
                 clock: Callable[[], datetime] = _utc_now) -> None:
        if algorithm not in ALGORITHMS:
            raise AuditError(f"unknown audit hash algorithm {algorithm!r} (use sha256 or sm3)")
        self.path = Path(path)
        self.algorithm = algorithm
        self._clock = clock
        self._file = _open_locked(self.path)
        self._seq, self._prev, self._problem = _chain_tail(self.path, algorithm)

    @property
    def problem(self) -> str | None:
        """Why ``append`` refuses, or None while the chain can be continued."""
        return self._problem

    @property
    def seq(self) -> int:
        """The seq of the last record written (0 for an empty log)."""
        return self._seq

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one record and return it once it is on disk; AuditError when it cannot be."""
        if self._problem:
            raise AuditError(self._problem)
        if self._file is None:
            raise AuditError(f"{self.path}: audit log is closed")
        clash = RESERVED & fields.keys()
        if clash:
            raise AuditError(f"audit fields {sorted(clash)} are reserved")
        try:
            record = self._record(event, fields)
        except ValueError as exc:  # e.g. a string that is not valid Unicode
            raise AuditError(f"audit record {event!r} cannot be encoded: {exc}") from exc
        self._write(record)
        self._seq, self._prev = record["seq"], record["hash"]
        return record

    def close(self) -> None:
        """Release the file (and its writer lock)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "AuditLog":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _record(self, event: str, fields: dict[str, Any]) -> dict[str, Any]:
        now = self._clock()
        record: dict[str, Any] = {
            "seq": self._seq + 1,
            "ts": now.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "ts_local": now.astimezone().isoformat(timespec="milliseconds"),
            "alg": self.algorithm,
            "event": str(event),
        }
        record.update({name: json_safe(value, name) for name, value in fields.items()})
        record["prev"] = self._prev
        record["hash"] = record_hash(record, self.algorithm)
        return record

    def _write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n"
        assert self._file is not None
        try:
            self._file.write(line.encode("utf-8"))
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:
            self._problem = (f"{self.path}: writing record seq {record['seq']} failed ({exc}); the last line may "
                             f"be torn: run `gridgate audit verify {self.path}`, move the file aside, start a new log")
            raise AuditError(self._problem) from exc


def _open_locked(path: Path) -> IO[bytes]:
    """Open for appending (created 0640), exclusively locked against a second writer."""
    created = not path.exists()
    try:
        handle = os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640), "ab")
    except OSError as exc:
        raise AuditError(f"{path}: cannot open the audit log: {exc.strerror}") from exc
    if fcntl is not None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            raise AuditError(f"{path}: audit log is in use by another writer") from exc
    if created:
        _fsync_dir(path.parent)
    return handle


def _fsync_dir(directory: Path) -> None:
    """Make a new file's directory entry durable, so the log itself survives a power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _chain_tail(path: Path, algorithm: str) -> tuple[int, str, str | None]:
    """(seq, hash, problem) of the last record, read from the end of the file without reading it all."""
    raw = _last_line(path)
    if not raw:
        return 0, GENESIS, None
    advice = f"; run `gridgate audit verify {path}`, move the file aside and start a new log"
    try:
        record = _parse(raw, 0)
        _check_hash(record, 0)
    except _ChainBroken as broken:
        return 0, "", f"{path}: last record cannot be continued: {broken.reason}{advice}"
    if record["alg"] != algorithm:
        return 0, "", f"{path}: the log is chained with {record['alg']}, not {algorithm}; start a new file to change it"
    return record["seq"], record["hash"], None


def _last_line(path: Path, chunk: int = 8192) -> bytes:
    """The file's last line, with its newline if it has one; b"" for an empty file."""
    with open(path, "rb") as stream:
        position = stream.seek(0, os.SEEK_END)
        tail = b""
        while position > 0:
            step = min(chunk, position)
            position -= step
            stream.seek(position)
            tail = stream.read(step) + tail
            cut = tail.rfind(b"\n", 0, len(tail) - 1)
            if cut >= 0:
                return tail[cut + 1:]
        return tail


# -- verification ------------------------------------------------------------------------------

@dataclass(frozen=True)
class VerifyResult:
    """Outcome of ``verify``: the first problem, or how many records form an intact chain.

    ``first_bad`` is the seq of the record edited, removed or out of place, or the line number when
    the line is not a record at all; ``line`` is where the problem was found.
    """

    ok: bool
    records: int
    first_bad: int | None
    reason: str
    line: int | None = None
    algorithm: str = ""
    last_hash: str = ""


class _ChainBroken(Exception):
    def __init__(self, reason: str, first_bad: int | None, line: int) -> None:
        super().__init__(reason)
        self.reason, self.first_bad, self.line = reason, first_bad, line


def verify(path: str | os.PathLike) -> VerifyResult:
    """Recompute every hash and link; stop at the first record edited, removed or reordered."""
    count, seq, last_hash, algorithm, prev_line = 0, 0, GENESIS, "", 0
    try:
        with open(path, "rb") as stream:
            lines = enumerate(stream, 1)
            for number, raw in lines:
                record = _parse(raw, number)
                _check_hash(record, number)
                algorithm = algorithm or record["alg"]
                _check_link(record, number, seq, last_hash, prev_line, algorithm, lines)
                count, seq, last_hash, prev_line = count + 1, record["seq"], record["hash"], number
    except OSError as exc:
        raise AuditError(f"{path}: cannot read the audit log: {exc.strerror}") from exc
    except _ChainBroken as broken:
        return VerifyResult(False, count, broken.first_bad, broken.reason, broken.line, algorithm, last_hash)
    return VerifyResult(True, count, None, "chain intact", None, algorithm, last_hash)


def _where(record: dict[str, Any], line: int) -> str:
    return f"record seq {record['seq']} (line {line})" if line else f"record seq {record['seq']}"


def _parse(raw: bytes, line: int) -> dict[str, Any]:
    """The record on one line, or _ChainBroken saying why the line is not one."""
    at = f"line {line}" if line else "last line"
    if not raw.endswith(b"\n"):
        raise _ChainBroken(f"{at}: torn record (no end of line): a write was interrupted, "
                           f"e.g. by a crash or power loss", line, line)
    try:
        record = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _ChainBroken(f"{at}: not a JSON record ({exc}): damaged or edited", line, line) from None
    if not isinstance(record, dict):
        raise _ChainBroken(f"{at}: not a JSON object: damaged or edited", line, line)
    for key, kind in (("seq", int), ("prev", str), ("hash", str), ("alg", str), ("event", str)):
        if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
            raise _ChainBroken(f"{at}: field {key!r} missing or not {kind.__name__}: damaged or edited", line, line)
    if record["alg"] not in ALGORITHMS:
        raise _ChainBroken(f"{_where(record, line)}: unknown hash algorithm {record['alg']!r}", record["seq"], line)
    return record


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object; a repeated key (a reader might show the other value) is an edit."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {key!r} appears twice")
        result[key] = value
    return result


def _check_hash(record: dict[str, Any], line: int) -> None:
    try:
        expected = record_hash(record, record["alg"])
    except ValueError:  # NaN/Infinity literals: never written by append
        expected = ""
    if expected != record["hash"]:
        raise _ChainBroken(f"{_where(record, line)}: hash does not match its content (edited)", record["seq"], line)


def _check_link(record: dict[str, Any], line: int, seq: int, last_hash: str, prev_line: int, algorithm: str,
                rest: Iterator[tuple[int, bytes]]) -> None:
    """The record must be seq + 1 and point at the hash of the record before it."""
    here, got = _where(record, line), record["seq"]
    if record["alg"] != algorithm:
        raise _ChainBroken(f"{here}: hashed with {record['alg']}, the log with {algorithm}", got, line)
    if got <= seq:
        raise _ChainBroken(f"line {line}: seq {got} after seq {seq}: out of order (moved or duplicated)", got, line)
    if got > seq + 1:
        _report_gap(record, line, seq, rest)
    if record["prev"] != last_hash:
        if seq == 0:
            raise _ChainBroken(f"{here}: prev is not the start of a chain: earlier records removed", got, line)
        raise _ChainBroken(f"{here}: prev does not match the hash of seq {seq} (line {prev_line}): "
                           f"seq {seq} was edited and rehashed, or replaced", seq, prev_line)


def _report_gap(record: dict[str, Any], line: int, seq: int, rest: Iterator[tuple[int, bytes]]) -> None:
    """A missing seq is either later in the file (reordered) or gone (removed)."""
    got = record["seq"]
    missing = range(seq + 1, got)
    for later_line, raw in rest:
        try:
            later = json.loads(raw)["seq"]
        except (ValueError, TypeError, KeyError):
            continue
        if later in missing:
            raise _ChainBroken(f"line {line}: seq {got} after seq {seq}: records reordered "
                               f"(seq {later} is at line {later_line})", got, line)
    gone = f"seq {seq + 1}" if len(missing) == 1 else f"seqs {seq + 1}-{got - 1}"
    before = f"follows seq {seq}" if seq else "is the first record"
    raise _ChainBroken(f"{_where(record, line)}: {before}: {gone} removed", seq + 1, line)


# -- reading -----------------------------------------------------------------------------------

def read_records(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Every line as a record; a line that is not one becomes ``{"line": n, "unreadable": why}``."""
    try:
        with open(path, "rb") as stream:
            for number, raw in enumerate(stream, 1):
                try:
                    yield _parse(raw, number)
                except _ChainBroken as broken:
                    yield {"line": number, "unreadable": broken.reason}
    except OSError as exc:
        raise AuditError(f"{path}: cannot read the audit log: {exc.strerror}") from exc


def show(path: str | os.PathLike, last: int | None = None, command: str | None = None) -> list[dict[str, Any]]:
    """The records of one command (or all), the last ``last`` of them (or all), in file order."""
    selected = (r for r in read_records(path) if command is None or r.get("command") == command)
    return list(deque(selected, maxlen=last))


_SHOWN = RESERVED | {"command", "group", "point", "value", "reason"}


def describe(record: dict[str, Any]) -> str:
    """One readable line: local time, seq, event, command, group, point = value, other fields, reason."""
    if "unreadable" in record:
        return f"UNREADABLE {record['unreadable']}"
    point = record.get("point") or ""
    value = f" = {record['value']}" if "value" in record else ""
    parts = [record.get("ts_local") or record.get("ts", ""), f"#{record['seq']:<5}", f"{record['event']:<10}",
             f"{record.get('command') or '-':<12}", f"{record.get('group') or '-':<10}", f"{point}{value}"]
    parts += [f"{key}={item}" for key, item in record.items() if key not in _SHOWN and item not in (None, "")]
    if record.get("reason"):
        parts.append(f"reason: {record['reason']}")
    return "  ".join(part for part in parts if part)
