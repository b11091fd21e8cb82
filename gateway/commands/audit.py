"""The command audit log: append-only JSON Lines, hash-chained, sealed by Ed25519-signed checkpoints.

What it promises
----------------
A dispatch command leaves evidence that survives a crash and shows tampering, including at its
end. Every record is flushed before ``append`` returns (it survives the process being killed) and
fsynced: at once, or in the gateway (``background_sync=True``) on a thread of its own right after
(``auditsync``: a slow disk must not stretch a command's ACT_CON). Each record carries ``prev`` (the hash
of the record before it) and ``hash`` (SHA-256 or SM3). A plain hash chain shows an edit, but
anyone can re-hash it after an edit, and it cannot show records cut off at the end. So the log
also carries **signed checkpoints**: records (``event: checkpoint``) whose hash, which covers the
chain head, is signed with the gateway's Ed25519 key. The private key lives in its own file
(mode 0600, ``gridgate audit init --key PATH``), never in the log; verifying needs only the
public key (``gridgate audit verify --public-key KEY.pub``), so an auditor holds no secret
(why signatures, not a keyed MAC over every record: a MAC would make every verifier a holder of
the secret that can forge the log).

* **Genesis**: the first record of every file is an ``open`` record, a signed checkpoint binding
  the file's identity: a random ``log`` id, its ``part`` number, the ``key`` id, and (when
  rotated) ``prev_log`` plus, as its ``prev``, the previous file's last hash. An empty file has
  no signed genesis (error); a file whose genesis another key signed was replaced (error).
* **Cadence**: a checkpoint after every ``checkpoint_every`` records (default 1000), when the
  oldest unsealed record is ``checkpoint_interval_s`` old (default 60 s; the service drives it,
  see below), at ``close()`` (reason ``close``), and before rotation (reason ``rotate``). A
  checkpoint carries ``seq``, ``ts``, ``count`` (records sealed since the previous one), its
  ``prev`` (the chain head it seals), ``hash`` and ``sig`` (over ``hash``).
* **State file**: after each checkpoint the writer copies that checkpoint line, atomically, to a
  small state file beside the key (``<key folder>/<log name>.state`` unless ``state`` is given).
  On open, the log's last checkpoint must be the state's or a later one: a log cut before its
  last checkpoint, emptied, replaced by an older copy or by an unsigned file is refused
  (``problem``; every command then fails closed), and ``audit verify --state`` reports the same.
  What it cannot detect: a cut of records written after the last checkpoint (at most
  ``checkpoint_every`` records or ``checkpoint_interval_s`` seconds; ``verify`` reports them as
  ``unsealed``, a crash leaves them too), and anyone who holds the private key or who rolls back
  the log *and* the state file together to an older consistent pair. Keep a copy of the state
  (or the last checkpoint) off the box to narrow that. A missing state beside a signed log is
  refused too (a cut could not be ruled out); with a key object instead of a key path, no state
  is kept unless ``state`` is given.
* **Restart**: a log ending in unsealed records (a crash) is continued with a ``checkpoint``
  of reason ``reopen`` whose ``count`` says how many records it adopted: those were sealed by the
  next run, not the one that wrote them, and ``verify`` says so.
* **Rotation**: past ``max_bytes`` or ``max_age_s`` (age of the file's first record) the file is
  sealed (reason ``rotate``), renamed ``<path>.<part>`` and a new file opened at ``path`` whose
  genesis links to the old file's last hash; ``seq`` continues across files. ``verify`` takes the
  set of files, orders them by ``part`` and names a missing one.
* **Unsigned mode** (``key=None``): the log of earlier versions, a canonical-form hash chain with
  no checkpoints; ``verify`` reports it as UNSIGNED, never as OK. Opening such a file with a key
  upgrades it in place: an ``open`` record (reason ``upgrade``) seals the records before it.

What the service must call
--------------------------
``AuditLog(path, hash, key=..., state=..., checkpoint_every=..., checkpoint_interval_s=...,
max_bytes=..., max_age_s=...)``; check ``problem`` after opening (log it; commands are refused
while it is set); call ``maybe_checkpoint()`` from a ``LoopingCall`` every few seconds (at most
``checkpoint_interval_s``; it also rotates by age; it raises ``AuditError`` when the log cannot be
written: log it and keep the loop running); call ``close()`` when the service stops (it writes the
``close`` checkpoint). AuditLog starts no timers and is called from one thread (the reactor's);
only its fsync thread (``background_sync``) runs beside it.

This module is the writer and re-exports what callers import (the other ``audit*`` modules are
listed in the package docstring).
"""

import os
import secrets
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.commands.auditfiles import log_files, open_locked, rotated_path
from gateway.commands.auditkeys import (KeySource, default_state_path, fsync_dir, key_id, load_private_key, sign_hash,
                                        write_state)
from gateway.commands.auditrecord import (ALGORITHMS, CHAIN_EVENTS, CHECKPOINT, CONFIRMED, DESELECTED, FAILED,
                                          FAILSAFE, GENESIS, OPEN, READ_BACK, RECEIVED, REFUSED, RESERVED, SELECTED,
                                          WRITTEN, AuditError, AuditFinding, AuditKeyError, ChainBroken, LogCut,
                                          LogReplaced, RecordDamaged, SignatureInvalid, WrongKey, digest,
                                          encode_canonical, encode_written, json_safe, record_hash)
from gateway.commands.auditresume import signed_resume, time_of, unsigned_resume
from gateway.commands.auditshow import describe, read_records, show
from gateway.commands.auditsync import BackgroundSync
from gateway.commands.auditverify import VerifyResult, verify

__all__ = ["RECEIVED", "REFUSED", "WRITTEN", "READ_BACK", "CONFIRMED", "SELECTED", "DESELECTED", "FAILED", "FAILSAFE",
           "OPEN", "CHECKPOINT", "CHAIN_EVENTS", "GENESIS", "RESERVED", "ALGORITHMS", "AuditError", "AuditFinding",
           "AuditKeyError", "ChainBroken", "LogCut", "LogReplaced", "RecordDamaged", "SignatureInvalid", "WrongKey",
           "AuditLog", "VerifyResult", "verify", "log_files", "rotated_path", "digest", "record_hash", "json_safe",
           "new_command_id", "read_records", "show", "describe"]

Algorithm = Literal["sha256", "sm3"]


def new_command_id() -> str:
    """A short id that ties together every record of one command."""
    return uuid.uuid4().hex[:12]


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _stamp(now: datetime) -> dict[str, str]:
    return {"ts": now.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "ts_local": now.astimezone().isoformat(timespec="milliseconds")}


def _as_datetime(now: datetime | float | None) -> datetime | None:
    if now is None or isinstance(now, datetime):
        return now
    return datetime.fromtimestamp(now, timezone.utc)


class AuditLog:
    """One writer of one audit log (and its rotated parts); reopening continues the chain.

    The file is locked against a second writer (two chains in one file would break both). When the
    log cannot be continued (torn or edited tail, cut or replaced log, missing or foreign key),
    ``problem`` says why and ``append`` raises it: the evidence is kept as it is, and commands fail
    closed until an operator acts. Without ``key`` the log is written unsigned, as before.
    """

    def __init__(self, path: str | os.PathLike, algorithm: Algorithm = "sha256",
                 clock: Callable[[], datetime] = _utc_now, *, key: KeySource | None = None,
                 state: str | os.PathLike | None = None, checkpoint_every: int = 1000,
                 checkpoint_interval_s: float = 60.0, max_bytes: int | None = None,
                 max_age_s: float | None = None, background_sync: bool = False) -> None:
        if algorithm not in ALGORITHMS:
            raise AuditError(f"unknown audit hash algorithm {algorithm!r} (use sha256 or sm3)")
        if checkpoint_every < 1 or checkpoint_interval_s <= 0:
            raise AuditError("checkpoint_every must be >= 1 and checkpoint_interval_s > 0")
        self.path = Path(path)
        self.algorithm = algorithm
        self.checkpoint_every, self.checkpoint_interval_s = checkpoint_every, checkpoint_interval_s
        self.max_bytes, self.max_age_s = max_bytes, max_age_s
        self._clock = clock
        self._problem: AuditError | None = None
        self._seq, self._prev = 0, GENESIS
        self._signer: Ed25519PrivateKey | None = None
        self._key_id = ""
        self._state_path: Path | None = None
        self._log_id, self._part = "", 0
        self._unsealed = 0                                # records since the last checkpoint
        self._oldest_unsealed: datetime | None = None     # when the first of them was written
        self._in_part = 0                                 # records after the current file's genesis
        self._opened_at: datetime | None = None           # time of the current file's first record
        self._syncer = BackgroundSync(self.path.name) if background_sync else None
        self._file = open_locked(self.path)
        self._size = os.fstat(self._file.fileno()).st_size
        try:
            if key is None:
                self._seq, self._prev = unsigned_resume(self.path, algorithm)
            else:
                self._signer = load_private_key(key)
                self._key_id = key_id(self._signer.public_key())
                if state is not None:
                    self._state_path = Path(state)
                elif not isinstance(key, Ed25519PrivateKey):
                    self._state_path = default_state_path(key, self.path)
                self._resume_signed()
        except AuditError as exc:
            self._problem = exc

    # -- what callers see ------------------------------------------------------------------------

    @property
    def problem(self) -> str | None:
        """Why ``append`` refuses, or None while the chain can be continued."""
        return str(self._problem) if self._problem is not None else None

    @property
    def problem_error(self) -> AuditError | None:
        """The typed error behind ``problem``."""
        return self._problem

    @property
    def seq(self) -> int:
        """The seq of the last record written (0 for an empty log)."""
        return self._seq

    @property
    def signed(self) -> bool:
        """True when records are sealed by signed checkpoints."""
        return self._signer is not None

    @property
    def unsealed(self) -> int:
        """Records written since the last checkpoint."""
        return self._unsealed

    @property
    def key_id(self) -> str:
        """The id of the signing key ("" when unsigned)."""
        return self._key_id

    @property
    def state_path(self) -> Path | None:
        """Where the last checkpoint is kept for the next open (None: not kept)."""
        return self._state_path

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one record and return it once it is on disk; AuditError when it cannot be."""
        self._check_writable()
        if event in CHAIN_EVENTS:
            raise AuditError(f"audit event {event!r} is the log's own; callers cannot write it")
        clash = RESERVED & fields.keys()
        if clash:
            raise AuditError(f"audit fields {sorted(clash)} are reserved")
        now = self._clock()
        try:
            body = self._body(now, str(event), {name: json_safe(value, name) for name, value in fields.items()})
        except ValueError as exc:  # pragma: no cover - json_safe keeps values encodable
            raise AuditError(f"audit record {event!r} cannot be encoded: {exc}") from exc
        if self._signer is None:
            line, record = self._encode(encode_canonical, body)
            self._write(line, record)
            return record
        if self._rotation_due(now):
            self._rotate()
            body["seq"], body["prev"] = self._seq + 1, self._prev
        line, record = self._encode(encode_written, body)
        self._write(line, record)
        self._in_part += 1
        self._unsealed += 1
        if self._oldest_unsealed is None:
            self._oldest_unsealed = now
        if self._unsealed >= self.checkpoint_every:
            self._seal("count")
        return record

    def checkpoint(self, reason: str = "request") -> dict[str, Any] | None:
        """Write a signed checkpoint now and return it (None when the log is unsigned)."""
        if self._signer is None:
            return None
        self._check_writable()
        return self._seal(reason)

    def maybe_checkpoint(self, now: datetime | float | None = None) -> dict[str, Any] | None:
        """The timer's work: rotate by age, seal records older than ``checkpoint_interval_s``.

        ``now`` (a datetime or POSIX seconds) defaults to the log's clock. Returns the record
        written, or None. Does nothing on an unsigned, closed or refusing log.
        """
        if self._signer is None or self._file is None or self._problem is not None:
            return None
        moment = _as_datetime(now) or self._clock()
        if self._rotation_due(moment):
            self._rotate()
            return None
        oldest = self._oldest_unsealed
        if self._unsealed and oldest is not None and (moment - oldest).total_seconds() >= self.checkpoint_interval_s:
            return self._seal("time")
        return None

    def close(self) -> None:
        """Seal the log (a ``close`` checkpoint when signed) and release the file and its lock."""
        if self._file is None:
            return
        try:
            if self._signer is not None and self._problem is None:
                self._seal("close")
        finally:
            if self._syncer is not None:
                self._syncer.close()
            self._file.close()
            self._file = None

    def __enter__(self) -> "AuditLog":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self._problem is None and self._syncer is not None and self._syncer.error is not None:
            self._problem = AuditError(f"{self.path}: making records durable failed ({self._syncer.error}); "
                                       f"run `gridgate audit verify {self.path}`, move the file aside, start a new log")
        if self._problem is not None:
            raise self._problem.with_traceback(None)
        if self._file is None:
            raise AuditError(f"{self.path}: audit log is closed")

    def _body(self, now: datetime, event: str, fields: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {"seq": self._seq + 1, **_stamp(now), "alg": self.algorithm, "event": event}
        body.update(fields)
        body["prev"] = self._prev
        return body

    def _encode(self, encoder: Callable[..., tuple[bytes, dict[str, Any]]], body: dict[str, Any],
                **options: Any) -> tuple[bytes, dict[str, Any]]:
        try:
            return encoder(body, self.algorithm, **options)
        except ValueError as exc:  # e.g. a string that is not valid Unicode
            raise AuditError(f"audit record {body['event']!r} cannot be encoded: {exc}") from exc

    def _write(self, line: bytes, record: dict[str, Any]) -> None:
        assert self._file is not None
        try:
            self._file.write(line)
            self._file.flush()
            if self._syncer is None:
                os.fsync(self._file.fileno())
            elif record.get("event") not in (OPEN, CHECKPOINT):  # those sync with their state line
                self._syncer.request(self._file.fileno())
        except OSError as exc:
            self._problem = AuditError(
                f"{self.path}: writing record seq {record['seq']} failed ({exc}); the last line may be torn: "
                f"run `gridgate audit verify {self.path}`, move the file aside, start a new log")
            raise self._problem from exc
        self._seq, self._prev = record["seq"], record["hash"]
        self._size += len(line)

    def _write_signed(self, event: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Write an ``open`` or ``checkpoint`` record, then make it the state."""
        assert self._signer is not None
        signer = self._signer
        now = self._clock()
        body = self._body(now, event, {"log": self._log_id, "part": self._part, "key": self._key_id, **fields})
        line, record = self._encode(encode_written, body, sign=lambda hash_hex: sign_hash(signer, hash_hex))
        self._write(line, record)
        self._unsealed, self._oldest_unsealed = 0, None
        if self._syncer is not None:
            assert self._file is not None
            self._syncer.request(self._file.fileno(), None if self._state_path is None else (self._state_path, line))
        elif self._state_path is not None:
            try:
                write_state(self._state_path, line)
            except AuditKeyError as exc:
                self._problem = AuditKeyError(f"{exc}; the log's end can no longer be proven at restart")
                raise self._problem from exc
        return record

    def _seal(self, reason: str) -> dict[str, Any]:
        return self._write_signed(CHECKPOINT, {"reason": reason, "count": self._unsealed})

    def _open_part(self, part: int, reason: str, prev_log: str | None, count: int = 0) -> dict[str, Any]:
        """Start a file: its signed genesis with a fresh log id."""
        self._log_id, self._part = secrets.token_hex(8), part
        self._unsealed = count
        fields: dict[str, Any] = {"reason": reason, "count": count}
        if prev_log is not None:
            fields["prev_log"] = prev_log
        record = self._write_signed(OPEN, fields)
        self._opened_at, self._in_part = time_of(record), 0
        return record

    def _rotation_due(self, now: datetime) -> bool:
        if not self._in_part:
            return False
        if self.max_bytes is not None and self._size >= self.max_bytes:
            return True
        opened = self._opened_at
        return self.max_age_s is not None and opened is not None and (now - opened).total_seconds() >= self.max_age_s

    def _rotate(self) -> None:
        """Seal this file, rename it ``<path>.<part>``, open the next part linked to it."""
        self._seal("rotate")
        self._next_part()

    def _next_part(self) -> None:
        assert self._file is not None
        target = rotated_path(self.path, self._part)
        if target.exists():
            self._problem = AuditError(f"{self.path}: cannot rotate: {target} exists; move it aside")
            raise self._problem
        try:
            os.rename(self.path, target)
            fsync_dir(self.path.parent)
            handle = open_locked(self.path)
        except OSError as exc:
            self._problem = AuditError(f"{self.path}: cannot rotate to {target}: {exc.strerror}")
            raise self._problem from exc
        except AuditError as exc:
            self._problem = exc
            raise
        if self._syncer is not None:
            self._syncer.drain()
        self._file.close()
        self._file, self._size = handle, 0
        self._open_part(self._part + 1, "rotate", self._log_id)

    # -- opening ---------------------------------------------------------------------------------

    def _resume_signed(self) -> None:
        assert self._signer is not None
        point = signed_resume(self.path, self._size, self.algorithm, self._signer.public_key(), self._key_id,
                              self._state_path)
        self._seq, self._prev, self._log_id, self._part = point.seq, point.prev, point.log_id, point.part
        self._unsealed, self._in_part, self._opened_at = point.unsealed, point.in_part, point.opened_at
        if point.state_behind is not None and self._state_path is not None:
            write_state(self._state_path, point.state_behind)
        if point.action == "new":
            self._open_part(1, "new", None)
        elif point.action == "upgrade":
            self._open_part(1, "upgrade", None, count=point.seq)
        elif point.action == "next_part":
            self._open_part(point.part + 1, "rotate", point.log_id)
        elif point.action == "rotate":
            self._next_part()
        elif point.action == "reopen":
            self._seal("reopen")
