"""A burst of SOE from a simulated station: ``count`` events on its single or double points, their
time tags ``step_s`` apart, in order, none lost.

c104's server queues at most 100 ASDUs per connection and overwrites the oldest when full, so the
burst never has more than ``in_flight`` objects queued that the gate has not yet passed on; it goes
on whenever the gate passes objects on (and on every tick of the simulator, after a refusal of
c104's while no master was connected).
"""

import logging
from typing import Any, Callable

import c104
from twisted.internet.defer import Deferred

from drivers.iec104.profile import Iec104Point
from drivers.iec104.sim.faultgate import FaultGate
from gateway.iec104.wiretime import WireClock

log = logging.getLogger(__name__)


def burst_points(points: list[tuple[Iec104Point, c104.Point]]) -> list[tuple[Iec104Point, c104.Point]]:
    """The points of the most frequent single- or double-point type (a c104 batch holds one type),
    tagged types first; ValueError for a station without any."""
    by_type: dict[str, list[tuple[Iec104Point, c104.Point]]] = {}
    for spec, point in points:
        if spec.type.startswith(("M_SP", "M_DP")):
            by_type.setdefault(spec.type, []).append((spec, point))
    if not by_type:
        raise ValueError("a burst needs a single or double point (M_SP_*, M_DP_*) in the profile")
    return max(by_type.values(), key=lambda group: (len(group), group[0][0].type.endswith("TB_1")))


def toggled(spec: Iec104Point, value: Any) -> Any:
    """The other state: on/off for a single point, 1 <-> 2 for a double point."""
    if spec.type.startswith("M_SP"):
        return not value
    return 1 if int(value) == 2 else 2


class SoeBurst:
    """One burst in progress; ``done`` fires when its last event has left for the master.

    ``values`` are the values served (each event toggles one), ``hold`` tells the value engine."""

    def __init__(self, points: list[tuple[Iec104Point, c104.Point]], values: dict[str, Any],
                 hold: Callable[[str, Any], None], clock: WireClock,
                 transmit: Callable[[list[c104.Point]], bool], gate: FaultGate, in_flight: int) -> None:
        """``transmit`` sends a batch spontaneously and tells the gate (False: no master to send to)."""
        self._points, self._values, self._hold, self._clock = points, values, hold, clock
        self._transmit, self._gate, self._in_flight = transmit, gate, in_flight
        self.done: Deferred = Deferred()
        self._remaining = 0
        self._sent = 0
        self._start = 0.0
        self._step_s = 0.0
        self._pending: list[c104.Point] = []

    def start(self, count: int, start: float, step_s: float) -> Deferred:
        """Send ``count`` events, the first tagged ``start`` (epoch seconds)."""
        self._remaining, self._start, self._step_s = count, start, step_s
        self.pump()
        return self.done

    def pump(self) -> None:
        """Queue as many events as c104's queue safely takes now."""
        while self._remaining or self._pending:
            if not self._pending:
                self._pending = self._next_batch()
            if self._gate.in_flight() + len(self._pending) > self._in_flight:
                return
            if not self._transmit(self._pending):
                return  # no master connected: the next tick tries again
            self._pending = []
        if self._gate.in_flight() <= 0 and not self.done.called:
            self.done.callback(self._sent)

    def _next_batch(self) -> list[c104.Point]:
        """The next events, one per point (a batch sends each point's information once)."""
        batch = []
        for spec, point in self._points[:self._remaining]:
            value = toggled(spec, self._values[spec.id])
            at = self._clock.to_c104(self._start + self._sent * self._step_s)
            point.info = (c104.SingleInfo(on=value, recorded_at=at) if spec.type.startswith("M_SP")
                          else c104.DoubleInfo(state=c104.Double(value), recorded_at=at))
            self._values[spec.id] = value
            self._hold(spec.id, value)  # the simulator's ticks serve it from now on
            self._sent += 1
            batch.append(point)
        self._remaining -= len(batch)
        return batch
