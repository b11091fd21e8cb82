"""The IDriver of one downstream IEC 104 station (an RTU, a protection relay's 104 interface, a
PV plant's collector): the gateway is its master, on c104's client.

c104 keeps the link (STARTDT, TESTFR, reconnecting about every second) and calls back on its
own threads; each callback copies plain values and hands them to the reactor
(``callFromThread``), where they are published one batch per reactor turn
(``gateway.batching``). Blocking c104 calls (start, stop, interrogations) run in threads.

* Values carry the station's time tag as ``source_time`` (``WireClock``: the wire zone the
  connection names, whatever the gateway process's TZ), the arrival time when untagged, and the
  104 quality bits as they came (counters: IV, and CY as OV).
* A point takes its configured type and that type's tagged or untagged twin: RTUs answer an
  interrogation untagged and send events tagged on the same IOA; c104 delivers the twin only
  to ``on_unexpected_message`` (MISMATCHED_TYPE_ID), with its value, quality and time. Any other
  type on a point's IOA makes the point IV with its last value (logged once per episode).
* A double point keeps its state (0 intermediate, 1 off, 2 on, 3 faulty); an intermediate or
  faulty state is logged once per episode and counted in ``gridgate_iec104_double_transit_total``.
* The link counts as up only when OPEN (c104 can sit connected in OPEN_MUTED: it often never sends
  the STARTDT of a new connection, which the driver then sends after a second; and a station may
  drop it: after t1 the driver sends STARTDT again, after another t1 it connects anew): anything else
  publishes every point NT at once (``gateway.health``), IV and ``_online`` false after
  ``offline_after_s``; a GI (c104's ``Init``) and, for a profile with counters, a counter
  interrogation follow every STARTDT, and repeat every ``gi_every_s`` and
  ``counter_interrogation_every_s``.
* Commands (``commanding``) go to the command IOA the point's profile names, direct or select
  then execute, and are confirmed by the point's own return information.
"""

import datetime
import logging
from typing import Any, Callable

import c104
from twisted.internet import threads
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall
from zope.interface import implementer

from drivers.iec104.codec import to_engineering
from drivers.iec104.commanding import Commander
from drivers.iec104.profile import Iec104Connection, Iec104Point, Iec104Profile
from gateway.batching import TurnBatcher
from gateway.aio import as_deferred
from gateway.errors import DeviceError
from gateway.health import DeviceHealth, TurnValues
from gateway.iec104.timers import Timers
from gateway.iec104.types import COUNTERS, UNTAGGED
from gateway.iec104.wiretime import WireClock
from gateway.interfaces import IDriver, ISampleSink
from gateway.metrics import Metrics
from gateway.model import Command, Device, Quality, Value

log = logging.getLogger(__name__)

TWINS = {**UNTAGGED, **{untagged: tagged for tagged, untagged in UNTAGGED.items()}}
QUALITY_BITS = int(Quality.IV | Quality.NT | Quality.SB | Quality.BL | Quality.OV)
# the BCR octet's IV and CY bits (IEC 60870-5-101 7.2.6.9: CY bit 6, CA bit 7, IV bit 8); c104 2.2.1
# hands them over as they are but names 0x20 "Adjusted" and 0x40 "Carry", the other way round
COUNTER_INVALID, COUNTER_CARRY = 0x80, 0x20
INTERMEDIATE, FAULTY = 0, 3
TICK_MS = 50  # c104's minimum
STARTDT_ACT = b"\x68\x04\x07"  # a U-frame with STARTDT act (IEC 60870-5-104 5.3)
STARTDT_GRACE_S = 1.0  # a new connection whose STARTDT c104 has not sent by then gets one
# c104 leaves to on_unexpected_message the tagged twin of a configured type (MISMATCHED_TYPE_ID)
# and a tagged type in an interrogation answer (INVALID_COT: the standard wants it untagged, some
# RTUs send it anyway); both still carry value, quality and time, and ``_arrived`` takes them when
# the type is the point's or its twin
TAKEN_ANYWAY = (c104.Umc.MISMATCHED_TYPE_ID, c104.Umc.INVALID_COT)

# what a c104 callback hands the reactor: common address, IOA, type name, value, quality bits, c104's time
Arrival = tuple[int, int, str, Value, int, "datetime.datetime | None"]


def plain_value(type_name: str, value: Any) -> Value:
    """A c104 value as a gateway value: bool, the double point's state 0..3, a number."""
    if type_name.startswith("M_SP"):
        return bool(value)
    if type_name.startswith("M_DP"):
        return int(value.value)
    if type_name.startswith(("M_ME_NA", "M_ME_TD")):
        return float(value)
    return int(value) if type_name.startswith(("M_ME_NB", "M_ME_TE", "M_IT")) else float(value)


def quality_bits(type_name: str, quality: Any) -> int:
    """The 104 quality of a c104 Information as the gateway's bits (counters: IV, and CY as OV)."""
    bits = int(quality.value)
    if type_name in COUNTERS:
        return (Quality.IV if bits & COUNTER_INVALID else 0) | (Quality.OV if bits & COUNTER_CARRY else 0)
    return bits & QUALITY_BITS


@implementer(IDriver)
class Iec104Driver:
    """One downstream station on one link; values pushed by the station."""

    def __init__(self, device: Device, sink: ISampleSink, reactor: Any, metrics: Metrics | None = None) -> None:
        self.device = device
        self.devices = [device.name]
        self.profile: Iec104Profile = device.profile  # type: ignore[assignment]
        self.connection: Iec104Connection = device.connection  # type: ignore[assignment]
        self._reactor = reactor
        self._metrics = metrics or Metrics()
        self._clock = WireClock(self.connection.wire_time_zone)
        self._points: dict[tuple[int, int], Iec104Point] = {
            (p.common_address or self.connection.common_address, p.ioa): p for p in self.profile.points}
        self.health = DeviceHealth(device.name, [p.id for p in self.profile.points], sink, reactor, None,
                                   metrics=self._metrics, offline_after_s=self.connection.offline_after_s)
        self.batcher: TurnBatcher[tuple[str, Value | None, int, float | None]] = TurnBatcher(self._publish_turn, reactor)
        self._client, self._link, stations = self._build_link()
        self._commander = Commander(self.profile, self.connection, stations, reactor)
        self._link.on_receive_raw(callable=self._commander.c104_raw)
        self._link.on_send_raw(callable=self._c104_sent)
        self._open = False
        self._episode = 0  # link state changes seen: a muted-link check of an earlier one does nothing
        self._muted_check: Any = None
        self._nudge: Any = None
        self._startdt_sent = False
        self._in_transit: set[str] = set()  # double points logged in an intermediate or faulty state
        self._mistyped: set[str] = set()  # points logged as sent with a wrong type
        self._loops = [(LoopingCall(self._interrogate, what), every) for what, every in self._periods()]
        for loop, _ in self._loops:
            loop.clock = reactor

    def _build_link(self) -> tuple[c104.Client, c104.Connection, dict[int, c104.Station]]:
        connection = self.connection
        client = c104.Client(tick_rate_ms=TICK_MS, command_timeout_ms=int(connection.command_timeout_s * 1000))
        init = c104.Init.ALL if connection.clock_sync == "on_connect" else c104.Init.INTERROGATION
        link = client.add_connection(ip=connection.host, port=connection.port, init=init)
        apply_timers(link.protocol_parameters, connection.timers)
        link.on_state_change(callable=self._c104_state)
        link.on_unexpected_message(callable=self._c104_unexpected)
        stations: dict[int, c104.Station] = {}
        for (common_address, ioa), point in self._points.items():
            if common_address not in stations:
                stations[common_address] = link.add_station(common_address=common_address)
            stations[common_address].add_point(io_address=ioa, type=getattr(c104.Type, point.type)) \
                .on_receive(callable=self._c104_received)
        return client, link, stations

    def _periods(self) -> list[tuple[str, float]]:
        connection = self.connection
        every = [("GI", connection.gi_every_s), ("counters", connection.counter_interrogation_every_s),
                 ("clock", connection.clock_sync_every_s)]
        return [(what, period) for what, period in every if period is not None]

    # ---- c104 threads: copy plain values, hand them to the reactor ----------------------------

    def _c104_state(self, connection: c104.Connection, state: c104.ConnectionState) -> None:
        self._reactor.callFromThread(self._state, state.name)

    def _c104_received(self, point: c104.Point, previous_info: c104.Information,
                       message: c104.IncomingMessage) -> c104.ResponseState:
        self._hand_over(message.common_address, point.io_address, point.type.name, point.info)
        return c104.ResponseState.NONE

    def _c104_unexpected(self, connection: c104.Connection, message: c104.IncomingMessage, cause: c104.Umc) -> None:
        if cause in TAKEN_ANYWAY:
            self._hand_over(message.common_address, message.io_address, message.type.name, message.info)
        else:
            self._reactor.callFromThread(self._unexpected, message.common_address, message.io_address,
                                         message.type.name, cause.name)

    def _hand_over(self, common_address: int, ioa: int, type_name: str, info: Any) -> None:
        try:
            arrival: Arrival = (common_address, ioa, type_name, plain_value(type_name, info.value),
                                quality_bits(type_name, info.quality), info.recorded_at)
        except (TypeError, ValueError, AttributeError) as exc:  # nothing a station sends may raise in c104's thread
            self._reactor.callFromThread(self._unexpected, common_address, ioa, type_name, f"undecodable: {exc}")
            return
        self._reactor.callFromThread(self._arrived, arrival)

    # ---- the reactor ------------------------------------------------------------------------

    def _state(self, state: str) -> None:
        was_open, self._open = self._open, state == "OPEN"
        self._episode += 1
        if state == "OPEN_MUTED":
            self._startdt_sent = False
            self._nudge = self._reactor.callLater(STARTDT_GRACE_S, self._no_startdt, self._episode)
            self._check_muted(self._episode, False)
        if was_open and not self._open:
            self.health.failed("link", DeviceError(self.device.name, f"link to {self._address()} {state}"))
        elif not was_open and not self._open and not self.health.failures and state == "CLOSED_AWAIT_RECONNECT":
            self.health.failed("link", DeviceError(self.device.name, f"no link to {self._address()}"))
        if self._open:
            log.info("%s: link to %s open", self.device.name, self._address())
            if any(p.type in COUNTERS for p in self.profile.points):
                self._interrogate("counters")  # counters are not in a GI: read them at every STARTDT too

    def _still_muted(self, episode: int, tried: bool) -> None:
        """Connected but STARTDT unconfirmed for t1 (a station that dropped it, or hangs): c104 waits
        on, so the driver sends STARTDT again, and after another t1 connects anew."""
        if episode != self._episode:
            return
        if not self.health.failures:
            self.health.failed("link", DeviceError(self.device.name, f"link to {self._address()} connected, "
                                                                     f"STARTDT not confirmed within t1"))
        pool = self._reactor.getThreadPool()
        if tried:
            log.info("%s: %s still muted after STARTDT again; connecting anew", self.device.name, self._address())
            threads.deferToThreadPool(self._reactor, pool, _reconnect, self._link).addErrback(self._logged, "reconnect")
            return
        threads.deferToThreadPool(self._reactor, pool, self._link.unmute).addErrback(self._logged, "STARTDT")
        self._check_muted(episode, True)

    def _no_startdt(self, episode: int) -> None:
        """c104 2.2.1 often never sends the STARTDT of a new connection (its ``setOpen`` schedules the
        unmute before the link counts as connected): send it once, if it really was not sent."""
        if episode == self._episode and not self._startdt_sent:
            log.info("%s: c104 sent no STARTDT to %s; sending it", self.device.name, self._address())
            threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._link.unmute) \
                .addErrback(self._logged, "STARTDT")

    def _c104_sent(self, connection: c104.Connection, data: bytes) -> None:
        """c104's thread, a frame sent: a STARTDT act is noted; a command's frame goes to the commander."""
        if data[:3] == STARTDT_ACT:
            self._reactor.callFromThread(setattr, self, "_startdt_sent", True)
        self._commander.c104_sent_raw(connection, data)

    def _check_muted(self, episode: int, tried: bool) -> None:
        if self._muted_check is not None and self._muted_check.active():
            self._muted_check.cancel()
        self._muted_check = self._reactor.callLater(self.connection.timers.t1, self._still_muted, episode, tried)

    def _logged(self, failure: Any, what: str) -> None:
        log.warning("%s: %s to %s failed: %s", self.device.name, what, self._address(), failure.getErrorMessage())

    def _arrived(self, arrival: Arrival) -> None:
        common_address, ioa, type_name, value, quality, recorded_at = arrival
        point = self._points.get((common_address, ioa))
        if point is None:
            self._unexpected(common_address, ioa, type_name, "not in the profile")
            return
        if type_name not in (point.type, TWINS.get(point.type)):
            self._wrong_type(point, type_name)
            return
        self._mistyped.discard(point.id)
        source = self._source_time(point, recorded_at)
        self._note_double(point, value)
        self.batcher.add((point.id, to_engineering(point, value), quality, source))

    def _source_time(self, point: Iec104Point, recorded_at: datetime.datetime | None) -> float | None:
        if recorded_at is None:
            return None
        try:
            return self._clock.from_c104(recorded_at)
        except (ValueError, OverflowError) as exc:
            log.debug("%s.%s: time tag %s not usable: %s", self.device.name, point.id, recorded_at, exc)
            return None

    def _note_double(self, point: Iec104Point, value: Value) -> None:
        if not point.type.startswith("M_DP"):
            return
        if value in (INTERMEDIATE, FAULTY):
            self._metrics.counter("gridgate_iec104_double_transit_total", "double points seen intermediate or faulty",
                                  device=self.device.name).inc()
            if point.id not in self._in_transit:
                self._in_transit.add(point.id)
                log.warning("%s.%s: double point %s (state %d)", self.device.name, point.id,
                            "intermediate" if value == INTERMEDIATE else "faulty", value)
        else:
            self._in_transit.discard(point.id)

    def _wrong_type(self, point: Iec104Point, type_name: str) -> None:
        """A value of another type than the profile's on a point's IOA: its meaning is unknown (a
        double point's state read as a single point's would be a wrong breaker position), so the
        point goes IV with its last value, named once per episode."""
        self._metrics.counter("gridgate_iec104_unexpected_total", "information objects not taken",
                              device=self.device.name).inc()
        if point.id not in self._mistyped:
            self._mistyped.add(point.id)
            log.warning("%s.%s: IOA %d sent as %s, the profile says %s; point IV, last value kept",
                        self.device.name, point.id, point.ioa, type_name, point.type)
        self.batcher.add((point.id, None, int(Quality.IV), None))

    def _unexpected(self, common_address: int, ioa: int, type_name: str, why: str) -> None:
        self._metrics.counter("gridgate_iec104_unexpected_total", "information objects not taken",
                              device=self.device.name).inc()
        log.debug("%s: CA %d IOA %d %s not taken: %s", self.device.name, common_address, ioa, type_name, why)

    def _publish_turn(self, items: list[tuple[str, Value, int, float | None]]) -> None:
        """A turn's values, one batch per round (``TurnValues``)."""
        turn = TurnValues()
        for point, value, quality, source in items:
            if value is None:  # a wrong type: the last valid value, IV
                turn.put(point, turn.last_valid(point, self.health.last(point)), Quality(quality), source)
                continue
            turn.put(point, value, Quality(quality), source)
            self._commander.arrived(point, value, Quality(quality))
        turn.publish(self.health)

    def _address(self) -> str:
        return f"{self.connection.host}:{self.connection.port}"

    # ---- periodic requests, start and stop ------------------------------------------------------

    def _interrogate(self, what: str) -> Deferred | None:
        """A GI, counter interrogation or clock sync, in a thread (c104 blocks); skipped while the link is down."""
        if not self._open:
            return None
        common_addresses = sorted({ca for ca, _ in self._points})
        request: dict[str, Callable[[int], Any]] = {
            "GI": lambda ca: self._link.interrogation(common_address=ca, wait_for_response=False),
            "counters": lambda ca: self._link.counter_interrogation(common_address=ca, wait_for_response=False),
            "clock": lambda ca: self._link.clock_sync(common_address=ca, wait_for_response=False)}
        calls = [threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), request[what], ca)
                 for ca in common_addresses]
        return DeferredList(calls, consumeErrors=True).addCallback(self._requested, what)

    def _requested(self, results: list[tuple[bool, Any]], what: str) -> None:
        for ok, result in results:
            if not ok or result is False:
                log.info("%s: %s request to %s not sent (%s)", self.device.name, what, self._address(),
                         result.getErrorMessage() if not ok else "link not open")

    def start(self) -> Deferred:
        """Start c104's client (it connects and reconnects by itself); an absent station is a
        device offline, not a start-up failure."""
        self.health.start()
        d = threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._client.start)
        for loop, every in self._loops:
            loop.start(every, now=False)
        return d

    def stop(self) -> Deferred:
        """Stop the periodic requests and c104's client (in a thread: it blocks ~130 ms)."""
        for loop, _ in self._loops:
            if loop.running:
                loop.stop()
        for call in (self._muted_check, self._nudge):
            if call is not None and call.active():
                call.cancel()
        self.health.stop()
        return threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._client.stop)

    def execute(self, command: Command) -> Deferred:
        """Send the command to the station and await its confirmations and return information (``commanding``)."""
        return as_deferred(self._commander.execute(command, self._open))

    def stats(self) -> dict[str, Any]:
        """Link state and the device's failures."""
        return {"endpoint": self._address(), "connected": self._open,
                "devices": {self.device.name: {"offline": self.health.offline, "failures": dict(self.health.causes)}}}


def _reconnect(link: c104.Connection) -> None:
    link.disconnect()
    link.connect()


def apply_timers(parameters: c104.ProtocolParameters, timers: Timers) -> None:
    """k, w and t0..t3 from the site file into c104's client or server; c104 takes whole seconds (at least 1)."""
    parameters.send_window_size, parameters.receive_window_size = timers.k, timers.w
    parameters.connection_timeout, parameters.message_timeout = _seconds(timers.t0), _seconds(timers.t1)
    parameters.confirm_interval, parameters.keep_alive_interval = _seconds(timers.t2), _seconds(timers.t3)


def _seconds(duration: float) -> int:
    return max(1, round(duration))
