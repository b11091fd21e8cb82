"""When a polled device is read: every period, after a random phase, one poll at a time.

Every polling driver (Modbus, framed serial) needs the same four rules, and a copy per driver
would drift: devices of a site start at random phases so they do not poll in lockstep; a tick
that finds the previous poll still running is counted as skipped instead of queueing a backlog;
an offline device is only polled when its probe is due (``DeviceHealth.probe_due``); and a poll
that ends with an exception the driver did not contain (a bug, a failing sink) is counted as an
``internal`` failure and logged once per schedule, never silently lost.
"""

import asyncio
import logging
import random
from typing import Any, Awaitable, Callable

from twisted.internet.task import LoopingCall

from gateway.health import DeviceHealth
from gateway.metrics import Counter

log = logging.getLogger(__name__)


class PollSchedule:
    """Runs ``poll()`` every ``period_s`` for one device."""

    def __init__(self, name: str, period_s: float, poll: Callable[[], Awaitable[None]], health: DeviceHealth,
                 skipped: Counter, reactor: Any) -> None:
        self._name, self._period_s, self._poll, self._health = name, period_s, poll, health
        self._skipped = skipped
        self._reactor = reactor
        self._loop = LoopingCall(self._tick)
        self._loop.clock = reactor
        self._task: asyncio.Future | None = None
        self._ended_badly = False

    def start(self) -> None:
        """Begin after a random phase within one period."""
        self._reactor.callLater(random.uniform(0, self._period_s), self._begin)

    def _begin(self) -> None:
        if not self._loop.running:
            self._loop.start(self._period_s, now=True)

    async def stop(self) -> None:
        """Stop ticking and wait for a poll in flight to end (cancelled)."""
        if self._loop.running:
            self._loop.stop()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _tick(self) -> None:
        if self._task is not None and not self._task.done():
            self._skipped.inc()
            return
        if not self._health.probe_due():
            return
        self._task = asyncio.ensure_future(self._poll())
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Future) -> None:
        """The last net: a poll contains its device's failures, this catches a failing sink too."""
        if task.cancelled() or (exc := task.exception()) is None:
            return
        self._health.causes["internal"] = self._health.causes.get("internal", 0) + 1
        if not self._ended_badly:  # a bug, not a device: once per schedule is enough
            self._ended_badly = True
            log.error("%s: poll ended with an unexpected error", self._name, exc_info=exc)
