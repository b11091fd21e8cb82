"""The one reconnect backoff: every link, writer and offline probe waits the same way.

A gateway retries many things (a TCP peer that refuses, an InfluxDB that is down, a device
declared offline), and each used to carry its own copy of "double the delay up to a cap, draw
some jitter". Those copies drift: one overflowed after hours of failures, another jittered
upwards past its own cap. ``Backoff`` is the single copy.

The growth is Twisted's ``backoffPolicy`` (it caps the exponent, so no number of failures
overflows); its own jitter is additive and would exceed the cap, so it is switched off and the
delay is instead scaled down by up to ``spread``: the cap is a promise (a Modbus link's 8 s
must stay under the poller's 10 s probe), and many gateways restarting together still spread.
The clock is injected so tests drive it with ``twisted.internet.task.Clock``.
"""

import random
from typing import Callable

from twisted.application.internet import backoffPolicy
from twisted.internet.interfaces import IReactorTime


class Backoff:
    """Exponential delays after consecutive failures, jittered downwards, reset by a success."""

    def __init__(self, clock: IReactorTime, initial_s: float, max_s: float, factor: float = 2.0,
                 spread: float = 0.2, rand: Callable[[], float] = random.random) -> None:
        if not 0 < initial_s <= max_s or factor < 1 or not 0 <= spread <= 1:
            raise ValueError(f"backoff needs 0 < initial_s <= max_s, factor >= 1 and 0 <= spread <= 1; got "
                             f"{initial_s}, {max_s}, {factor}, {spread}")
        self._clock = clock
        self._policy = backoffPolicy(initial_s, max_s, factor, jitter=lambda: 0.0)
        self._spread = spread
        self._rand = rand
        self.attempts = 0  # consecutive failures since the last success
        self.next_at = 0.0  # clock time before which no new attempt should be made
        self._current_s = 0.0

    def failed(self, since: float | None = None) -> float:
        """Count a failure; the delay before the next attempt, which ``next_at`` now holds.

        ``since``: when the failed attempt began (a connect that timed out), so the delay counts
        from the attempt, not from its end; default now."""
        self.attempts += 1
        self._current_s = self._policy(self.attempts - 1) * (1.0 - self._spread * self._rand())
        self.next_at = (self._clock.seconds() if since is None else since) + self._current_s
        return self._current_s

    def succeeded(self) -> None:
        """The next failure starts again from ``initial_s``; an attempt is due at once."""
        self.attempts = 0
        self.next_at = 0.0
        self._current_s = 0.0

    def due(self) -> bool:
        """Whether an attempt may be made now."""
        return self._clock.seconds() >= self.next_at

    def remaining(self) -> float:
        """Seconds until the next attempt is due; 0.0 when it is."""
        return max(0.0, self.next_at - self._clock.seconds())

    @property
    def current_s(self) -> float:
        """The last delay ``failed`` returned; 0.0 after a success (or before any failure)."""
        return self._current_s
