"""The durable queue between the PointTable and InfluxDB: SQLite in WAL mode.

Why SQLite: one file, transactional, in the standard library, and fast enough when rows are
inserted with ``executemany`` in one transaction per group commit. A sample is *accepted* once
``commit()`` returned: with ``journal_mode=WAL`` and ``synchronous=NORMAL`` a committed
transaction survives the gateway process being killed (the WAL is in the OS page cache), which is
the promise. A power loss or kernel crash may lose the last group commit(s) since the previous
checkpoint fsync; ``synchronous=FULL`` would close that gap at the price of one fsync per commit.

Rows are a FIFO: ids only grow (``AUTOINCREMENT``), the writer peeks the oldest, and deletes
only through the last id the server confirmed. Because ids never restart, rows dropped or
expired under a writer's in-flight batch can never make ``delete_through`` hit newer rows.

The methods run on the caller's thread. In the gateway that is the spool's own thread
(``spoolthread.ThreadedSpool``), so a slow disk never stalls the reactor; only ``append`` is called
from the reactor, and the in-memory buffer it fills is guarded by a lock. The size limit counts the pages that hold live rows (``page_count -
freelist_count``): SQLite reuses freed pages before growing the file, so this also bounds the
file on disk (the WAL adds up to ``journal_size_limit`` on top).
"""

import logging
import math
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

from gateway.errors import GatewayError
from gateway.model import Sample, Value

log = logging.getLogger(__name__)

Overflow = Literal["drop_oldest", "refuse_new"]

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    point TEXT NOT NULL,
    kind INTEGER NOT NULL,
    value,
    quality INTEGER NOT NULL,
    source_time REAL NOT NULL,
    gateway_time REAL NOT NULL
)
"""
# ``value`` has no declared type, so SQLite keeps what it is given: INTEGER, REAL, TEXT or NULL.
# ``kind`` tells apart what SQLite stores alike: bool vs int, NaN (stored as NULL) vs None.
KIND_NONE, KIND_BOOL, KIND_INT, KIND_FLOAT, KIND_STR = 0, 1, 2, 3, 4
_KIND_OF_TYPE: dict[type, int] = {float: KIND_FLOAT, int: KIND_INT, bool: KIND_BOOL,
                                  str: KIND_STR, type(None): KIND_NONE}
_INT64 = (-(1 << 63), (1 << 63) - 1)
_DROP_MARGIN = 0.01  # drop_oldest frees 1 % below the limit, so it does not delete on every commit
_WAL_LIMIT_BYTES = 64 << 20
MEMORY_BYTES = 64 << 20  # samples held in memory while commits fail (disk full): bounded memory
_ROW_BYTES = 176  # a buffered float row as measured with tracemalloc (168 B) plus margin; str values add their length


class SpoolError(GatewayError):
    """The spool file cannot be opened or written (disk full, I/O error, not a spool)."""


class SpoolUnreadable(SpoolError):
    """The file is not a spool SQLite can open; the gateway stops rather than lose its rows."""

    def __init__(self, cause: str) -> None:
        super().__init__(f"{cause}; `gridgate run --salvage-spool SITE` moves it aside and keeps its readable rows")


class SpoolFull(SpoolError):
    """A batch does not fit under ``max_bytes`` and the policy is ``refuse_new``."""

    def __init__(self, size_bytes: int, max_bytes: int) -> None:
        super().__init__(f"spool would hold {size_bytes} bytes, limit {max_bytes}")
        self.size_bytes = size_bytes
        self.max_bytes = max_bytes


@dataclass(frozen=True, slots=True)
class SpooledSample:
    """A committed sample with its queue position ``id`` (ascending = older)."""

    id: int
    point: str
    value: Value
    quality: int
    source_time: float
    gateway_time: float


def _encode(value: Value) -> tuple[int, Value]:
    """The (kind, stored value) pair for one value; slow path for subclasses and huge ints."""
    kind = _KIND_OF_TYPE.get(type(value))
    if kind is None:  # subclasses: IntEnum, numpy scalars that subclass float, ...
        for base, base_kind in ((bool, KIND_BOOL), (int, KIND_INT), (float, KIND_FLOAT), (str, KIND_STR)):
            if isinstance(value, base):
                return _encode(base(value))  # type: ignore[arg-type]
        raise TypeError(f"cannot spool a {type(value).__name__} value")
    if kind == KIND_INT and not _INT64[0] <= value <= _INT64[1]:  # type: ignore[operator]
        return KIND_INT, str(value)  # SQLite INTEGER is 64-bit; keep the digits exactly
    return kind, value


def _decode(kind: int, stored: Any) -> Value:
    """The original Python value from what SQLite returned."""
    if kind == KIND_FLOAT:
        return math.nan if stored is None else float(stored)
    if kind == KIND_INT:
        return int(stored)
    if kind == KIND_BOOL:
        return bool(stored)
    return stored  # str or None


def _bytes_of(rows: list[tuple[Any, ...]]) -> int:
    """What ``rows`` hold in memory, estimated: a fixed cost per row plus the length of str values."""
    return sum(_ROW_BYTES + (len(row[2]) if type(row[2]) is str else 0) for row in rows)


def _row(sample: Sample) -> tuple[Any, ...]:
    """One INSERT parameter tuple."""
    kind, stored = _encode(sample.value)
    return (sample.point, kind, stored, int(sample.quality), sample.source_time, sample.gateway_time)


class Spool:
    """Group-committed FIFO of samples on disk, bounded in size and age."""

    def __init__(self, path: str, max_bytes: int, max_age_s: float, overflow: Overflow,
                 clock: Callable[[], float] = time.time, memory_bytes: int = MEMORY_BYTES) -> None:
        if overflow not in ("drop_oldest", "refuse_new"):
            raise ValueError(f"overflow must be drop_oldest or refuse_new, not {overflow!r}")
        self.path = path
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.overflow = overflow
        self._clock = clock
        self.memory_bytes = memory_bytes
        self._buffer: list[tuple[Any, ...]] = []
        self._buffer_bytes = 0
        self._buffer_lock = threading.Lock()  # append (reactor) against commit (the spool's thread)
        self._counters = {"committed": 0, "dropped_overflow": 0, "dropped_unwritable": 0, "refused": 0,
                          "expired": 0, "deleted": 0}
        self._refusing = False
        self._db = self._open(path)
        try:
            self._page_size = self._pragma("page_size")
            self._depth = self._db.execute("SELECT count(*) FROM samples").fetchone()[0]
        except sqlite3.Error as error:  # a damaged file may open and fail at its first read
            self._db.close()
            raise SpoolUnreadable(f"{path}: cannot read spool: {error}") from error

    @staticmethod
    def _open(path: str) -> sqlite3.Connection:
        """Open or create the file; a file that is not a spool is an error, not overwritten."""
        if path != ":memory:" and os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            # transactions are explicit; the connection is opened on one thread and used on another
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise SpoolError(f"{path}: spool schema version {version}, this gateway knows {SCHEMA_VERSION}")
            db.execute(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as error:
            raise SpoolUnreadable(f"{path}: cannot open spool: {error}") from error
        if mode != "wal" and path != ":memory:":
            raise SpoolError(f"{path}: SQLite refused WAL mode (got {mode!r})")
        return db

    def _pragma(self, name: str) -> int:
        return int(self._db.execute(f"PRAGMA {name}").fetchone()[0])

    # -- producer side ------------------------------------------------------------------------

    def append(self, samples: Sequence[Sample]) -> None:
        """Buffer samples in memory; they are not accepted until ``commit()``.

        While commits fail the buffer is capped at ``memory_bytes``, the oldest rows going first
        (counted as ``dropped_unwritable``): a dead disk must not exhaust memory as well.
        """
        self.append_raw([_row(s) for s in samples])

    def append_raw(self, rows: list[tuple[Any, ...]]) -> None:
        """Buffer rows in their stored form (point, kind, value, quality, source_time, gateway_time):
        rows read from another spool file, kept exactly as they were (``spoolsalvage``)."""
        with self._buffer_lock:
            self._buffer.extend(rows)
            self._buffer_bytes += _bytes_of(rows)
            self._cap_buffer()

    def _cap_buffer(self) -> None:
        """Drop the oldest buffered rows above ``memory_bytes`` (the lock is held)."""
        if self._buffer_bytes <= self.memory_bytes:
            return
        excess, freed = 0, 0
        while self._buffer_bytes - freed > self.memory_bytes and excess < len(self._buffer):
            freed += _bytes_of(self._buffer[excess:excess + 1])
            excess += 1
        del self._buffer[:excess]
        self._buffer_bytes -= freed
        if not self._counters["dropped_unwritable"]:
            log.error("spool %s: commits failing and %d bytes of samples buffered; dropping the oldest "
                      "(counted as dropped_unwritable)", self.path, self.memory_bytes)
        self._counters["dropped_unwritable"] += excess

    def _take_buffer(self) -> list[tuple[Any, ...]]:
        with self._buffer_lock:
            rows, self._buffer, self._buffer_bytes = self._buffer, [], 0
        return rows

    def _put_back(self, rows: list[tuple[Any, ...]]) -> None:
        """Return rows whose commit failed to the front of the buffer, for the next commit."""
        with self._buffer_lock:
            self._buffer[:0] = rows
            self._buffer_bytes += _bytes_of(rows)
            self._cap_buffer()

    def commit(self) -> int:
        """Write everything buffered in one transaction; returns the rows committed.

        Over ``max_bytes``, ``drop_oldest`` deletes the oldest rows in the same transaction and
        ``refuse_new`` rolls the batch back (returns 0). Neither raises: the policy was chosen
        in the config, so overflow is an expected state, logged and counted. A SQLite failure
        (disk full, I/O error) raises ``SpoolError`` and keeps the rows for the next commit.
        """
        rows = self._take_buffer()
        if not rows:
            return 0
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(
                "INSERT INTO samples (point, kind, value, quality, source_time, gateway_time)"
                " VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._depth += len(rows)
            self._enforce_size(len(rows))
            self._db.execute("COMMIT")
        except SpoolFull as full:
            self._rollback()
            self._refuse(len(rows), full)
            return 0
        except sqlite3.Error as error:
            self._rollback()
            self._put_back(rows)
            raise SpoolError(f"{self.path}: commit of {len(rows)} samples failed: {error}") from error
        self._counters["committed"] += len(rows)
        self._accepting_again()
        return len(rows)

    def _rollback(self) -> None:
        """Undo the open transaction (if it got that far) and the depth it counted."""
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._depth = self._db.execute("SELECT count(*) FROM samples").fetchone()[0]
        except sqlite3.Error as error:  # the disk that failed the commit may fail the rollback too
            log.debug("spool %s: rollback: %s", self.path, error)

    def _enforce_size(self, new_rows: int) -> None:
        """Apply the overflow policy inside the open transaction."""
        size = self.size_bytes()
        if size <= self.max_bytes:
            return
        if self.overflow == "refuse_new":
            raise SpoolFull(size, self.max_bytes)
        dropped = 0
        target = self.max_bytes * (1.0 - _DROP_MARGIN)
        while size > target and self._depth > 0:
            per_row = size / self._depth
            n = max(1, math.ceil((size - target) / per_row))
            dropped += self._delete_oldest(n)
            size = self.size_bytes()
        self._counters["dropped_overflow"] += dropped
        log.warning("spool %s full (limit %d bytes): dropped the %d oldest samples, %d remain",
                    self.path, self.max_bytes, dropped, self._depth)

    def _delete_oldest(self, n: int) -> int:
        """Delete the ``n`` oldest rows; returns how many went."""
        cur = self._db.execute(
            "DELETE FROM samples WHERE id <= (SELECT id FROM samples ORDER BY id LIMIT 1 OFFSET ?)",
            (min(n, self._depth) - 1,))
        self._depth -= cur.rowcount
        return cur.rowcount

    def _refuse(self, n: int, full: SpoolFull) -> None:
        """Count a refused batch; warn once per episode of refusing, not once per commit."""
        self._counters["refused"] += n
        if not self._refusing:
            log.warning("spool %s full (%s): refusing new samples until the writer drains it "
                        "(%d refused so far)", self.path, full, self._counters["refused"])
        self._refusing = True

    def _accepting_again(self) -> None:
        if self._refusing:
            log.info("spool %s accepts samples again (%d refused in total)", self.path,
                     self._counters["refused"])
        self._refusing = False

    # -- consumer side ------------------------------------------------------------------------

    def peek(self, limit: int) -> list[SpooledSample]:
        """Up to ``limit`` committed samples, oldest first; nothing is removed."""
        return self.peek_after(0, limit)  # ids start at 1 (AUTOINCREMENT)

    def peek_after(self, after_id: int, limit: int) -> list[SpooledSample]:
        """Up to ``limit`` committed samples with an id above ``after_id``, oldest first: what a
        consumer that keeps several batches in flight has not sent yet."""
        cur = self._db.execute(
            "SELECT id, point, kind, value, quality, source_time, gateway_time"
            " FROM samples WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit))
        return [SpooledSample(i, p, _decode(k, v), q, st, gt) for i, p, k, v, q, st, gt in cur]

    def delete_through(self, last_id: int) -> int:
        """Remove every row up to and including ``last_id``: what the server confirmed; returns how many.

        Raises ``SpoolError`` when SQLite cannot write (a full disk): nothing was removed."""
        try:
            cur = self._db.execute("DELETE FROM samples WHERE id <= ?", (last_id,))
        except sqlite3.Error as error:
            raise SpoolError(f"{self.path}: deleting through id {last_id} failed: {error}") from error
        self._depth -= cur.rowcount
        self._counters["deleted"] += cur.rowcount
        return cur.rowcount

    def expire(self) -> int:
        """Drop rows whose ``gateway_time`` is older than ``max_age_s``; returns how many.

        The queue is walked from its oldest end and stops at the first young row, so the cost
        is proportional to what expires (no index on time needed). A row that sits behind a
        younger one (the clock stepped back) waits until the rows before it expire.
        """
        cutoff = self._clock() - self.max_age_s
        try:
            first_young = self._db.execute(
                "SELECT id FROM samples WHERE gateway_time >= ? ORDER BY id LIMIT 1", (cutoff,)).fetchone()
            if first_young is None:
                cur = self._db.execute("DELETE FROM samples")
            else:
                cur = self._db.execute("DELETE FROM samples WHERE id < ?", (first_young[0],))
        except sqlite3.Error as error:
            raise SpoolError(f"{self.path}: expiring samples older than {self.max_age_s:.0f} s failed: {error}") from error
        n = cur.rowcount
        if n:
            self._depth -= n
            self._counters["expired"] += n
            log.warning("spool %s: %d samples older than %.0f s expired unsent", self.path, n,
                        self.max_age_s)
        return n

    # -- observation --------------------------------------------------------------------------

    def depth(self) -> int:
        """Committed rows waiting to be sent."""
        return self._depth

    def oldest_age(self) -> float | None:
        """Seconds since the oldest waiting row reached the gateway; None when empty."""
        row = self._db.execute("SELECT gateway_time FROM samples ORDER BY id LIMIT 1").fetchone()
        return None if row is None else self._clock() - row[0]

    def buffered(self) -> int:
        """Samples appended and not yet committed."""
        return len(self._buffer)

    def size_bytes(self) -> int:
        """Bytes in pages holding live data (free pages, reused before the file grows, excluded)."""
        return (self._pragma("page_count") - self._pragma("freelist_count")) * self._page_size

    def stats(self) -> dict[str, Any]:
        """Counters and gauges for status pages and metrics."""
        try:
            size, oldest = self.size_bytes(), self.oldest_age()
        except sqlite3.Error:  # a failing disk: the counters still tell what happened
            size, oldest = None, None
        return {"depth": self._depth, "buffered": len(self._buffer), "buffered_bytes": self._buffer_bytes,
                "size_bytes": size, "max_bytes": self.max_bytes, "oldest_age_s": oldest,
                "refusing": self._refusing, **self._counters}

    def close(self) -> None:
        """Commit what is buffered, then close the file (SQLite checkpoints the WAL on close)."""
        try:
            self.commit()
        finally:
            self._db.close()
