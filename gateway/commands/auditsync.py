"""fsync of the audit log on a thread of its own, so a slow disk never stretches a command's ACT_CON.

Why not on the reactor: a record is written for every step of a command (received, written,
confirmed, ...), and with an fsync each on the reactor a 50 ms disk adds 50 ms per step to the
ACT_CON and stalls every poll meanwhile. So ``append`` writes and flushes the line (it is in the
OS from then on and survives the gateway process being killed), and this thread makes it durable
(fsync, coalesced: one fsync covers every line written before it started) and only then replaces
the state file of a checkpoint, so the state never names a checkpoint the disk does not hold.
What a power loss can take is the lines of the last fsync window, the same bound as the spool's.
A failed fsync or state write is kept in ``error``; the log turns it into its ``problem`` (every
command then fails closed) at the next append.
"""

import os
import threading
from pathlib import Path

from gateway.commands.auditkeys import write_state


class BackgroundSync:
    """One thread that fsyncs the log file on request and then writes the pending state line."""

    def __init__(self, name: str) -> None:
        self._wake = threading.Condition()
        self._requested = self._done = 0
        self._fd = -1
        self._state: tuple[Path, bytes] | None = None
        self._closing = False
        self.error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name=f"audit-fsync:{name}", daemon=True)
        self._thread.start()

    def request(self, fd: int, state: tuple[Path, bytes] | None = None) -> None:
        """Make everything written to ``fd`` so far durable, then (if given) write the state line."""
        with self._wake:
            self._fd = fd
            if state is not None:
                self._state = state
            self._requested += 1
            self._wake.notify()

    def drain(self) -> None:
        """Wait until every request so far is done (before the file is closed or renamed)."""
        with self._wake:
            self._wake.wait_for(lambda: self._done >= self._requested)

    def close(self) -> None:
        """Finish what was requested, then end the thread."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._done < self._requested or self._closing)
                if self._done >= self._requested:
                    return
                target, fd, state, self._state = self._requested, self._fd, self._state, None
            self._sync(fd, state)
            with self._wake:
                self._done = target
                self._wake.notify_all()

    def _sync(self, fd: int, state: tuple[Path, bytes] | None) -> None:
        try:
            os.fsync(fd)
            if state is not None:
                write_state(*state)
        except Exception as exc:  # noqa: BLE001 - OSError or AuditKeyError: kept for the log to raise
            self.error = exc
