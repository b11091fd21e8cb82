"""One IEC 60870-5-104 outstation per master group, on hat-drivers' APCI and ASDU codec.

Why not c104 (the first tranche's library): measured against what a dispatch centre checks,
c104 2.2.1 cannot (research/domain.md section 1.2, and issue "Dispatch can trust it"):
give one IOA an untagged type for general interrogation and a tagged one for events (one type
per IOA); release an event on the master's acknowledgement (``transmit`` returns when lib60870
queued it, and its queue drops the oldest ASDUs when full: 437 of 10,000 events lost under
load); let the application veto or bind a select (selects never reach Python); answer a wrong
cause of transmission with COT 45 (commands executed whatever their COT). hat-drivers
(Apache-2.0, asyncio, on the loop the reactor already runs) does the link layer and the octets;
this package decides every answer. c104 stays for the commissioning master (dispatch-test).

What a group does:

* listens on its port (TLS per IEC 62351-3 when configured), refuses IPs not allowed, masters
  beyond ``max_connections`` and certificates not pinned;
* keeps the process image (``StationImage``) from the PointTable and answers general
  interrogation (QOI 20), counter interrogation (with freeze), read, test and clock sync;
* puts every change beyond the deadband and every quality change into its persistent event
  buffer, and ``EventPump`` sends it to the active master (the one that started data transfer
  last), releasing events on N(R);
* judges commands with ``CommandHandler``; raises the comm-status, buffer-overflow and clock
  alarms as single points (untagged in GI, tagged as events); keeps the fail-safe values applied
  while every master has been gone ``failsafe.after_s`` (``FailSafe``).
"""

import logging
import time
from typing import Any, Callable, Iterable

from hat.drivers import net
from hat.drivers.iec60870 import apci
from hat.drivers.iec60870.encodings import iec104 as enc
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall

from gateway.aio import as_deferred, await_deferred
from gateway.commands.audit import FAILSAFE as FAILSAFE_EVENT, AuditLog
from gateway.commands.gate import CommandGate
from gateway.errors import GatewayError
from gateway.iec104.wiretime import WireClock
from gateway.model import ONLINE_POINT, Quality, Sample, point_id
from gateway.northbound.iec104.commandpoints import CommandHandler
from gateway.northbound.iec104.eventpump import EventPump
from gateway.northbound.iec104.failsafe import FailSafe
from gateway.northbound.iec104.masterlink import SEND_QUEUE, MasterLink
from gateway.northbound.iec104.section import ALARM_POINTS, MasterGroup, PointMap
from gateway.northbound.iec104.spontaneous import SpontaneousFilter
from gateway.northbound.iec104.station import StationImage
from gateway.northbound.iec104.systemcommands import SystemCommands
from gateway.northbound.iec104.tls import REFUSALS, pinned_certificates, server_context
from gateway.points import PointTable
from gateway.ratelog import RateLimitedLog
from gateway.spoolthread import ThreadedSpool

log = logging.getLogger(__name__)
PEER_LOG = RateLimitedLog(log)  # what a master's traffic makes us log: a line per group, host and kind per minute

TICK_S = 0.05
HEADER = 6  # octets of ASDU header: type, VSQ, COT (2), common address (2)
BUFFER_OVERFLOW, CLOCK_ALARM, FAILSAFE_ALARM = (ALARM_POINTS[k] for k in ("buffer_overflow_ioa", "clock_alarm_ioa",
                                                                        "failsafe_alarm_ioa"))
_COMMAND_TYPES = frozenset({"C_SC_NA", "C_DC_NA", "C_SE_NA", "C_SE_NB", "C_SE_NC", "C_SC_TA", "C_DC_TA",
                            "C_SE_TA", "C_SE_TB", "C_SE_TC"})


class ListenError(GatewayError):
    """A master group's port cannot be bound."""


class GroupOutstation:
    """The outstation of one master group: listener, image, event buffer, commands."""

    def __init__(self, group: MasterGroup, table: PointTable, events: ThreadedSpool, reactor: Any,
                 clock: Callable[[], float] = time.time, gate: CommandGate | None = None,
                 audit: AuditLog | None = None) -> None:
        self.group = group
        self._gate = gate
        self._audit = audit
        self._table = table
        self._events = events
        self._clock = clock
        self._maps = _by_point(group)
        self._monitored = {m.ioa: m for maps in self._maps.values() for m in maps}
        wire = WireClock(group.wire_time_zone)
        self._image = StationImage(group.common_address, list(self._monitored.values()), wire, clock, group.name)
        self._encoder = enc.Encoder()
        self._filter = SpontaneousFilter()
        self._pump = EventPump(events, self._image, self._maps, max(1, int(group.event_buffer.send_rate * TICK_S)))
        self._commands = CommandHandler(group, gate, audit, self._image, self._monitored, wire, clock)
        self._system = SystemCommands(group, self._image, wire, clock, self._clock_synced)
        self._links: list[MasterLink] = []
        self._server: net.Server | None = None
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = reactor
        self._unsubscribe: Callable[[], None] | None = None
        self._initialised = False
        self._stopped = False
        self._failsafe = None if gate is None else FailSafe(group, gate.submit, clock, self._failsafe_fired,
                                  lambda on: self._set_alarm(FAILSAFE_ALARM, on))
        self._pinned = pinned_certificates(group.tls) if group.tls else None
        for name in ALARM_POINTS.values():  # alarms start good and off, not IV like device points
            for mapping in self._maps.get(point_id(group.name, name), ()):
                self._image.update(mapping, False, 0, clock())
        self._failing: set[str] = set()
        self.counters = {"events": 0, "refused_masters": 0, "clock_syncs": 0, "malformed": 0, "before_startdt": 0,
                         "errors": 0}

    def start(self) -> Any:
        """Follow the PointTable, listen; fails with ``ListenError`` when the port cannot be bound (a
        gateway that cannot serve dispatch must not look as if it did)."""
        self._unsubscribe = self._table.subscribe(self._on_samples)
        self._on_samples(list(self._table.snapshot().values()))
        return as_deferred(self._listen())

    async def _listen(self) -> None:
        group, timers = self.group, self.group.timers
        try:
            self._server = await apci.listen(
                self._on_connection, net.TcpAddress(group.bind, group.port), response_timeout=timers.t1,
                supervisory_timeout=timers.t2, test_timeout=timers.t3, send_window_size=timers.k,
                receive_window_size=timers.w, send_queue_size=SEND_QUEUE,
                ssl=server_context(group.name, group.tls) if group.tls else None)
        except OSError as exc:
            raise ListenError(f"104 group {group.name}: cannot listen on {group.bind}:{group.port} "
                              f"({exc.strerror or exc})") from None
        self._ticker.start(TICK_S, now=False)
        log.info("104 group %s: listening on %s:%d, %d points, %d commands, common address %d", group.name,
                 group.bind, group.port, len(self._monitored), len(group.commands), group.common_address)

    def stop(self) -> Any:
        """Stop sending and listening; events not acknowledged stay in the buffer."""
        self._pump.attach(None)
        self._stopped = True
        if self._ticker.running:
            self._ticker.stop()
        if self._unsubscribe:
            self._unsubscribe()
        return as_deferred(self._close())

    async def _close(self) -> None:
        if self._server is not None:
            await self._server.async_close()
        for link in list(self._links):
            await link.close()
        await await_deferred(self._events.close())

    # -- connections -------------------------------------------------------------------------

    async def _on_connection(self, connection: apci.Connection) -> None:
        link = MasterLink(connection, self._encoder, self.group.name)
        refusal = self._refusal(link)
        if refusal:
            self.counters["refused_masters"] += 1
            REFUSALS.report(self.group.name, f"master {link.peer}", refusal, host=link.host)
            await link.close()
            return
        self._links.append(link)
        link.on_started(lambda started: self._started(link, started))
        log.info("104 group %s: master %s connected", self.group.name, link.peer)
        try:
            await link.receive_each(self._on_asdu)
        finally:
            self._links.remove(link)
            self._commands.forget(link)
            self._choose_active()
            cause = link.close_cause()
            if cause is None:
                log.info("104 group %s: master %s disconnected", self.group.name, link.peer)
            else:  # hat closed it: a master sending garbage reconnects and does it again
                PEER_LOG.warning((self.group.name, link.host, "closed"), "104 group %s: master %s disconnected: %s",
                                 self.group.name, link.peer, cause)

    def _refusal(self, link: MasterLink) -> str | None:
        if link.host not in self.group.allowed_masters:
            return "not in allowed_masters"
        if len(self._links) >= self.group.max_connections:
            return f"max_connections ({self.group.max_connections}) reached"
        if self._pinned is not None and self._pinned and link.peer_certificate() not in self._pinned:
            return "its certificate is not in tls.pinned_masters"
        return None

    def _started(self, link: MasterLink, started: bool) -> None:
        log.info("104 group %s: master %s %s data transfer", self.group.name, link.peer,
                 "started" if started else "stopped")
        if started and link in self._links:
            self._links.remove(link)
            self._links.append(link)  # the last to start is the active one
            if not self._initialised:
                self._initialised = True
                link.send(enc.ASDU(type=enc.AsduType.M_EI_NA, cause=enc.Cause(enc.CauseType.INITIALIZED, False, False, 0),
                                   address=self.group.common_address,
                                   ios=[enc.IO(address=0, elements=[enc.IoElement_M_EI_NA(False, 0)], time=None)]))
        self._choose_active()

    def _choose_active(self) -> None:
        if self._stopped:
            return
        started = [link for link in self._links if link.started]
        self._pump.attach(started[-1] if started else None)

    # -- incoming ASDUs ----------------------------------------------------------------------

    def _on_asdu(self, link: MasterLink, raw: bytes) -> None:
        if not (link.received_started and link.started):
            # received before STARTDT (also when STARTDT followed in the same segment: hat has handled it by
            # now), or read after a STOPDT: no answer could go out, so nothing is done
            self.counters["before_startdt"] += 1
            PEER_LOG.warning((self.group.name, link.host, "not started"),
                             "104 group %s: master %s sent an ASDU while data transfer was not started, ignored: %s",
                             self.group.name, link.peer, raw.hex())
            return
        if len(raw) < HEADER and raw:
            self._malformed(link, raw)
            return
        try:
            asdu = self._decode(raw)
        except enc.AsduTypeError:
            self._system.unknown_type(link, raw)
            return
        if asdu is None:
            self._malformed(link, raw)
        elif asdu.type.name in _COMMAND_TYPES:
            self._commands.handle(link, asdu, raw)
        else:
            self._system.handle(link, asdu, raw)

    def _decode(self, raw: bytes) -> enc.ASDU | None:
        """The ASDU, or None when its octets do not have the length of one (truncated, trailing octets,
        no object, several objects in a command): hat decodes short input leniently, so the frame is
        encoded again and must come out as long. Field values (an all-0xFF time) are judged later,
        by the command that reads them."""
        try:
            asdu, rest = self._encoder.decode_asdu(raw)
            same = not rest and len(self._encoder.encode_asdu(asdu)) == len(raw)
        except enc.AsduTypeError:
            raise
        except Exception:  # noqa: BLE001 - whatever hat makes of garbage, it is garbage
            return None
        if not same or not asdu.ios or not asdu.ios[0].elements:
            return None
        if len(asdu.ios) > 1 and asdu.type.name in _COMMAND_TYPES:
            return None
        return asdu

    def _malformed(self, link: MasterLink, raw: bytes) -> None:
        self.counters["malformed"] += 1
        PEER_LOG.warning((self.group.name, link.host, "malformed"),
                         "104 group %s: master %s sent a malformed ASDU, ignored: %s", self.group.name, link.peer,
                         raw.hex())

    # -- PointTable side ---------------------------------------------------------------------

    def _on_samples(self, samples: Iterable[Sample]) -> None:
        maps, accepted = self._maps, []
        for sample in samples:
            report = False
            for mapping in maps.get(sample.point, ()):
                self._image.update(mapping, sample.value, int(sample.quality), sample.source_time)
                if mapping.event_type is not None:
                    report = self._filter.accept(mapping, sample) or report
            if report:
                accepted.append(sample)
        if accepted:
            self._events.append(accepted)
            self.counters["events"] += len(accepted)
            self._guarded("event buffer", self._events.commit)

    def _set_alarm(self, name: str, on: bool) -> None:
        point = point_id(self.group.name, name)
        entry = self._maps.get(point)
        if entry and self._image.get(entry[0].ioa).value != on:
            now = self._clock()
            self._on_samples([Sample(point, on, Quality.GOOD, now, now)])

    def _clock_synced(self, peer: str, offset: float | None, problem: str | None) -> None:
        self.counters["clock_syncs"] += 1
        self._set_alarm(CLOCK_ALARM, problem is not None or abs(offset or 0) > self.group.clock_sync.alarm_offset_s)

    # -- every tick --------------------------------------------------------------------------

    def _tick(self) -> None:
        """Each part on its own: a failing event buffer (disk full) neither stops the sender's
        LoopingCall nor the fail-safe watchdog."""
        self._guarded("event buffer", self._events.commit)
        self._guarded("event sender", self._pump.tick)
        self._guarded("buffer alarm", self._overflow_alarm)
        self._guarded("fail-safe watchdog", self._watch)
        PEER_LOG.flush_due()  # a flood that stopped gets its count reported within a tick of its window

    def _guarded(self, part: str, step: Callable[[], Any]) -> None:
        """Run ``step`` (its Deferred, when it returns one, on the buffer's thread); log its failure
        once per episode (and its recovery), count it."""
        try:
            result = step()
        except Exception as exc:  # noqa: BLE001 - the tick must go on; the cause is logged
            self._part_failed(part, exc)
            return
        if isinstance(result, Deferred):
            result.addCallbacks(lambda _: self._part_works(part), lambda failure: self._part_failed(part, failure.value))
        else:
            self._part_works(part)

    def _part_failed(self, part: str, exc: BaseException) -> None:
        self.counters["errors"] += 1
        if part not in self._failing:
            self._failing.add(part)
            log.error("104 group %s: %s failed: %s; retried every %.2f s", self.group.name, part, exc, TICK_S)

    def _part_works(self, part: str) -> None:
        if part in self._failing:
            self._failing.discard(part)
            log.info("104 group %s: %s works again", self.group.name, part)

    def _overflow_alarm(self) -> None:
        stats = self._events.stats()
        self._set_alarm(BUFFER_OVERFLOW, stats["dropped_overflow"] > 0 and stats["depth"] > 0)

    def _watch(self) -> None:
        if self._failsafe is not None:  # the site builds a gate whenever a group has a fail-safe
            self._failsafe.tick(any(link.started for link in self._links))

    def _failsafe_fired(self, absent_s: float) -> None:
        if self._audit is not None:
            self._audit.append(FAILSAFE_EVENT, group=self.group.name, absent_s=round(absent_s, 3))

    @property
    def listening(self) -> bool:
        """The group's port is bound and masters can connect."""
        return self._server is not None and self._server.is_open

    def stats(self) -> dict[str, Any]:
        """Counters plus buffer depth, masters connected and whether one is active."""
        return {**self.counters, **self._pump.counters, "buffered": self._events.depth(),
                "failsafe_pending": self._failsafe.pending if self._failsafe else None,
                "masters": len(self._links), "master_active": any(link.started for link in self._links)}


def _by_point(group: MasterGroup) -> dict[str, list[PointMap]]:
    """Device point -> its mappings, with the comm-status and alarm points of the group."""
    maps: dict[str, list[PointMap]] = {}
    for mapping in group.points:
        maps.setdefault(mapping.point, []).append(mapping)
    internal = {point_id(device, ONLINE_POINT): ioa for device, ioa in group.comm_status.items()}
    for key, name in ALARM_POINTS.items():
        ioa = getattr(group, key)
        if ioa:
            internal[point_id(group.name, name)] = ioa
    for point, ioa in internal.items():
        maps.setdefault(point, []).append(PointMap(point=point, ioa=ioa, type="M_SP_TB_1"))
    return maps

