"""The files of one audit log: where rotated parts go, which files make up a log and in which
order, and the writer's exclusive hold on the active file (two writers would break the chain)."""

import json
import os
import re
from pathlib import Path
from typing import IO

from gateway.commands.auditkeys import fsync_dir
from gateway.commands.auditrecord import OPEN, AuditError, ChainBroken

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no writer lock
    fcntl = None  # type: ignore[assignment]

_PART_SUFFIX = re.compile(r"\.(\d+)$")


def rotated_path(path: str | os.PathLike, part: int) -> Path:
    """Where part ``part`` of the log at ``path`` goes when it is rotated: ``<path>.<part>``."""
    return Path(f"{path}.{part}")


def log_files(path: str | os.PathLike) -> list[Path]:
    """The files of one log: its rotated parts ``<path>.<n>`` (by n) and ``path`` itself if it exists.

    A folder stands for the log kept in it: its ``*.jsonl`` file(s) and their parts.
    """
    path = Path(path)
    if path.is_dir():
        found: list[Path] = []
        for active in sorted(p for p in path.iterdir() if p.name.endswith(".jsonl")):
            found += log_files(active)
        for orphan in sorted(p for p in path.iterdir() if _PART_SUFFIX.search(p.name) and p not in found
                             and ".jsonl." in p.name):
            found.append(orphan)
        return found
    parts = []
    for candidate in path.parent.glob(f"{path.name}.*") if path.parent.exists() else []:
        match = _PART_SUFFIX.search(candidate.name[len(path.name):])
        if match and candidate.name[len(path.name):] == match.group(0):
            parts.append((int(match.group(1)), candidate))
    return [p for _, p in sorted(parts)] + ([path] if path.exists() or not parts else [])


def in_part_order(files: list[Path]) -> list[Path]:
    """Files sorted by the part their genesis names; a file without one sorts first."""
    keyed = []
    seen: dict[int, Path] = {}
    for position, path in enumerate(files):
        part = _part_of(path)
        if part is not None:
            if part in seen:
                raise ChainBroken(f"both {seen[part]} and {path} say they are part {part}: one is a copy or replaced",
                                  path, 1)
            seen[part] = path
        keyed.append((part or 0, position, path))
    return [path for _, _, path in sorted(keyed)]


def _part_of(path: Path) -> int | None:
    try:
        with open(path, "rb") as stream:
            first = stream.readline()
    except OSError as exc:
        raise AuditError(f"{path}: cannot read the audit log: {exc.strerror}") from exc
    try:
        record = json.loads(first)
    except ValueError:
        return None
    if isinstance(record, dict) and record.get("event") == OPEN and isinstance(record.get("part"), int):
        return record["part"]
    return None


def open_locked(path: Path) -> IO[bytes]:
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
        fsync_dir(path.parent)
    return handle
