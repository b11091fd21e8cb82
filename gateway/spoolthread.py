"""A Spool driven from the reactor while every SQLite call runs on the spool's own thread.

Why: a commit, a deletion of a million rows after a long outage, or a WAL checkpoint can take
tens of milliseconds to seconds on a slow or failing disk; on the reactor that time would stretch
every poll period and every command's ACT_CON. Here the reactor only appends to the in-memory
buffer (a lock-guarded list) and reads gauges; the rest are jobs on one ``FileThread`` per file, so
they run in the order they were asked for and their results come back as Deferreds.

Commits coalesce: while one runs, further ``commit()`` calls share one follow-up commit, so a
stalled disk queues one job, not one per tick, and memory stays bounded by the spool's
``memory_bytes``. ``stats()`` is the snapshot taken on the thread after the last job.
"""

from typing import Any, Callable, Sequence, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from gateway.filethread import FileThread
from gateway.model import Sample
from gateway.spool import Spool, SpooledSample

T = TypeVar("T")


class ThreadedSpool:
    """The reactor's handle on one spool file: appends in memory, everything else on the file's thread."""

    def __init__(self, spool: Spool, reactor: Any) -> None:
        self.spool = spool
        self.path = spool.path
        self._thread = FileThread(f"spool:{spool.path}", reactor)
        self._stats = spool.stats()
        self._running: list[Deferred[int]] | None = None  # waiters of the commit on the thread
        self._queued: list[Deferred[int]] = []  # waiters of the commit after it

    def append(self, samples: Sequence[Sample]) -> None:
        """Buffer samples (in memory, on the reactor); accepted once a commit took them."""
        self.spool.append(samples)

    def commit(self) -> "Deferred[int]":
        """Commit what is buffered; fires with the rows committed, or ``SpoolError``."""
        waiter: Deferred[int] = Deferred()
        if self._running is None:
            self._running = [waiter]
            self._job(self.spool.commit).addBoth(self._committed)
        else:
            self._queued.append(waiter)
        return waiter

    def _committed(self, result: int | Failure) -> None:
        waiters, self._running = self._running or [], None
        if self._queued:
            self._running, self._queued = self._queued, []
            self._job(self.spool.commit).addBoth(self._committed)
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def peek(self, limit: int) -> "Deferred[list[SpooledSample]]":
        """Up to ``limit`` committed samples, oldest first."""
        return self._thread.run(self.spool.peek, limit)

    def peek_after(self, after_id: int, limit: int) -> "Deferred[list[SpooledSample]]":
        """Up to ``limit`` committed samples with an id above ``after_id``, oldest first."""
        return self._thread.run(self.spool.peek_after, after_id, limit)

    def delete_through(self, last_id: int) -> "Deferred[int]":
        """Remove every row through ``last_id``; fires with how many, or ``SpoolError``."""
        return self._job(self.spool.delete_through, last_id)

    def expire(self) -> "Deferred[int]":
        """Drop rows past the age limit; fires with how many, or ``SpoolError``."""
        return self._job(self.spool.expire)

    def depth(self) -> int:
        """Committed rows waiting (updated by the thread as it commits and deletes)."""
        return self.spool.depth()

    def stats(self) -> dict[str, Any]:
        """The gauges and counters as of the last job, plus what is buffered now."""
        return {**self._stats, "depth": self.spool.depth(), "buffered": self.spool.buffered()}

    def close(self) -> "Deferred[None]":
        """Commit what is buffered, close the file, end the thread (call once, at stop)."""
        return self._thread.run(self.spool.close).addBoth(self._stop_thread)

    def _stop_thread(self, result: Any) -> Any:
        self._thread.stop()
        return result

    def _job(self, call: Callable[..., T], *args: Any) -> "Deferred[T]":
        """Run ``call`` on the thread and take a stats snapshot there after it, whatever it did."""
        def job() -> T:
            try:
                return call(*args)
            finally:
                self._stats = self.spool.stats()
        return self._thread.run(job)
