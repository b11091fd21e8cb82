"""``gridgate run --salvage-spool``: move a corrupt spool or event buffer aside and keep what it still holds.

Never done silently: a spool that cannot be opened stops the gateway (one line naming the file),
because its rows are samples or events not yet forwarded. Only when the operator asks is the file
renamed ``<file>.corrupt-<UTC time>`` (with its ``-wal`` and ``-shm``), a new spool made in its
place and every row SQLite can still read copied into it in order, original ids' order and
times kept. Why by hand: Python's sqlite3 has no ``.recover``; reading in id ranges and stepping
over ranges that raise keeps the rows on pages that are intact.
"""

import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from gateway.spool import Spool

log = logging.getLogger(__name__)

CHUNK = 1000
MAX_SKIP = 1 << 24  # ids stepped over at most in one damaged stretch before giving up on the rest


@dataclass(frozen=True)
class Salvaged:
    """What ``salvage`` did with one file."""

    path: str
    moved_to: str
    cause: str
    rows: int


def healthy(path: str) -> str | None:
    """None when ``path`` is missing or SQLite reads it whole (quick check, every row counted), read-only
    so that a damaged file is not touched; else the cause. Whether it is a spool of this version is
    ``Spool``'s to judge: a file that is intact but foreign is refused at start, not moved."""
    if not os.path.exists(path):
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            verdict = "; ".join(str(row[0]) for row in db.execute("PRAGMA quick_check"))
            if verdict == "ok" and db.execute("SELECT 1 FROM sqlite_master WHERE name = 'samples'").fetchone():
                db.execute("SELECT count(*), max(id) FROM samples").fetchone()
        finally:
            db.close()
    except sqlite3.Error as error:
        return f"{path}: {error}"
    return None if verdict == "ok" else f"{path}: SQLite quick_check: {verdict}"


def salvage(path: str, clock: Callable[[], float] = time.time) -> Salvaged | None:
    """Move a corrupt spool aside and copy its readable rows into a new one; None when it is healthy."""
    cause = healthy(path)
    if cause is None:
        return None
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(clock()))
    moved = f"{path}.corrupt-{stamp}"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.rename(path + suffix, moved + suffix)
    spool = Spool(path, 1 << 62, float("inf"), "drop_oldest")
    count = 0
    try:
        for rows in _readable(moved):
            spool.append_raw(rows)
            count += spool.commit()
    finally:
        spool.close()
    log.warning("spool %s could not be used (%s): moved to %s, %d readable rows salvaged into a new %s",
                path, cause, moved, count, path)
    return Salvaged(path, moved, cause, count)


def _readable(path: str) -> Iterator[list[tuple[Any, ...]]]:
    """Chunks of rows (as stored) that SQLite can read from ``path``, oldest first."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return
    try:
        after, skip = 0, 1
        while skip <= MAX_SKIP:
            try:
                rows = db.execute("SELECT id, point, kind, value, quality, source_time, gateway_time FROM samples"
                                  " WHERE id > ? ORDER BY id LIMIT ?", (after, CHUNK)).fetchall()
            except sqlite3.Error:
                after, skip = after + skip, skip * 2  # a damaged stretch: step over it, further each time
                continue
            if not rows:
                return
            skip = 1
            after = rows[-1][0]
            yield [row[1:] for row in rows]
    finally:
        db.close()
