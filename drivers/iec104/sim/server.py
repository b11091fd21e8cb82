"""Simulated downstream stations: one c104 ``Server`` per host:port the site's connections name,
one station per common address, one point per profile point with its configured type.

Values come from the shared value engine (``gateway.simulation.simvalues``), stepped on the
reactor every ``period_s``; what changed goes out spontaneously (COT 3) in one batch per type,
time-tagged types with the tick's time in the connection's wire zone (``WireClock``). c104
answers interrogations itself with the configured types (tagged ones too: a c104 server cannot
send the untagged twin, which the master driver takes either way). Limitation of c104 2.2.1:
its ``BinaryCounterInfo`` cannot be built from Python, so counters' time tags are c104's own
(the process clock, written as UTC fields).

Each server sits behind a ``FaultGate`` (a relay on the connection's address; c104 listens on a
loopback port of its own), which does what c104's server cannot be told to do. Faults on demand
(``fault``), for a device's whole server:

* ``drop``: every connection closed, nothing listening for ``down_s`` (default 1.0);
* ``stall``: nothing answered any more, TCP kept open (TESTFR neither): a hung RTU;
* ``negative``: every command refused (negative ACT_CON);
* ``no_act_term``: commands confirmed, their ACT_TERM left out;
* ``wrong_types``: monitored values sent with another type of the same layout (M_SP as M_DP...);
* ``burst``: ``count`` SOE (default 10,000) on the station's single or double points, time tags
  ``step_ms`` apart (default 1), sent as fast as the master takes them, none lost (c104's queue
  holds 100 ASDUs and overwrites the oldest: the burst is paced by what the gate has passed on);
  fires once every event has left;
* ``healthy``: every fault above but ``burst`` ended.
"""

import logging
from typing import Any, Sequence

import c104
from twisted.internet import threads
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.task import LoopingCall
from zope.interface import implementer

from drivers.iec104.codec import NORMALIZED_MAX, scaled, to_engineering, to_raw
from drivers.iec104.driver import apply_timers
from drivers.iec104.profile import Iec104Connection, Iec104Point, Iec104Profile
from drivers.iec104.sim.burst import SoeBurst, burst_points
from drivers.iec104.sim.faultgate import FaultGate, free_loopback_port
from gateway.iec104.types import COUNTERS, TIME_TAGGED
from gateway.iec104.wiretime import WireClock
from gateway.interfaces import ISimulator
from gateway.model import Device, Value
from gateway.simulation.simvalues import ValueEngine

log = logging.getLogger(__name__)

FAULT_KINDS = ("drop", "stall", "negative", "no_act_term", "wrong_types", "burst", "healthy")
BURST_IN_FLIGHT = 80  # spontaneous objects queued in c104 and not yet passed on (its queue: 100 ASDUs)

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
        self._gates: dict[tuple[str, int], FaultGate] = {}
        self._stations: dict[str, SimulatedStation] = {}
        self._address_of: dict[str, tuple[str, int]] = {}
        for device in devices:
            connection: Iec104Connection = device.connection  # type: ignore[assignment]
            key = (connection.host, connection.port)
            if key not in self._servers:
                inner_port = free_loopback_port()
                self._servers[key] = c104.Server(ip="127.0.0.1", port=inner_port, tick_rate_ms=50, max_connections=4)
                apply_timers(self._servers[key].protocol_parameters, connection.timers)
                self._gates[key] = FaultGate(reactor, connection.host, connection.port, inner_port)
                self._gates[key].on_passed = self._pump_bursts
            server = self._servers[key]
            station = server.get_station(common_address=connection.common_address) or \
                server.add_station(common_address=connection.common_address)
            self._stations[device.name] = SimulatedStation(device, station, seed, self._c104_command)
            self._address_of[device.name] = key
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = reactor
        self._period_s = period_s
        self._refusing: set[tuple[str, int]] = set()  # servers refusing commands
        self._bursts: list[SoeBurst] = []

    def start(self) -> Deferred:
        """Serve the first values, listen, tick."""
        self._tick(transmit=False)
        calls = [threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), s.start)
                 for s in self._servers.values()]
        d = DeferredList(calls, fireOnOneErrback=True, consumeErrors=True)
        d.addCallback(lambda _: self._listening())
        return d

    def _listening(self) -> None:
        for gate in self._gates.values():
            gate.listen()
            log.info("IEC 104 simulator listening at %s:%d", gate.host, gate.port)
        self._ticker.start(self._period_s, now=False)

    def stop(self) -> Deferred:
        """Stop ticking, close the gates and every server (in threads: c104 blocks while it stops)."""
        if self._ticker.running:
            self._ticker.stop()
        for gate in self._gates.values():
            gate.close()
        calls = [threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), s.stop)
                 for s in self._servers.values()]
        return DeferredList(calls, consumeErrors=True)

    def _tick(self, transmit: bool = True) -> None:
        now = self._reactor.seconds()
        for name, station in self._stations.items():
            changed = station.serve(station.engine.step(now), now)
            if transmit and changed:
                self._transmit(name, changed)
        self._pump_bursts()

    def _transmit(self, device: str, points: list[c104.Point]) -> None:
        """Changed points go out spontaneously, one batch per type (a c104 batch holds one type)."""
        by_type: dict[str, list[c104.Point]] = {}
        for point in points:
            by_type.setdefault(point.type.name, []).append(point)
        for batch in by_type.values():
            self._spontaneous(self._address_of[device], batch)

    def _spontaneous(self, address: tuple[str, int], points: list[c104.Point]) -> bool:
        """One batch of one type sent spontaneously; False when c104 had no master to send it to."""
        sent = bool(self._servers[address].transmit_batch(c104.Batch(cause=c104.Cot.SPONTANEOUS, points=points)))
        if sent:
            self._gates[address].enqueued(len(points))
        return sent

    def _c104_command(self, point: c104.Point, previous_info: c104.Information,
                      message: c104.IncomingMessage) -> c104.ResponseState:
        """c104's thread: an executed command; the commanded point takes its value on the reactor
        (unless the ``negative`` fault refuses it)."""
        server = point.station.server
        if any(self._servers[address] is server for address in self._refusing):
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
        address = self._address_of[device]
        gate = self._gates[address]
        if kind == "drop":
            return gate.drop(float(options.get("down_s", 1.0)))
        if kind == "burst":
            return self._burst(device, int(options.get("count", 10_000)), float(options.get("step_ms", 1.0)) / 1000)
        if kind == "healthy":
            self._refusing.discard(address)
            gate.stall(False)
            gate.faults.wrong_types = gate.faults.no_act_term = False
        elif kind == "negative":
            self._refusing.add(address)
        elif kind == "stall":
            gate.stall(True)
        elif kind in ("wrong_types", "no_act_term"):
            setattr(gate.faults, kind, True)
        else:
            raise ValueError(f"unknown fault {kind!r}; kinds: {', '.join(FAULT_KINDS)}")
        return succeed(None)

    def _burst(self, device: str, count: int, step_s: float) -> Deferred:
        station, address = self._stations[device], self._address_of[device]
        points = burst_points([(spec, station.points[spec.id]) for spec in station.profile.points])
        burst = SoeBurst(points, station.served, station.engine.set, station.clock,
                         lambda batch: self._spontaneous(address, batch), self._gates[address], BURST_IN_FLIGHT)
        self._bursts.append(burst)

        def finished(sent: int) -> int:
            self._bursts.remove(burst)
            log.info("simulated %s: burst of %d SOE sent", device, sent)
            return sent
        return burst.start(count, self._reactor.seconds(), step_s).addCallback(finished)

    def _pump_bursts(self) -> None:
        for burst in list(self._bursts):
            burst.pump()

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
