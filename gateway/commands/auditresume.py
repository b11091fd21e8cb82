"""Where a writer goes on from when it opens an existing log, and whether it may.

Read only: the log is read from its end (its last checkpoint and the records after it) and its
first line, the state file is compared with it, and a ``ResumePoint`` says what the writer must
write first. Anything that forbids going on (a cut, a replaced file, a foreign key, a torn or
edited tail, a missing state) is raised as a typed ``AuditError``; the writer keeps it as its
``problem``.
"""

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.commands.auditfiles import rotated_path
from gateway.commands.auditkeys import read_state, signature_ok
from gateway.commands.auditrecord import (CHAIN_EVENTS, GENESIS, OPEN, AuditError, AuditKeyError, ChainBroken, LogCut,
                                          LogReplaced, RecordDamaged, SignatureInvalid, WrongKey, canonical_hash_ok,
                                          parse_line, written_hash_ok)

TAIL_LIMIT = 100_000  # unsealed records a restart adopts; more means checkpoints failed for a long time


@dataclass
class ResumePoint:
    """The chain head to go on from and what to write first.

    ``action``: ``new`` (a genesis, part 1), ``upgrade`` (a genesis sealing an unsigned log),
    ``next_part`` (a genesis for ``part + 1``: a rotation was interrupted after the rename),
    ``rotate`` (rename the file and open the next part: interrupted before the rename),
    ``reopen`` (seal the records a crash left unsealed), ``continue`` (nothing to write).
    ``state_behind``: a newer checkpoint line the state file should be brought up to.
    """

    action: str
    seq: int = 0
    prev: str = GENESIS
    log_id: str = ""
    part: int = 0
    unsealed: int = 0
    in_part: int = 0
    opened_at: datetime | None = None
    state_behind: bytes | None = None


def time_of(record: dict[str, Any]) -> datetime | None:
    """A record's ``ts`` as a datetime, or None."""
    try:
        return datetime.fromisoformat(record["ts"])
    except (KeyError, TypeError, ValueError):
        return None


def unsigned_resume(path: Path, algorithm: str) -> tuple[int, str]:
    """(seq, hash) an unsigned writer goes on from; WrongKey when the log is signed."""
    tail = LogTail.read(path, algorithm, scan=False)
    if (tail.first is not None and tail.first.get("event") == OPEN) or tail.checkpoint is not None:
        raise WrongKey(f"the log is signed (key {tail.key_id or '?'}): give its signing key to continue it", path)
    return tail.last_legacy(path)


def signed_resume(path: Path, size: int, algorithm: str, key: Ed25519PublicKey, key_id: str,
                  state_path: Path | None) -> ResumePoint:
    """Where a signed writer goes on from; see the module docstring."""
    state_line = read_state(state_path) if state_path is not None else None
    state = own_checkpoint(state_line, state_path, None, key, key_id) if state_line else None
    if not size:
        return _empty(path, state, state_line or b"", state_path)
    tail = LogTail.read(path, algorithm)
    if tail.checkpoint is None:  # a log written before signing: seal it and go on
        if state is not None:
            raise LogReplaced(f"the log is unsigned, but the state {state_path} names checkpoint seq {state['seq']} "
                              f"of a signed log: the log was replaced", path)
        seq, prev = tail.last_legacy(path)
        return ResumePoint("upgrade", seq, prev, opened_at=time_of(tail.first or {}))
    if state is None and state_path is not None:
        raise AuditKeyError(f"{state_path}: no state file, so a cut of the end of {path} cannot be ruled out; "
                            f"restore it, or run `gridgate audit verify {path} --public-key ...` and move the log "
                            f"aside to start a new one")
    line, checkpoint = tail.checkpoint
    own_checkpoint(tail.checkpoint_raw, path, line, key, key_id)
    if checkpoint["alg"] != algorithm:
        raise AuditError(f"{path}: the log is chained with {checkpoint['alg']}, not {algorithm}; start a new file "
                         f"to change it")
    seq, prev = checkpoint["seq"], checkpoint["hash"]
    for number, raw in tail.after:
        record = _continue(raw, number, path, seq, prev)
        seq, prev = record["seq"], record["hash"]
    first = tail.first or checkpoint
    point = ResumePoint("continue", seq, prev, checkpoint["log"], checkpoint["part"], len(tail.after),
                        seq - first["seq"], time_of(first))
    if state is not None:
        point.state_behind = _compare_state(path, state, state_path, checkpoint, line, tail.checkpoint_raw)
    if checkpoint["reason"] == "rotate":
        if tail.after:
            raise ChainBroken("records after the rotation checkpoint: appended by something else", path,
                              tail.after[0][0], checkpoint["seq"] + 1)
        point.action = "rotate"
    elif tail.after:
        point.action = "reopen"
    return point


def own_checkpoint(raw: bytes | None, file: Any, line: int | None, key: Ed25519PublicKey,
                   key_id: str) -> dict[str, Any]:
    """A checkpoint line this gateway's key signed, or the typed reason it is not one."""
    assert raw is not None
    record = parse_line(raw, line or 1, file)
    seq = record["seq"]
    if record["event"] not in CHAIN_EVENTS or not written_hash_ok(raw, record):
        raise RecordDamaged("not a checkpoint in its written form: damaged or edited", file, line, seq)
    if record.get("key") != key_id:
        raise WrongKey(f"signed by key {record.get('key')}, but this gateway's key is {key_id}: the log or the key "
                       f"was replaced", file, line, seq)
    if not signature_ok(key, record["hash"], record.get("sig")):
        raise SignatureInvalid("checkpoint signature does not verify: edited or re-chained without the key",
                               file, line, seq)
    return record


def _empty(path: Path, state: dict[str, Any] | None, state_line: bytes, state_path: Path | None) -> ResumePoint:
    """A missing or empty file: a new log, the end of an interrupted rotation, or a cut."""
    if state is None:
        return ResumePoint("new")
    rotated = rotated_path(path, state["part"])
    if state["reason"] == "rotate" and rotated.exists() and last_line(rotated) == state_line:
        return ResumePoint("next_part", state["seq"], state["hash"], state["log"], state["part"])
    raise LogCut(f"empty: no signed genesis, but the state {state_path} names checkpoint seq {state['seq']} (log "
                 f"{state['log']}, part {state['part']}, {state['ts']}): the log was cut or replaced; run "
                 f"`gridgate audit verify`", path)


def _compare_state(path: Path, state: dict[str, Any], state_path: Path | None, checkpoint: dict[str, Any], line: int,
                   checkpoint_raw: bytes) -> bytes | None:
    """The log must end at the state's checkpoint or a later one; returns the line to catch the state up to."""
    named = (f"the state {state_path} names checkpoint seq {state['seq']} (log {state['log']}, part {state['part']}, "
             f"{state['ts']})")
    seq = checkpoint["seq"]
    if state["seq"] > seq:
        raise LogCut(f"the log's last checkpoint is seq {seq}, but {named}: records were cut from the end; run "
                     f"`gridgate audit verify`", path, line, seq)
    if state["seq"] == seq and state["hash"] != checkpoint["hash"]:
        raise LogReplaced(f"{named} with another hash: the log was replaced", path, line, seq)
    same_part = state["part"] == checkpoint["part"]
    if (same_part and state["log"] != checkpoint["log"]) or state["part"] > checkpoint["part"]:
        raise LogReplaced(f"the log is log {checkpoint['log']} part {checkpoint['part']}, but {named}: the log was "
                          f"replaced", path, line, seq)
    return checkpoint_raw if state["seq"] < seq else None  # a crash between the log's write and the state's


def _continue(raw: bytes, number: int, file: Path, seq: int, prev: str) -> dict[str, Any]:
    """A record after the last checkpoint, checked before the chain goes on from it."""
    advice = f"; run `gridgate audit verify {file}`, move the file aside and start a new log"
    try:
        record = parse_line(raw, number, file)
    except RecordDamaged as exc:
        raise RecordDamaged(f"cannot be continued: {exc.what}{advice}", file, number, first_bad=exc.first_bad) from None
    if not written_hash_ok(raw, record):
        raise RecordDamaged(f"cannot be continued: hash does not match its content (edited){advice}",
                            file, number, record["seq"])
    if record["seq"] != seq + 1 or record["prev"] != prev:
        raise ChainBroken(f"cannot be continued: does not follow seq {seq}{advice}", file, number, record["seq"])
    return record


class LogTail:
    """The end of a log read backwards: its last checkpoint and the records after it."""

    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm
        self.first: dict[str, Any] | None = None
        self.checkpoint: tuple[int, dict[str, Any]] | None = None
        self.checkpoint_raw = b""
        self.after: list[tuple[int, bytes]] = []
        self.last_raw = b""
        self.key_id = ""

    @classmethod
    def read(cls, path: Path, algorithm: str, scan: bool = True) -> "LogTail":
        """First line, last line and, with ``scan``, the last checkpoint and every line after it."""
        tail = cls(algorithm)
        first = first_line(path)
        if first:
            try:
                tail.first = parse_line(first, 1, path)
            except RecordDamaged:
                tail.first = None
        lines: list[bytes] = []
        for raw in lines_backward(path):
            if not tail.last_raw:
                tail.last_raw = raw
            if (b'"event":"checkpoint"' in raw or b'"event":"open"' in raw) and raw.endswith(b"\n"):
                try:
                    record = parse_line(raw, 0, path)
                except RecordDamaged:
                    record = {}
                if record.get("event") in CHAIN_EVENTS:
                    if len(lines) > TAIL_LIMIT:
                        raise AuditError(f"{path}: more than {TAIL_LIMIT} records after the last checkpoint; run "
                                         f"`gridgate audit verify {path}` and move the log aside")
                    line = count_lines(path) - len(lines)
                    tail.checkpoint, tail.checkpoint_raw, tail.key_id = (line, record), raw, str(record.get("key"))
                    tail.after = [(line + 1 + index, item) for index, item in enumerate(reversed(lines))]
                    return tail
            if not scan:
                break
            if len(lines) <= TAIL_LIMIT:
                lines.append(raw)
        return tail

    def last_legacy(self, path: Path) -> tuple[int, str]:
        """(seq, hash) of the last record of an unsigned log, checked before it is continued."""
        raw = self.last_raw
        if not raw:
            return 0, GENESIS
        advice = f"; run `gridgate audit verify {path}`, move the file aside and start a new log"
        line = count_lines(path)
        try:
            record = parse_line(raw, line, path, duplicates=True)
        except RecordDamaged as exc:
            raise RecordDamaged(f"last record cannot be continued: {exc.what}{advice}", path, line,
                                first_bad=exc.first_bad) from None
        if not canonical_hash_ok(record):
            raise RecordDamaged(f"last record cannot be continued: hash does not match its content (edited){advice}",
                                path, line, record["seq"])
        if record["alg"] != self.algorithm:
            raise AuditError(f"{path}: the log is chained with {record['alg']}, not {self.algorithm}; start a new "
                             f"file to change it")
        return record["seq"], record["hash"]


def first_line(path: Path) -> bytes:
    with open(path, "rb") as stream:
        return stream.readline()


def last_line(path: Path) -> bytes:
    return next(lines_backward(path), b"")


def count_lines(path: Path) -> int:
    """Lines in the file, a last line without end of line included."""
    count, last = 0, b"\n"
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def lines_backward(path: Path, chunk: int = 1 << 16) -> Iterator[bytes]:
    """The file's lines from the last to the first, each with its end of line (a torn last one without)."""
    with open(path, "rb") as stream:
        position = stream.seek(0, os.SEEK_END)
        buffer, end = b"", 0
        while True:
            cut = buffer.rfind(b"\n", 0, end - 1) if end > 1 else -1
            if cut >= 0:
                yield buffer[cut + 1:end]
                end = cut + 1
                continue
            if position == 0:
                if end:
                    yield buffer[:end]
                return
            step = min(chunk, position)
            position -= step
            stream.seek(position)
            buffer = stream.read(step) + buffer[:end]
            end = len(buffer)
