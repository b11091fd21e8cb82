"""A thread of its own for one file's slow calls (SQLite commits, deletions, fsync), so the reactor
never waits on a disk.

Why one thread per file and not the reactor's shared pool: the calls of one file must run in the
order they were made (a deletion must not overtake the commit before it, a checkpoint not the
records it seals), and a slow disk under one file must not hold back the others' jobs or the
reactor's DNS lookups. Twisted's ``ThreadPool`` with one thread gives exactly that: a FIFO of jobs
on one named thread whose results come back to the reactor as Deferreds.
"""

from typing import Any, Callable, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

T = TypeVar("T")


class FileThread:
    """Runs the jobs of one file in order on one thread; each job's result fires a Deferred on the reactor."""

    def __init__(self, name: str, reactor: Any) -> None:
        self.name = name
        self._reactor = reactor
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=name)
        self._pool.start()

    def run(self, job: Callable[..., T], *args: Any) -> "Deferred[T]":
        """Queue ``job(*args)`` behind the jobs queued before it."""
        return deferToThreadPool(self._reactor, self._pool, job, *args)

    def stop(self) -> None:
        """Let the queued jobs finish, then end the thread (joins it: call after the last job fired)."""
        self._pool.stop()
