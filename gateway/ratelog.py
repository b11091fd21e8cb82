"""Log lines that a peer's traffic causes, at most one per kind and window, with the count left out.

A master retrying every second, or a fuzzer sending thousands of malformed frames, must not
flood the log, yet the operator must learn how much was left out. ``RateLimitedLog`` logs the
first line of a kind (a key the caller chooses: group, peer host, what happened), leaves out
the others for ``every_s``, and the next line of that kind after the window ends with
``(N more since the last report)``. A kind whose flood stopped does not keep its count to
itself: the next line logged through the same ``RateLimitedLog``, of any kind, first reports
it (``flush_due``, which a periodic task may also call).
"""

import collections
import logging
import time
from typing import Any, Callable, Hashable

_CALLER = 4  # stacklevel of the code calling log() or warning(), seen from _emit: records name it, not this module


class RateLimitedLog:
    """At most one line per key every ``every_s`` on ``logger``; the next one counts what was left out."""

    def __init__(self, logger: logging.Logger, every_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._every = every_s
        self._clock = clock
        # key -> (time of the last line, lines left out since, the last one left out: level, message, args)
        self._last: dict[Hashable, tuple[float, int, tuple[int, str, tuple[Any, ...]] | None]] = {}
        self._due: collections.deque[tuple[float, Hashable, float]] = collections.deque()  # (window end, key, start)

    def forget(self) -> None:
        """Start afresh: the next line of every kind is logged, nothing left out is reported."""
        self._last.clear()
        self._due.clear()

    def warning(self, key: Hashable, message: str, *args: Any) -> bool:
        """``log`` at WARNING."""
        return self._report(key, logging.WARNING, message, args)

    def log(self, key: Hashable, level: int, message: str, *args: Any) -> bool:
        """Log ``message % args`` unless a line of ``key`` was logged less than ``every_s`` ago (then it is
        counted); True when it was logged."""
        return self._report(key, level, message, args)

    def _report(self, key: Hashable, level: int, message: str, args: tuple[Any, ...]) -> bool:
        now = self._clock()
        last, suppressed, _ = self._last.get(key, (None, 0, None))
        if last is not None and now - last < self._every:
            self._last[key] = (last, suppressed + 1, (level, message, args))
            logged = False
        else:
            self._emit(key, now, level, message, args, suppressed, "more since the last report", _CALLER)
            logged = True
        self._flush_due(_CALLER + 1)
        return logged

    def flush_due(self) -> None:
        """Report the count of every kind whose window ended with lines left out (its last one, with the
        count); forget kinds whose window ended quietly."""
        self._flush_due(_CALLER)

    def _flush_due(self, stacklevel: int) -> None:
        now = self._clock()
        while self._due and self._due[0][0] <= now:
            _, key, start = self._due.popleft()
            last, suppressed, pending = self._last.get(key, (None, 0, None))
            if last != start:  # logged again since: a later entry covers it
                continue
            if suppressed and pending is not None:
                level, message, args = pending
                self._emit(key, now, level, message, args, suppressed - 1, "more like it since the last report",
                           stacklevel)
            else:
                del self._last[key]

    def _emit(self, key: Hashable, now: float, level: int, message: str, args: tuple[Any, ...], suppressed: int,
              more: str, stacklevel: int) -> None:
        if suppressed:
            message, args = f"{message} (%d {more})", (*args, suppressed)
        self._logger.log(level, message, *args, stacklevel=stacklevel)
        self._last[key] = (now, 0, None)
        self._due.append((now + self._every, key, now))
