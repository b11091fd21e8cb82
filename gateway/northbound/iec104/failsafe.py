"""The fail-safe of a master group: a state, not a shot.

When every master of the group has been gone for ``failsafe.after_s``, the configured values
must be on the devices, not merely have been sent once. So each write is submitted through the
CommandGate (limits and interlocks apply, every attempt audited) and submitted again, with a
backoff of 1, 2, 4 ... up to 30 s, until the gate reports it confirmed: a device that was
offline gets its fail-safe value when it returns. While any write is not confirmed after its
first attempt, the group's fail-safe alarm is on. A master that starts data transfer ends the
state; the next absence starts it afresh.
"""

import logging
from typing import Any, Callable

from twisted.internet.defer import Deferred

from gateway.commands.audit import FAILSAFE
from gateway.commands.gate import CommandRequest
from gateway.northbound.iec104.section import FallbackWrite, MasterGroup

log = logging.getLogger(__name__)

BACKOFF_FIRST_S, BACKOFF_MAX_S = 1.0, 30.0


class _Pending:
    """One fail-safe write not confirmed yet."""

    def __init__(self, write: FallbackWrite) -> None:
        self.write = write
        self.attempts = 0
        self.next_at = 0.0
        self.running = False


class FailSafe:
    """Watches a group's masters and keeps its fail-safe values applied while they are away."""

    def __init__(self, group: MasterGroup, submit: Callable[[CommandRequest], Deferred], clock: Callable[[], float],
                 on_event: Callable[[float], None], on_alarm: Callable[[bool], None]) -> None:
        self._group = group
        self._submit = submit
        self._clock = clock
        self._on_event = on_event  # audit the activation: seconds the masters have been gone
        self._on_alarm = on_alarm
        self._absent_since: float | None = None
        self._pending: list[_Pending] | None = None  # None: not active

    def tick(self, master_active: bool) -> None:
        """Call often (every outstation tick): activates, retries, or ends the fail-safe."""
        spec = self._group.failsafe
        if spec is None:
            return
        now = self._clock()
        if master_active:
            self._end()
            return
        self._absent_since = self._absent_since if self._absent_since is not None else now
        if self._pending is None and now - self._absent_since >= spec.after_s:
            self._activate(now)
        for pending in self._pending or ():
            if not pending.running and now >= pending.next_at:
                self._attempt(pending, now)

    def _activate(self, now: float) -> None:
        spec = self._group.failsafe
        assert spec is not None
        log.warning("104 group %s: no master for %.0f s, fail-safe writes %s", self._group.name,
                    now - (self._absent_since or now), ", ".join(f"{w.point}={w.value:g}" for w in spec.writes))
        self._on_event(now - (self._absent_since or now))
        self._pending = [_Pending(write) for write in spec.writes]

    def _attempt(self, pending: _Pending, now: float) -> None:
        pending.running = True
        pending.attempts += 1
        request = CommandRequest(self._group.name, pending.write.point, pending.write.value, origin=FAILSAFE)
        self._submit(request).addCallback(self._settled, pending)

    def _settled(self, outcome: Any, pending: _Pending) -> None:
        pending.running = False
        if self._pending is None or pending not in self._pending:
            return  # a master came back meanwhile
        if outcome:
            self._pending.remove(pending)
            log.info("104 group %s: fail-safe %s=%g applied (attempt %d)", self._group.name, pending.write.point,
                     pending.write.value, pending.attempts)
        else:
            delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (pending.attempts - 1))
            pending.next_at = self._clock() + delay
            log.warning("104 group %s: fail-safe %s=%g not applied (attempt %d): %s; again in %.0f s",
                        self._group.name, pending.write.point, pending.write.value, pending.attempts,
                        getattr(outcome, "reason", "refused"), delay)
        self._on_alarm(bool(self._pending))

    @property
    def pending(self) -> int | None:
        """Writes not yet confirmed; None while the fail-safe is not active."""
        return None if self._pending is None else len(self._pending)

    def _end(self) -> None:
        if self._pending is not None:
            log.info("104 group %s: a master is back, fail-safe ended", self._group.name)
            self._on_alarm(False)
        self._absent_since, self._pending = None, None
