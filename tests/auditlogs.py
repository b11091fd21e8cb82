"""Audit logs for tests: a stepping clock, signed logs with a fresh key, and the tampering an attacker would do."""

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.commands.audit import RECEIVED, AuditLog
from gateway.commands.auditkeys import init_key, key_id, sign_hash
from gateway.commands.auditrecord import encode_written

T0 = datetime(2025, 3, 1, 2, 15, 0, 123456, tzinfo=timezone.utc)


class StepClock:
    """A clock advancing ``step`` seconds per reading, so records get distinct, known timestamps."""

    def __init__(self, step: float = 1.0) -> None:
        self.now = T0
        self.step = timedelta(seconds=step)

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


class Keys:
    """A key pair written as ``gridgate audit init`` writes it, and where the state goes."""

    def __init__(self, folder: Path, name: str = "audit.key") -> None:
        self.private, self.public, self.id = init_key(folder / "keys" / name)

    def state(self, log: Path) -> Path:
        return self.private.parent / f"{log.name}.state"


def signed_log(path: Path, keys: Keys, count: int, every: int = 1000, close: bool = True,
               clock: StepClock | None = None, **options: Any) -> list[dict]:
    """``count`` gate records (record i carries value float(i)); every record written, chain records included."""
    log = AuditLog(path, clock=clock or StepClock(), key=keys.private, checkpoint_every=every, **options)
    assert log.problem is None, log.problem
    for i in range(1, count + 1):
        log.append(RECEIVED, command=f"c{i}", group="provincial", point="pcs1.p_set", value=float(i))
    if close:
        log.close()
    else:
        crash(log)
    return [json.loads(line) for line in lines_of(path)]


def crash(log: AuditLog) -> None:
    """Let go of the file as a killed process would: no close checkpoint."""
    assert log._file is not None
    log._file.close()
    log._file = None


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def rewrite(path: Path, lines: list[str]) -> None:
    path.write_text("".join(lines), encoding="utf-8")


def line_of_seq(path: Path, seq: int) -> int:
    """The 0-based index of the line holding ``seq``."""
    return next(i for i, line in enumerate(lines_of(path)) if json.loads(line)["seq"] == seq)


def snapshot(files: list[Path], folder: Path) -> list[Path]:
    """Copies of ``files`` in ``folder`` (what a crash leaves on disk, or an old backup)."""
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(f, folder / f.name)) for f in files]


def rechain(path: Path, index: int, change: dict[str, Any], resign: Ed25519PrivateKey | None = None) -> None:
    """Edit line ``index`` and re-hash it and every line after it, as someone without the key would.

    Checkpoints keep their old signatures, or are re-signed with ``resign`` (a key of the attacker's).
    """
    lines = lines_of(path)
    prev = None
    for i in range(index, len(lines)):
        record = json.loads(lines[i])
        old_sig = record.pop("sig", None)
        record.pop("hash")
        if i == index:
            record.update(change)
        if prev is not None:
            record["prev"] = prev
        body = {key: value for key, value in record.items() if key != "prev"} | {"prev": record["prev"]}
        if resign is not None and old_sig is not None:
            body["key"] = key_id(resign.public_key())
            sign = (lambda h: sign_hash(resign, h))
        else:
            sign = (lambda h, s=old_sig: s) if old_sig is not None else None
        line, written = encode_written(body, record["alg"], sign)
        lines[i], prev = line.decode("utf-8"), written["hash"]
    rewrite(path, lines)
