"""The value engine behind every simulator: how each point of a simulated device moves.

Protocol-independent and pure (no I/O, no Twisted, no wall clock): the Modbus simulator, and
later the OPC UA and 104 ones, call ``step(now)`` from their own timer and serve the values it
returns in their own encoding. Time is whatever the caller passes, so tests drive it by hand.

Behaviours (``SimBehaviour.kind``), ``dt`` being the seconds since the previous step:

* ``constant`` (and points without ``sim``): hold the value, initially ``sim.value`` or 0,
  until ``set`` changes it. A writable setpoint is usually such a point.
* ``ramp``: ``value += step * dt``, wrapping from ``max`` back to ``min`` (or from ``min`` to
  ``max`` for a negative step) when both bounds are given.
* ``sine``: ``centre + amplitude * sin(2 pi t / period_s)``, ``t`` counted from the first step;
  the centre starts at ``sim.value`` and ``set`` moves it.
* ``hotspot``: ``value`` plus the rise from a hot spot travelling along a cable: its centre goes
  from ``min`` to ``max`` once every ``period_s``; a point at ``position`` (its zone's place along
  the cable; arrays can write ``position: "{zone}"``) rises by ``amplitude`` when the centre is
  on it, less over ``width`` (Gaussian): a DTS zone table with a moving hot spot.
* ``session``: ``value`` during a session, ``idle`` between: an EV charger's power or connector
  state. Sessions fill the first ``duty`` of every ``period_s`` (each device at its own phase), the
  value tapers by ``taper`` over a session's last quarter, ``source`` x ``gain`` caps it (a power limit),
  ``gate`` stops it (a remote stop point at 0). With ``integrate``'s ``reset_on_start`` a
  session's energy counts from ``value`` again whenever its source starts from 0.
* ``random_walk``: ``value += uniform(-step, step) * dt``, clamped to ``min``/``max``; the RNG
  is seeded so a run can be repeated.
* ``follow``: slew towards the current value of ``source`` at ``rate_per_s`` at most (a rate of
  0 means "jump at once"), clamped to ``min``/``max``: PCS active power following its setpoint.
* ``integrate``: ``value += rate_per_s * source * dt``, clamped to ``min``/``max``: BMS state of
  charge integrating battery power.

Dependent behaviours read their source's value as it was at the start of the step, so the order
of points in the profile never changes the result (a chain lags by one step per link).
"""

import math
import random
from dataclasses import dataclass
from typing import Callable, Mapping

from gateway.config.profile import ProfileSpec, SimBehaviour
from gateway.model import Value


@dataclass(slots=True)
class _PointState:
    """What the engine keeps per point: the behaviour and its one moving quantity."""

    sim: SimBehaviour | None
    state: Value  # the value itself, or the centre of a sine
    source_was: float = 0.0  # integrate with reset_on_start: the source's value at the last step


def _clamp(value: float, low: float | None, high: float | None) -> float:
    if low is not None and value < low:
        return low
    if high is not None and value > high:
        return high
    return value


def _wrap(value: float, low: float | None, high: float | None) -> float:
    """``value`` folded back into [low, high) once it runs past either end."""
    if low is None or high is None or high <= low:
        return value
    if low <= value <= high:
        return value
    return low + (value - low) % (high - low)


class ValueEngine:
    """Every point value of one simulated device, advanced by ``step``."""

    def __init__(self, profile: ProfileSpec, seed: int = 0,
                 initial: Mapping[str, Value] | None = None) -> None:
        """``initial`` overrides starting values (strings, for instance, where sim has floats).

        Raises ValueError naming the point when a follow/integrate source does not exist, so
        a profile mistake fails when the simulator is built, not on the first tick.
        """
        self._points: dict[str, _PointState] = {}
        for spec in profile.points:
            start: Value = spec.sim.value if spec.sim is not None else 0
            self._points[spec.id] = _PointState(spec.sim, start)
        self._values: dict[str, Value] = {pid: p.state for pid, p in self._points.items()}
        for point_id, value in (initial or {}).items():
            self.set(point_id, value)
        self._check_sources(profile.model)
        self._rng = random.Random(seed)
        self._phase = random.Random(f"session-{seed}").random()  # apart from the walks' draws
        self._started: float | None = None
        self._last: float | None = None

    def _check_sources(self, model: str) -> None:
        for point_id, point in self._points.items():
            sim = point.sim
            if sim is None:
                continue
            if sim.kind in ("follow", "integrate") and sim.source not in self._points:
                raise ValueError(f"{model}: point {point_id!r} {sim.kind}s unknown point {sim.source!r}")
            for role, name in (("source", sim.source), ("gate", sim.gate)):
                if sim.kind == "session" and name is not None and name not in self._points:
                    raise ValueError(f"{model}: point {point_id!r}: session {role} {name!r} is no point")

    def step(self, now: float) -> dict[str, Value]:
        """Advance every simulated point to time ``now`` (seconds); all current values."""
        if self._started is None or self._last is None:
            self._started = self._last = now
        dt = max(0.0, now - self._last)
        self._last = max(now, self._last)
        before = dict(self._values)
        for point_id, point in self._points.items():
            if point.sim is not None:
                self._values[point_id] = self._advance(point, dt, now - self._started, before)
        return dict(self._values)

    def _advance(self, point: _PointState, dt: float, elapsed: float,
                 before: Mapping[str, Value]) -> Value:
        sim = point.sim
        assert sim is not None
        if sim.kind == "constant" or not isinstance(point.state, int | float):
            return point.state
        if sim.kind == "sine":
            return point.state + sim.amplitude * math.sin(2 * math.pi * elapsed / sim.period_s)
        if sim.kind == "hotspot":
            return point.state + _hotspot(sim, elapsed)
        if sim.kind == "session":
            return self._session(sim, float(point.state), elapsed, before)
        if sim.kind == "integrate" and sim.reset_on_start:
            source = _number(before[sim.source or ""], 0.0)
            if source and not point.source_was:
                point.state = sim.value
            point.source_was = source
        point.state = _MOVES[sim.kind](self, sim, float(point.state), dt, before)
        return point.state

    def _ramp(self, sim: SimBehaviour, value: float, dt: float, _: Mapping[str, Value]) -> float:
        return _wrap(value + sim.step * dt, sim.min, sim.max)

    def _random_walk(self, sim: SimBehaviour, value: float, dt: float,
                     _: Mapping[str, Value]) -> float:
        return _clamp(value + self._rng.uniform(-sim.step, sim.step) * dt, sim.min, sim.max)

    def _follow(self, sim: SimBehaviour, value: float, dt: float,
                before: Mapping[str, Value]) -> float:
        target = _number(before[sim.source or ""], value)
        if sim.rate_per_s > 0:
            limit = sim.rate_per_s * dt
            target = value + _clamp(target - value, -limit, limit)
        return _clamp(target, sim.min, sim.max)

    def _integrate(self, sim: SimBehaviour, value: float, dt: float,
                   before: Mapping[str, Value]) -> float:
        source = _number(before[sim.source or ""], 0.0)
        return _clamp(value + sim.rate_per_s * source * dt, sim.min, sim.max)

    def _session(self, sim: SimBehaviour, value: float, elapsed: float, before: Mapping[str, Value]) -> float:
        """``value`` during a session, ``idle`` between them: sessions take the first ``duty`` of
        every ``period_s``, shifted by the device's own phase (two chargers of one model do not
        plug in together); the last quarter of a session loses up to ``taper`` of the value (a
        battery near full draws less); capped by ``source`` x ``gain``, off while ``gate`` is 0."""
        cycle = (elapsed / sim.period_s + self._phase) % 1.0
        if cycle >= sim.duty or (sim.gate is not None and not _number(before[sim.gate], 0.0)):
            return sim.idle
        through = cycle / sim.duty if sim.duty else 0.0
        level = value * (1.0 - sim.taper * max(0.0, through - 0.75) / 0.25)
        if sim.source is not None:
            level = min(level, sim.gain * _number(before[sim.source], level))
        return level

    def set(self, point_id: str, value: Value) -> None:
        """Give a point a new value now (a client's write, or a test's arrangement).

        Moving behaviours continue from it; for a sine it becomes the new centre. KeyError
        for an unknown point.
        """
        point = self._points[point_id]
        point.state = value
        self._values[point_id] = value

    def get(self, point_id: str) -> Value:
        """The point's value as of the last step or set."""
        return self._values[point_id]

    def values(self) -> dict[str, Value]:
        """Every point's value as of the last step or set."""
        return dict(self._values)


def _hotspot(sim: SimBehaviour, elapsed: float) -> float:
    """The rise at ``sim.position`` from a hot spot travelling from ``min`` to ``max`` once every
    ``period_s``: ``amplitude`` at its centre, falling off over ``width`` (a Gaussian)."""
    low, high = sim.min or 0.0, sim.max or 0.0
    centre = low + (high - low) * ((elapsed % sim.period_s) / sim.period_s)
    return sim.amplitude * math.exp(-(((sim.position or 0.0) - centre) / sim.width) ** 2)


def _number(value: Value, fallback: float) -> float:
    """A source's value as a float; a non-numeric source (string, None) counts as ``fallback``."""
    return float(value) if isinstance(value, int | float) else fallback


_MOVES: dict[str, Callable[[ValueEngine, SimBehaviour, float, float, Mapping[str, Value]], float]] = {
    "ramp": ValueEngine._ramp,
    "random_walk": ValueEngine._random_walk,
    "follow": ValueEngine._follow,
    "integrate": ValueEngine._integrate,
}
