"""Simulated downstream stations: one c104 ``Server`` per host:port the site's connections name,
one station per common address, one point per profile point with its configured type.

Values come from the shared value engine (``gateway.simulation.simvalues``), stepped on the
reactor every ``period_s``; what changed goes out spontaneously (COT 3) in one batch per type,
time-tagged types with the tick's time in the connection's wire zone (``WireClock``). c104
answers interrogations itself with the configured types (tagged ones too: a c104 server cannot
send the untagged twin, which the master driver takes either way). Limitation of c104 2.2.1:
its ``BinaryCounterInfo`` cannot be built from Python, so counters' time tags are c104's own
(the process clock, written as UTC fields).

Faults on demand (``fault``), for a device's whole server:

* ``drop``: the server closes every connection and listens again after ``down_s`` (default 1.0);
* ``negative``: every command is refused (negative ACT_CON) until ``healthy``;
* ``healthy``: commands are taken again.

What c104's server cannot be made to do (stop answering with TCP open, an execute confirmed
without ACT_TERM, a wrong type on an IOA, 10,000 events at once without its queue dropping
some) is done by the scripted raw-socket station of the tests (``tests/iec104_rtu.py``).
"""

import logging
from typing import Any, Sequence

import c104
from twisted.internet import threads
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.task import deferLater
from twisted.internet.task import LoopingCall
from zope.interface import implementer

from drivers.iec104.codec import NORMALIZED_MAX, scaled, to_engineering, to_raw
from drivers.iec104.profile import Iec104Connection, Iec104Point, Iec104Profile
from gateway.iec104.types import COUNTERS, TIME_TAGGED
from gateway.iec104.wiretime import WireClock
from gateway.interfaces import ISimulator
from gateway.model import Device, Value
from gateway.simulation.simvalues import ValueEngine

log = logging.getLogger(__name__)

FAULT_KINDS = ("drop", "negative", "healthy")

INFO = {"M_SP": lambda v, at: c104.SingleInfo(on=v, recorded_at=at),
        "M_DP": lambda v, at: c104.DoubleInfo(state=v, recorded_at=at),
        "M_ME_NA": lambda v, at: c104.NormalizedInfo(actual=v, recorded_at=at),
        "M_ME_TD": lambda v, at: c104.NormalizedInfo(actual=v, recorded_at=at),
        "M_ME_NB": lambda v, at: c104.ScaledInfo(actual=v, recorded_at=at),
        "M_ME_TE": lambda v, at: c104.ScaledInfo(actual=v, recorded_at=at),
        "M_ME_NC": lambda v, at: c104.ShortInfo(actual=v, recorded_at=at),
        "M_ME_TF": lambda v, at: c104.ShortInfo(actual=v, recorded_at=at)}


def wire_value(point: Iec104Point, value: Value) -> Any:
    """The c104 value of an engineering value; ValueError when the type cannot carry it."""
    kind = point.type[:7]
    if kind.startswith("M_SP"):
        return bool(value)
    if kind.startswith("M_DP"):
        state = int(value)  # type: ignore[arg-type]
        if not 0 <= state <= 3:
            raise ValueError(f"{point.id}: {value} is not a double-point state 0..3")
        return c104.Double(state)
    if kind in ("M_ME_NA", "M_ME_TD"):
        return c104.NormalizedFloat(max(-1.0, min(NORMALIZED_MAX, to_raw(point, value))))
    if kind in ("M_ME_NB", "M_ME_TE"):
        return c104.Int16(scaled(point, value))
    raw = to_raw(point, value)
    return int(round(raw)) if point.type in COUNTERS else raw


def command_value(point: Iec104Point, value: Any) -> Value:
    """The engineering value a command's c104 value sets (a double command's state 1 or 2 as is)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, c104.Double):
        return int(value.value)
    return to_engineering(point, float(value))


class SimulatedStation:
    """One device: its value engine, the c104 points serving it, and the command points whose
    execution moves the commanded point (the return information goes out spontaneously)."""

    def __init__(self, device: Device, station: c104.Station, seed: int, commanded: Any) -> None:
        self.name = device.name
        self.profile: Iec104Profile = device.profile  # type: ignore[assignment]
        connection: Iec104Connection = device.connection  # type: ignore[assignment]
        self.clock = WireClock(connection.wire_time_zone)
        self.common_address = connection.common_address
        self.engine = ValueEngine(self.profile, seed)
        self.specs = {p.id: p for p in self.profile.points}
        self.points = {p.id: station.add_point(io_address=p.ioa, type=getattr(c104.Type, p.type), report_ms=0)
                       for p in self.profile.points}
        self.served: dict[str, Value] = {}
        self._refused: set[str] = set()
        for spec in (p for p in self.profile.points if p.command is not None):
            assert spec.command is not None
            mode = c104.CommandMode.SELECT_AND_EXECUTE if spec.command.mode == "select_execute" \
                else c104.CommandMode.DIRECT
            station.add_point(io_address=spec.command.ioa, type=getattr(c104.Type, spec.command.type),
                              command_mode=mode).on_receive(callable=commanded)

    def commanded_by(self, common_address: int, command_ioa: int) -> Iec104Point | None:
        """The point a command IOA of this station commands."""
        if common_address != self.common_address:
            return None
        return next((p for p in self.profile.points if p.command is not None and p.command.ioa == command_ioa), None)

    def serve(self, values: dict[str, Value], now: float) -> list[c104.Point]:
        """Put the values that changed into their points (logging, once, one the type cannot carry)."""
        changed = []
        for point_id, value in values.items():
            if self.served.get(point_id) == value:
                continue
            spec, point = self.specs[point_id], self.points[point_id]
            try:
                self._put(spec, point, wire_value(spec, value), now)
            except (ValueError, TypeError) as exc:
                if point_id not in self._refused:
                    self._refused.add(point_id)
                    log.warning("simulated %s: %s; serving the last value", self.name, exc)
                continue
            self._refused.discard(point_id)
            self.served[point_id] = value
            changed.append(point)
        return changed

    def _put(self, spec: Iec104Point, point: c104.Point, value: Any, now: float) -> None:
        build = next((make for prefix, make in INFO.items() if spec.type.startswith(prefix)), None)
        if build is None or spec.type not in TIME_TAGGED:
            point.value = value
        else:
            point.info = build(value, self.clock.to_c104(now))


@implementer(ISimulator)
class Iec104Simulator:
    """Every IEC 104 station of a site, simulated on the host:port its connection names."""

    def __init__(self, devices: Sequence[Device], reactor: Any, period_s: float = 0.5, seed: int = 0) -> None:
        self._reactor = reactor
        self._servers: dict[tuple[str, int], c104.Server] = {}
        self._stations: dict[str, SimulatedStation] = {}
        self._server_of: dict[str, c104.Server] = {}
        for device in devices:
            connection: Iec104Connection = device.connection  # type: ignore[assignment]
            key = (connection.host, connection.port)
            if key not in self._servers:
                self._servers[key] = c104.Server(ip=connection.host, port=connection.port, tick_rate_ms=50,
                                                 max_connections=4)
            server = self._servers[key]
            station = server.get_station(common_address=connection.common_address) or \
                server.add_station(common_address=connection.common_address)
            self._stations[device.name] = SimulatedStation(device, station, seed, self._c104_command)
            self._server_of[device.name] = server
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = reactor
        self._period_s = period_s
        self._refusing: set[int] = set()  # id() of the servers refusing commands

    def start(self) -> Deferred:
        """Serve the first values, listen, tick."""
        self._tick(transmit=False)
        calls = [threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), s.start)
                 for s in self._servers.values()]
        d = DeferredList(calls, fireOnOneErrback=True, consumeErrors=True)
        d.addCallback(lambda _: self._listening())
        return d

    def _listening(self) -> None:
        for host, port in self._servers:
            log.info("IEC 104 simulator listening at %s:%d", host, port)
        self._ticker.start(self._period_s, now=False)

    def stop(self) -> Deferred:
        """Stop ticking and close every server (in threads: c104 blocks while it stops)."""
        if self._ticker.running:
            self._ticker.stop()
        calls = [threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), s.stop)
                 for s in self._servers.values()]
        return DeferredList(calls, consumeErrors=True)

    def _tick(self, transmit: bool = True) -> None:
        now = self._reactor.seconds()
        for name, station in self._stations.items():
            changed = station.serve(station.engine.step(now), now)
            if transmit and changed:
                self._transmit(name, changed)

    def _transmit(self, device: str, points: list[c104.Point]) -> None:
        """Changed points go out spontaneously, one batch per type (a c104 batch holds one type)."""
        server = self._server_of[device]
        by_type: dict[str, list[c104.Point]] = {}
        for point in points:
            by_type.setdefault(point.type.name, []).append(point)
        for batch in by_type.values():
            server.transmit_batch(c104.Batch(cause=c104.Cot.SPONTANEOUS, points=batch))

    def _c104_command(self, point: c104.Point, previous_info: c104.Information,
                      message: c104.IncomingMessage) -> c104.ResponseState:
        """c104's thread: an executed command; the commanded point takes its value on the reactor
        (unless the ``negative`` fault refuses it)."""
        if id(point.station.server) in self._refusing:
            return c104.ResponseState.FAILURE
        self._reactor.callFromThread(self._commanded, message.common_address, point.io_address, point.value)
        return c104.ResponseState.SUCCESS

    def _commanded(self, common_address: int, command_ioa: int, value: Any) -> None:
        for name, station in self._stations.items():
            spec = station.commanded_by(common_address, command_ioa)
            if spec is not None:
                self.set_value(name, spec.id, command_value(spec, value))
                return

    def fault(self, device: str, kind: str, **options: Any) -> Deferred:
        """Make the device's server misbehave (module docstring); fires once in effect.
        ValueError for an unknown kind; KeyError for a device not simulated here."""
        server = self._server_of[device]
        if kind == "drop":
            return self._drop(server, float(options.get("down_s", 1.0)))
        if kind in ("negative", "healthy"):
            (self._refusing.add if kind == "negative" else self._refusing.discard)(id(server))
            return succeed(None)
        raise ValueError(f"unknown fault {kind!r}; kinds: {', '.join(FAULT_KINDS)}")

    def _drop(self, server: c104.Server, down_s: float) -> Deferred:
        pool = self._reactor.getThreadPool()
        d = threads.deferToThreadPool(self._reactor, pool, server.stop)
        d.addCallback(lambda _: deferLater(self._reactor, down_s, lambda: None))
        d.addCallback(lambda _: threads.deferToThreadPool(self._reactor, pool, server.start))
        return d

    def value(self, device: str, point: str) -> Value:
        """The engineering value the station serves now."""
        return self._stations[device].served[point]

    def set_value(self, device: str, point: str, value: Value) -> None:
        """Serve ``value`` now and send it spontaneously; ValueError when its type cannot carry it."""
        station = self._stations[device]
        wire_value(station.specs[point], value)
        station.engine.set(point, value)
        changed = station.serve({point: value}, self._reactor.seconds())
        if changed:
            self._transmit(device, changed)
