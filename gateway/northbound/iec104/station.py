"""The process image of one master group and the answers built from it.

Every IOA keeps the latest value, quality and source time of its point (IV+NT until the first
sample). From it come the answers to general interrogation (COT 20, untagged types only, as the
101 station-interrogation table allows), counter interrogation (COT 37..41, with freeze), read
(COT 5) and the spontaneous objects of the event buffer (the configured, possibly tagged type).
Pure apart from the clock: values in, ASDUs out.
"""

import logging
from dataclasses import dataclass
from typing import Callable

from hat.drivers.iec60870.encodings import iec104 as enc

from gateway.iec104.types import TIME_TAGGED

from gateway.iec104.wiretime import WireClock
from gateway.model import Quality, Value
from gateway.northbound.iec104.asdus import InfoObject, cause, cp56, element, pack, runs
from gateway.northbound.iec104.section import PointMap

log = logging.getLogger(__name__)

START_QUALITY = int(Quality.IV | Quality.NT)
INTERROGATED_STATION, INTERROGATED_COUNTER, REQUEST = 20, 37, 5


@dataclass(slots=True)
class Entry:
    """What one IOA shows now."""

    mapping: PointMap
    value: Value
    quality: int
    time: float


class StationImage:
    """IOA -> current information, and the interrogation answers of one common address."""

    def __init__(self, common_address: int, maps: list[PointMap], wire: WireClock, clock: Callable[[], float],
                 group: str) -> None:
        self.common_address = common_address
        self._wire = wire
        self._clock = clock
        self._group = group
        now = clock()
        self._entries = {m.ioa: Entry(m, None, START_QUALITY, now) for m in sorted(maps, key=lambda m: m.ioa)}
        self._frozen: dict[int, Entry] | None = None
        self._bad_clock: set[int] = set()

    def update(self, mapping: PointMap, value: Value, quality: int, ts: float) -> None:
        """The IOA of ``mapping`` now shows this."""
        entry = self._entries[mapping.ioa]
        entry.value, entry.quality, entry.time = value, quality, ts

    def get(self, ioa: int) -> Entry | None:
        """The current information of ``ioa``."""
        return self._entries.get(ioa)

    def general_interrogation(self, originator: int) -> list[enc.ASDU]:
        """Every GI point in its untagged type, COT 20, grouped by type in IOA order."""
        objects = [(e.mapping.gi_type, self._object(e, e.mapping.gi_type)) for e in self._entries.values()
                   if e.mapping.gi_type is not None]
        return self._pack(objects, cause(INTERROGATED_STATION, originator=originator))

    def counters(self, request: int, originator: int) -> list[enc.ASDU]:
        """Every counter, COT 37 + group (0 = general): the frozen copy when one was taken."""
        source = self._frozen if self._frozen is not None else self._entries
        objects = [(e.mapping.counter_type, self._object(e, e.mapping.counter_type)) for e in source.values()
                   if e.mapping.counter_type is not None]
        return self._pack(objects, cause(INTERROGATED_COUNTER + request, originator=originator))

    def freeze(self) -> None:
        """Keep a copy of every counter as it is now: what the next counter read answers."""
        self._frozen = {ioa: Entry(e.mapping, e.value, e.quality, e.time) for ioa, e in self._entries.items()
                        if e.mapping.counter_type is not None}

    def read(self, ioa: int, originator: int) -> enc.ASDU | None:
        """The answer to C_RD_NA_1 (COT 5) in the untagged type; None for an IOA not served."""
        entry = self._entries.get(ioa)
        if entry is None:
            return None
        type_name = entry.mapping.gi_type or entry.mapping.counter_type or entry.mapping.type
        return self._pack([(type_name, self._object(entry, type_name))], cause(REQUEST, originator=originator))[0]

    def event_object(self, mapping: PointMap, value: Value, quality: int, ts: float) -> tuple[str, InfoObject]:
        """The spontaneous object of a change: the configured type, time-tagged when it is tagged."""
        type_name = mapping.event_type or mapping.type
        return type_name, self._object(Entry(mapping, value, quality, ts), type_name)

    def _object(self, entry: Entry, type_name: str) -> InfoObject:
        tag = self._time_tag(entry) if type_name in TIME_TAGGED else None
        return InfoObject(entry.mapping.ioa, element(type_name, entry.mapping, entry.value, entry.quality), tag)

    def _pack(self, objects: list[tuple[str, InfoObject]], cot: enc.Cause) -> list[enc.ASDU]:
        """One run per type (IOA order inside), so an interrogation takes as few ASDUs as it can."""
        by_type = sorted(objects, key=lambda o: o[0])
        return [asdu for type_name, run in runs(by_type) for asdu in pack(type_name, cot, self.common_address, run)]

    def _time_tag(self, entry: Entry) -> enc.Time:
        """CP56Time2a of the source time; a time the wire cannot carry (a device clock in 1970) is
        replaced by the gateway's clock, logged once per IOA."""
        try:
            return cp56(self._wire, entry.time)
        except ValueError as exc:
            if entry.mapping.ioa not in self._bad_clock:
                self._bad_clock.add(entry.mapping.ioa)
                log.warning("104 group %s: IOA %d (%s): %s; sending the gateway's time instead", self._group,
                            entry.mapping.ioa, entry.mapping.point, exc)
            return cp56(self._wire, self._clock())
