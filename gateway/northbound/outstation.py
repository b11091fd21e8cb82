"""One IEC 60870-5-104 outstation per master group, on c104.

What c104 does itself: APCI (STARTDT/STOPDT/TESTFR, k/w/t0-t3), general and counter
interrogation from the points' current information, negative replies for unknown types/IOAs.
What this module adds, because c104 cannot (research/domain.md section 1.2):

* the GI image: every sample of a mapped point updates its c104 point at once, so GI always
  answers the latest value and quality (IV+NT before the first poll);
* events: a change beyond the deadband or any quality change goes into the group's
  **persistent** event buffer (a Spool file of its own) before anything is sent, because c104
  drops spontaneous data while no master is connected and silently drops bursts beyond its
  queue. A paced sender drains the buffer in order, ``send_rate`` objects per second, in
  batches of one type, each carrying its original time tag, only while a master is active;
* the communication-status point of each device, the buffer-overflow and clock alarms;
* allowed master IPs, end of initialisation after the first activation, clock-sync policy.

c104 callbacks run on its own threads: they only copy plain values and hand over with
``reactor.callFromThread``. Blocking c104 calls (start, stop) run in a worker thread.
This module must not use ``from __future__ import annotations``: c104 checks callback
annotations as real objects.
"""

import datetime
import logging
import time
from typing import Any, Callable, Iterable, Sequence

import c104
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThread

from gateway.commands.audit import FAILSAFE as FAILSAFE_EVENT
from gateway.commands.audit import AuditLog
from gateway.commands.gate import FAILSAFE, CommandGate, CommandRequest
from gateway.config.iec104 import TIME_TAGGED, MasterGroup, PointMap
from gateway.interfaces import ONLINE_POINT
from gateway.model import Quality, Sample, point_id
from gateway.northbound.commanding import CommandPoints
from gateway.northbound.information import information
from gateway.northbound.spontaneous import SpontaneousFilter
from gateway.northbound.tls import server_security
from gateway.northbound.wiretime import WireClock
from gateway.points import PointTable
from gateway.spool import Spool, SpooledSample

log = logging.getLogger(__name__)

TICK_S = 0.05
BATCH_MAX = 30  # objects per ASDU batch: well inside the 253-octet APDU for every type
START_QUALITY = int(Quality.IV | Quality.NT)


class GroupOutstation:
    """The outstation of one master group: c104 server, GI image, event buffer, paced sender."""

    def __init__(self, group: MasterGroup, table: PointTable, events: Spool, reactor: Any,
                 clock: Callable[[], float] = time.time, gate: CommandGate | None = None,
                 audit: AuditLog | None = None) -> None:
        self.group = group
        self._gate = gate
        self._audit = audit
        self._table = table
        self._events = events
        self._reactor = reactor
        self._clock = clock
        self._wire = WireClock(group.wire_time_zone)
        self._filter = SpontaneousFilter()
        self._maps = _by_point(group)
        self._points: dict[int, c104.Point] = {}
        self._alarm_points: dict[str, int] = {}
        self._server: c104.Server | None = None
        self._sender = LoopingCall(self._send)
        self._sender.clock = reactor
        self._unsubscribe: Callable[[], None] | None = None
        self._was_active = False
        self._initialised = False
        self._bad_clock: set[int] = set()
        self._absent_since: float | None = None
        self._failsafe_fired = False
        self.counters = {"events": 0, "sent": 0, "refused_masters": 0, "clock_syncs": 0}

    @inlineCallbacks
    def start(self) -> Any:
        """Build the station and its points, listen, then follow the PointTable."""
        self._server = self._build_server()
        self._unsubscribe = self._table.subscribe(self._on_samples)
        self._on_samples(list(self._table.snapshot().values()))
        try:
            yield deferToThread(self._server.start)
        except RuntimeError as exc:  # c104: "Can't start server: Port in use?"
            log.error("104 group %s: cannot listen on %s:%d (%s); this group is not served",
                      self.group.name, self.group.bind, self.group.port, exc)
            return
        self._sender.start(TICK_S, now=False)
        log.info("104 group %s: listening on %s:%d, %d points, common address %d", self.group.name,
                 self.group.bind, self.group.port, len(self._points), self.group.common_address)

    @inlineCallbacks
    def stop(self) -> Any:
        """Stop sending, stop listening; events not yet sent stay in the buffer."""
        if self._sender.running:
            self._sender.stop()
        if self._unsubscribe:
            self._unsubscribe()
        if self._server is not None:
            yield deferToThread(self._server.stop)
        self._events.close()

    def _build_server(self) -> c104.Server:
        group = self.group
        security = server_security(group.name, group.tls) if group.tls else None
        server = c104.Server(ip=group.bind, port=group.port, tick_rate_ms=50,
                             max_connections=group.max_connections, transport_security=security)
        params = server.protocol_parameters
        timers = group.timers
        params.send_window_size, params.receive_window_size = timers.k, timers.w
        params.connection_timeout, params.message_timeout = int(timers.t0), int(timers.t1)
        params.confirm_interval, params.keep_alive_interval = int(timers.t2), int(timers.t3)
        server.on_connect(callable=self._c104_on_connect)
        server.on_clock_sync(callable=self._c104_on_clock_sync)
        station = server.add_station(common_address=group.common_address)
        for mapping in group.points:
            self._add(station, mapping.ioa, mapping.type, information(mapping, None, START_QUALITY, None))
        for device, ioa in group.comm_status.items():
            self._add(station, ioa, "M_SP_TB_1", c104.SingleInfo(on=False, quality=c104.Quality(START_QUALITY),
                                                                 recorded_at=self._wire.to_c104(self._clock())))
        if group.commands and self._gate is not None and self._audit is not None:
            CommandPoints(group, self._gate, self._audit, self._reactor, self._wire).add_to(server, station)
        for name in ("buffer_overflow_ioa", "clock_alarm_ioa"):
            ioa = getattr(group, name)
            if ioa:
                self._alarm_points[name] = ioa
                self._add(station, ioa, "M_SP_NA_1", c104.SingleInfo(on=False))
        return server

    def _add(self, station: c104.Station, ioa: int, type_name: str, info: c104.Information) -> None:
        point = station.add_point(io_address=ioa, type=getattr(c104.Type, type_name))
        point.info = info
        self._points[ioa] = point

    # -- c104 threads -----------------------------------------------------------------------

    def _c104_on_connect(self, server: c104.Server, ip: str) -> bool:
        allowed = ip in self.group.allowed_masters
        self._reactor.callFromThread(self._connection_attempt, ip, allowed)
        return allowed

    def _c104_on_clock_sync(self, server: c104.Server, ip: str, date_time: datetime.datetime) -> c104.ResponseState:
        master_ts = self._wire.from_c104(date_time)
        self._reactor.callFromThread(self._clock_synced, ip, master_ts, time.time())
        return c104.ResponseState.SUCCESS

    # -- reactor thread ---------------------------------------------------------------------

    def _connection_attempt(self, ip: str, allowed: bool) -> None:
        if allowed:
            log.info("104 group %s: master %s connected", self.group.name, ip)
        else:
            self.counters["refused_masters"] += 1
            log.warning("104 group %s: refused connection from %s (not in allowed_masters)", self.group.name, ip)

    def _clock_synced(self, ip: str, master_ts: float, local_ts: float) -> None:
        offset = master_ts - local_ts
        self.counters["clock_syncs"] += 1
        alarm = abs(offset) > self.group.clock_sync.alarm_offset_s
        (log.warning if alarm else log.info)("104 group %s: clock sync from %s, master - gateway = %+.3f s",
                                             self.group.name, ip, offset)
        self._set_alarm("clock_alarm_ioa", alarm)
        if self.group.clock_sync.step_os_clock and abs(offset) > 0.001:
            try:
                time.clock_settime(time.CLOCK_REALTIME, time.time() + offset)
                log.warning("104 group %s: OS clock stepped by %+.3f s", self.group.name, offset)
            except OSError as exc:
                log.error("104 group %s: cannot step the OS clock: %s", self.group.name, exc)

    def _set_alarm(self, name: str, on: bool) -> None:
        ioa = self._alarm_points.get(name)
        if ioa is None or self._points[ioa].value == on:
            return
        self._points[ioa].info = c104.SingleInfo(on=on)
        self._points[ioa].transmit(cause=c104.Cot.SPONTANEOUS)

    def _on_samples(self, samples: Iterable[Sample]) -> None:
        maps, accepted = self._maps, []
        for sample in samples:
            report = False
            for mapping in maps.get(sample.point, ()):
                self._points[mapping.ioa].info = self._info(mapping, sample.value, int(sample.quality), sample.source_time)
                report = self._filter.accept(mapping, sample) or report
            if report:
                accepted.append(sample)
        if accepted:
            self._events.append(accepted)
            self._events.commit()
            self.counters["events"] += len(accepted)

    def _info(self, mapping: PointMap, value: Any, quality: int, ts: float) -> c104.Information:
        return information(mapping, value, quality, self._time_tag(mapping, ts) if mapping.type in TIME_TAGGED else None)

    def _time_tag(self, mapping: PointMap, ts: float) -> datetime.datetime:
        """The CP56Time2a of ``ts``; a source time the wire cannot carry (a device clock in 1970) is
        replaced by the gateway's clock, logged once per IOA."""
        try:
            return self._wire.to_c104(ts)
        except ValueError as exc:
            if mapping.ioa not in self._bad_clock:
                self._bad_clock.add(mapping.ioa)
                log.warning("104 group %s: IOA %d (%s): %s; sending the gateway's time instead",
                            self.group.name, mapping.ioa, mapping.point, exc)
            return self._wire.to_c104(self._clock())

    def _send(self) -> None:
        server = self._server
        if server is None or not server.has_active_connections:
            self._was_active = False
            self._watch_absence()
            return
        self._absent_since, self._failsafe_fired = None, False
        if not self._was_active:
            self._activated()
        budget = max(1, int(self.group.event_buffer.send_rate * TICK_S))
        events = self._events.peek(budget)
        if events and self._transmit(events):
            self._events.delete_through(events[-1].id)
            self.counters["sent"] += len(events)
        self._set_alarm("buffer_overflow_ioa", self._events.stats()["dropped_overflow"] > 0 and self._events.depth() > 0)

    def _watch_absence(self) -> None:
        """Fire the fail-safe once every master has been gone for ``failsafe.after_s``."""
        failsafe = self.group.failsafe
        if failsafe is None or self._gate is None or self._failsafe_fired:
            return
        now = self._clock()
        self._absent_since = self._absent_since or now
        if now - self._absent_since < failsafe.after_s:
            return
        self._failsafe_fired = True
        log.warning("104 group %s: no master for %.0f s, fail-safe writes %s", self.group.name,
                    now - self._absent_since, ", ".join(f"{w.point}={w.value:g}" for w in failsafe.writes))
        if self._audit is not None:
            self._audit.append(FAILSAFE_EVENT, group=self.group.name, absent_s=round(now - self._absent_since, 3))
        for write in failsafe.writes:
            self._gate.submit(CommandRequest(self.group.name, write.point, write.value, origin=FAILSAFE))

    def _activated(self) -> None:
        self._was_active = True
        if not self._initialised:
            self._initialised = True
            self._server.get_station(self.group.common_address).signal_initialized(cause=c104.Coi.LOCAL_POWER_ON)

    def _transmit(self, events: Sequence[SpooledSample]) -> bool:
        """Send events in order, batched by type; the GI image is restored after each batch."""
        batch: list[tuple[PointMap, SpooledSample]] = []
        for event in events:
            for mapping in self._maps.get(event.point, ()):
                if batch and (batch[0][0].type != mapping.type or len(batch) >= BATCH_MAX
                              or any(m.ioa == mapping.ioa for m, _ in batch)):
                    if not self._transmit_batch(batch):
                        return False
                    batch = []
                batch.append((mapping, event))
        return not batch or self._transmit_batch(batch)

    def _transmit_batch(self, batch: list[tuple[PointMap, SpooledSample]]) -> bool:
        current = {m.ioa: self._points[m.ioa].info for m, _ in batch}
        for mapping, event in batch:
            self._points[mapping.ioa].info = self._info(mapping, event.value, event.quality, event.source_time)
        sent = self._server.transmit_batch(c104.Batch(cause=c104.Cot.SPONTANEOUS,
                                                      points=[self._points[m.ioa] for m, _ in batch]))
        for ioa, info in current.items():
            self._points[ioa].info = info
        return sent

    def stats(self) -> dict[str, Any]:
        """Counters plus buffer depth and whether a master is active."""
        active = bool(self._server and self._server.has_active_connections)
        return {**self.counters, "buffered": self._events.depth(), "master_active": active}


def _by_point(group: MasterGroup) -> dict[str, list[PointMap]]:
    maps: dict[str, list[PointMap]] = {}
    for mapping in group.points:
        maps.setdefault(mapping.point, []).append(mapping)
    for device, ioa in group.comm_status.items():
        status = point_id(device, ONLINE_POINT)
        maps.setdefault(status, []).append(PointMap(point=status, ioa=ioa, type="M_SP_TB_1"))
    return maps
