"""IEC 104 system commands of a master group: interrogation, counter interrogation, read, test, clock sync.

And the answer to everything else a master may send: a type this outstation does not serve in
the control direction (monitor types, reset process, parameters, files) gets the negative
mirror with COT 44; a wrong cause COT 45; a wrong common address COT 46 (65535, the broadcast
address, is accepted for interrogation, counter interrogation and clock sync). A system command
with the test bit set is confirmed negatively and not carried out.

* C_IC_NA_1 QOI 20: ACT_CON, every GI point untagged with COT 20, ACT_TERM. Group interrogation
  (QOI 21..36) is confirmed negatively: no groups are configured.
* C_CI_NA_1 RQT 5: FRZ 0 (read) answers every counter with COT 37 (the frozen copy when one was
  taken), FRZ 1 (freeze) takes that copy; each as ACT_CON, answers, ACT_TERM. Counter groups 1..4
  and FRZ 2/3 (reset) are confirmed negatively: a gateway cannot reset the meters it reads.
* C_RD_NA_1 (COT 5): the IOA's current value, untagged, COT 5; an unknown IOA: COT 47.
* C_TS_TA_1: mirrored as ACT_CON.
* C_CS_NA_1: a time with the IV bit or one that is not a date is confirmed negatively, logged
  with its octets, raises the clock alarm and never touches the OS clock. A valid time is
  confirmed, the offset logged (alarm past ``alarm_offset_s``), and the OS clock stepped only
  when ``step_os_clock`` is set.
"""

import logging
import time
from typing import Callable

from hat.drivers.iec60870.encodings import iec104 as enc

from gateway.iec104.wiretime import WireClock
from gateway.northbound.iec104.asdus import cot_of, from_cp56
from gateway.northbound.iec104.commandpoints import mirror
from gateway.northbound.iec104.controlrules import (ACTIVATION, ACT_CON, ACT_TERM, DEACTIVATION, DEACT_CON, UNKNOWN_CA,
                                                    UNKNOWN_CAUSE, UNKNOWN_IOA, UNKNOWN_TYPE)
from gateway.northbound.iec104.masterlink import MasterLink
from gateway.northbound.iec104.section import MasterGroup
from gateway.northbound.iec104.station import StationImage

log = logging.getLogger(__name__)

REQUEST = 5
BROADCAST = 0xFFFF
STATION, GENERAL_COUNTERS = 20, 5
ClockSynced = Callable[[str, "float | None", "str | None"], None]  # peer, offset, problem
_BROADCAST_OK = frozenset({"C_IC_NA", "C_CI_NA", "C_CS_NA"})


class SystemCommands:
    """Answers one group's non-command control ASDUs."""

    def __init__(self, group: MasterGroup, image: StationImage, wire: WireClock, clock: Callable[[], float],
                 clock_synced: ClockSynced) -> None:
        self._group = group
        self._image = image
        self._wire = wire
        self._clock = clock
        self._clock_synced = clock_synced
        self._handlers = {"C_IC_NA": self._interrogation, "C_CI_NA": self._counters, "C_RD_NA": self._read,
                          "C_TS_TA": self._test, "C_CS_NA": self._clock_sync}

    def unknown_type(self, link: MasterLink, raw: bytes) -> None:
        """COT 44, negative: a type this outstation does not serve in the control direction."""
        log.warning("104 group %s: master %s sent type %d, not served: COT 44", self._group.name, link.peer, raw[0])
        link.send(mirror(raw, UNKNOWN_TYPE, negative=True))

    def handle(self, link: MasterLink, asdu: enc.ASDU, raw: bytes) -> None:
        """Check address, cause and flags, then answer."""
        name = asdu.type.name
        handler = self._handlers.get(name)
        if handler is None:
            self.unknown_type(link, raw)
            return
        expected = REQUEST if name == "C_RD_NA" else ACTIVATION
        cot = cot_of(asdu)
        if asdu.address != self._group.common_address and not (asdu.address == BROADCAST and name in _BROADCAST_OK):
            self._refuse(link, raw, UNKNOWN_CA, f"unknown common address {asdu.address}")
        elif asdu.cause.is_negative_confirm or cot not in (expected, DEACTIVATION) or (
                cot == DEACTIVATION and name != "C_IC_NA"):
            self._refuse(link, raw, UNKNOWN_CAUSE, f"cause of transmission {cot} for {name}_1")
        elif cot == DEACTIVATION:
            self._refuse(link, raw, DEACT_CON, "interrogation already answered: nothing to deactivate")
        elif asdu.cause.is_test:
            self._refuse(link, raw, ACT_CON, "test bit set: not carried out")
        else:
            handler(link, asdu, raw)

    def _refuse(self, link: MasterLink, raw: bytes, cot: int, reason: str) -> None:
        log.warning("104 group %s: master %s: %s (answered with COT %d, negative)", self._group.name, link.peer,
                    reason, cot)
        link.send(mirror(raw, cot, negative=True))

    def _interrogation(self, link: MasterLink, asdu: enc.ASDU, raw: bytes) -> None:
        qoi = asdu.ios[0].elements[0].qualifier
        if qoi != STATION:
            self._refuse(link, raw, ACT_CON, f"interrogation QOI {qoi}: only station interrogation (20) is served")
            return
        self._answer(link, raw, self._image.general_interrogation(asdu.cause.originator_address))

    def _counters(self, link: MasterLink, asdu: enc.ASDU, raw: bytes) -> None:
        qcc = asdu.ios[0].elements[0]
        freeze = qcc.freeze.value if hasattr(qcc.freeze, "value") else int(qcc.freeze)
        if qcc.request != GENERAL_COUNTERS or freeze > 1:
            self._refuse(link, raw, ACT_CON, f"counter interrogation RQT {qcc.request} FRZ {freeze}: only RQT 5 "
                                             f"with FRZ 0 (read) or 1 (freeze) is served")
        elif freeze == 1:
            self._image.freeze()
            self._answer(link, raw, [])
        else:
            self._answer(link, raw, self._image.counters(0, asdu.cause.originator_address))

    def _read(self, link: MasterLink, asdu: enc.ASDU, raw: bytes) -> None:
        answer = self._image.read(asdu.ios[0].address, asdu.cause.originator_address)
        if answer is None:
            self._refuse(link, raw, UNKNOWN_IOA, f"read of IOA {asdu.ios[0].address}, not served")
        else:
            link.send(answer)

    def _test(self, link: MasterLink, asdu: enc.ASDU, raw: bytes) -> None:
        link.send(mirror(raw, ACT_CON, negative=False))

    def _clock_sync(self, link: MasterLink, asdu: enc.ASDU, raw: bytes) -> None:
        local = self._clock()
        try:
            master = from_cp56(self._wire, asdu.ios[0].elements[0].time)
        except ValueError as exc:
            log.error("104 group %s: clock sync from %s refused: %s (octets %s); the OS clock is not touched",
                      self._group.name, link.peer, exc, raw[-7:].hex())
            self._clock_synced(link.peer, None, str(exc))
            link.send(mirror(raw, ACT_CON, negative=True))
            return
        offset = master - local
        alarm = abs(offset) > self._group.clock_sync.alarm_offset_s
        (log.warning if alarm else log.info)("104 group %s: clock sync from %s, master - gateway = %+.3f s",
                                             self._group.name, link.peer, offset)
        self._clock_synced(link.peer, offset, None)
        link.send(mirror(raw, ACT_CON, negative=False))
        if self._group.clock_sync.step_os_clock and abs(offset) > 0.001:
            _step_os_clock(self._group.name, offset)

    def _answer(self, link: MasterLink, raw: bytes, answers: list[enc.ASDU]) -> None:
        link.send(mirror(raw, ACT_CON, negative=False))
        for answer in answers:
            link.send(answer)
        link.send(mirror(raw, ACT_TERM, negative=False))


def _step_os_clock(group: str, offset: float) -> None:
    try:
        time.clock_settime(time.CLOCK_REALTIME, time.time() + offset)
        log.warning("104 group %s: OS clock stepped by %+.3f s", group, offset)
    except OSError as exc:
        log.error("104 group %s: cannot step the OS clock: %s", group, exc)

