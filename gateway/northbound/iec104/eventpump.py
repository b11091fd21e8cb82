"""Spontaneous events from a group's persistent buffer to its active master, released on N(R).

The promise (DESIGN convention 10): an event leaves the buffer only after the master has
acknowledged the I-frame that carried it. Sending and releasing are decoupled: the pump sends
ahead of the acknowledgements (up to ``MAX_IN_FLIGHT`` ASDUs, so hat's k window stays full and
a slow S-frame does not slow the stream), remembers for each ASDU the last event it completed,
and deletes through that event once the ASDU's acknowledgement arrived, strictly in order.

When the connection stops or breaks, everything not acknowledged stays in the buffer and goes
again, in order and with its original time tag, to the next master that starts data transfer.
So a master can see an event twice only when it never acknowledged the frame that carried it.
"""

import asyncio
import logging
from collections import deque
from typing import Any, Sequence

from twisted.internet.defer import Deferred

from hat.drivers.iec60870.encodings import iec104 as enc

from gateway.northbound.iec104.asdus import InfoObject, cause, objects_per_asdu, pack
from gateway.northbound.iec104.masterlink import MasterLink
from gateway.northbound.iec104.section import PointMap
from gateway.northbound.iec104.station import StationImage
from gateway.spool import SpooledSample
from gateway.spoolthread import ThreadedSpool

log = logging.getLogger(__name__)

SPONTANEOUS = 3
MAX_IN_FLIGHT = 48  # ASDUs sent but not yet acknowledged (4 x the standard k)


class EventPump:
    """Drains one group's event buffer to whichever master is active, paced, acknowledged."""

    def __init__(self, events: ThreadedSpool, image: StationImage, maps: dict[str, list[PointMap]], per_tick: int) -> None:
        self._events = events
        self._image = image
        self._maps = maps
        self._per_tick = per_tick
        self._link: MasterLink | None = None
        self._sent_through = 0
        self._acked_through = 0  # ids only grow: acknowledged through here, across links
        self._deleted_through = 0
        self._in_flight: deque[tuple[asyncio.Future, int]] = deque()
        self._busy = False  # a tick's reads or deletions are still on the buffer's thread
        self.counters = {"sent": 0, "acknowledged": 0, "resent_after_break": 0}

    def attach(self, link: MasterLink | None) -> None:
        """Send to ``link`` from now on (None: nobody); what is unacknowledged goes again."""
        if link is self._link:
            return
        if self._in_flight:
            self.counters["resent_after_break"] += self._sent_through - self._acked_through
        self._link, self._sent_through = link, self._acked_through
        self._in_flight.clear()

    def tick(self) -> "Deferred[None] | None":
        """Release what was acknowledged, then send the next paced slice. The buffer's reads and
        deletions run on its thread; a tick that finds the previous one still waiting on the disk
        does nothing (returns None), so a slow disk delays events without piling up jobs."""
        if self._busy:
            return None
        self._busy = True
        step = Deferred.fromCoroutine(self._step())
        return step.addBoth(self._idle)

    def _idle(self, result: Any) -> Any:
        self._busy = False
        return result

    async def _step(self) -> None:
        await self._release()
        link, after = self._link, self._sent_through
        if link is None or not link.started or len(self._in_flight) >= MAX_IN_FLIGHT:
            return
        events = await self._events.peek_after(after, self._per_tick)
        if not events or link is not self._link or after != self._sent_through:
            return  # nothing new, or attach() changed the link while the buffer was read
        for asdu, through in self._asdus(events):
            self._in_flight.append((link.send(asdu), through))
        self._sent_through = events[-1].id
        self.counters["sent"] += len(events)

    async def _release(self) -> None:
        """Delete through the last acknowledged event. A deletion that fails (disk full) raises
        ``SpoolError`` and is tried again at the next tick; acknowledged events are never sent again."""
        broken: asyncio.Future | None = None
        while self._in_flight and self._in_flight[0][0].done():
            future, through = self._in_flight.popleft()
            if future.cancelled() or future.exception() is not None:
                broken = future
                break
            self._acked_through = max(self._acked_through, through)
        if broken is not None:
            self._broken(broken)
        acked = self._acked_through
        if acked > self._deleted_through:
            self.counters["acknowledged"] += await self._events.delete_through(acked)
            self._deleted_through = max(self._deleted_through, acked)

    def _broken(self, future: asyncio.Future) -> None:
        reason = "cancelled" if future.cancelled() else future.exception()
        log.info("104 group %s: %d events not acknowledged (%s); they go again after the next STARTDT",
                 self._link.group if self._link else "?", self._sent_through - self._acked_through, reason)
        self.attach(None)

    def _asdus(self, events: Sequence[SpooledSample]) -> list[tuple[enc.ASDU, int]]:
        """ASDUs carrying ``events`` in order, each with the last event id it completes (0: none)."""
        chunks: list[tuple[str, list[InfoObject], int]] = []
        for event in events:
            for mapping in self._maps.get(event.point, ()):
                if mapping.event_type is None:
                    continue
                type_name, obj = self._image.event_object(mapping, event.value, event.quality, event.source_time)
                if not chunks or not _fits(chunks[-1], type_name, obj):
                    chunks.append((type_name, [], 0))
                chunks[-1][1].append(obj)
            if chunks:
                chunks[-1] = (chunks[-1][0], chunks[-1][1], event.id)
        cot = cause(SPONTANEOUS)
        return [(pack(type_name, cot, self._image.common_address, objects)[0], through)
                for type_name, objects, through in chunks]


def _fits(chunk: tuple[str, list[InfoObject], int], type_name: str, obj: InfoObject) -> bool:
    """One ASDU holds one type, as many objects as fit, each IOA once (a master applies the
    objects of one ASDU as one state, so two changes of one IOA must not share it)."""
    chunk_type, objects, _ = chunk
    return (chunk_type == type_name and len(objects) < objects_per_asdu(type_name, obj.time is not None)
            and all(o.ioa != obj.ioa for o in objects))
