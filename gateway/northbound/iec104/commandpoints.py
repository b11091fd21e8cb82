"""IEC 104 command frames of a master group: the standard's rules, then the CommandGate, then the replies.

A C_SC/C_DC/C_SE frame is first judged by ``ControlRules`` (cause of transmission, P/N and test
bits, common address, IOA and type, select-before-operate binding). A refusal there is answered
with the negative mirror the standard names and audited; the device is never touched. A select
runs the gate's checks without writing. An execute goes to the gate, which writes, reads back
and confirms within its deadline (kept under t1). What goes on the wire, in this order:

* execute confirmed: ACT_CON (COT 7, positive, S/E = 0), the related monitored IOA with COT 11
  carrying the value the device read back after the write, then ACT_TERM (COT 10, S/E = 0);
* execute refused or failed: ACT_CON negative (P/N = 1), nothing else;
* select: ACT_CON with S/E = 1, positive or negative; deselect: COT 9, positive or negative.

Every reply mirrors the command's type, common address, IOA, originator address and element, so
S/E, value and qualifier are those the master sent. Every command frame in and out is written
to the audit log with its bytes.
"""

import asyncio
import logging
import time
from typing import Any, Callable

from hat.drivers.iec60870.encodings import iec104 as enc

from gateway.aio import await_deferred
from gateway.commands.audit import DESELECTED, AuditLog
from gateway.commands.gate import CommandGate, CommandRequest
from gateway.iec104.wiretime import WireClock
from gateway.northbound.iec104.asdus import cause, cot_of, from_cp56, pack
from gateway.northbound.iec104.controlrules import ACT_CON, ACT_TERM, Action, ControlFrame, ControlRules, Verdict
from gateway.northbound.iec104.masterlink import MasterLink
from gateway.northbound.iec104.section import CommandMap, MasterGroup, PointMap
from gateway.northbound.iec104.station import StationImage

log = logging.getLogger(__name__)

FRAME = "frame"
RETURN_INFORMATION = 11
_TIME_TAGGED = ("TA_1", "TB_1", "TC_1")


def mirror(raw: bytes, cot: int, negative: bool) -> bytes:
    """The reply to ``raw``: the same ASDU with another cause, P/N set when refusing, T kept."""
    return raw[:2] + bytes([(raw[2] & 0x80) | (0x40 if negative else 0) | cot]) + raw[3:]


def command_value(mapping: CommandMap, element: Any) -> float:
    """The engineering value a command element carries; ValueError for a state that commands nothing."""
    family = mapping.type[:4]
    if family == "C_SC":
        return mapping.on_value if element.value == enc.SingleValue.ON else mapping.off_value
    if family == "C_DC":
        if element.value not in (enc.DoubleValue.ON, enc.DoubleValue.OFF):
            raise ValueError(f"double command state {element.value.value} is not permitted (only 1 OFF, 2 ON)")
        return mapping.on_value if element.value == enc.DoubleValue.ON else mapping.off_value
    if mapping.type in ("C_SE_NA_1", "C_SE_TA_1"):
        return float(element.value.value) * (mapping.full_scale or 1.0)
    if mapping.type in ("C_SE_NB_1", "C_SE_TB_1"):
        return int(element.value.value) / mapping.multiplier
    return float(element.value.value)


def qualifier(type_name: str, raw: bytes) -> int:
    """QU of an SCO/DCO or QL of a QOS, from the qualifier octet (the last, or the one before the
    7-octet CP56Time2a of time-tagged types): hat decodes QU but not QL."""
    octet = raw[-8] if type_name.endswith(_TIME_TAGGED) else raw[-1]
    return (octet & 0x7C) >> 2 if type_name[:4] in ("C_SC", "C_DC") else octet & 0x7F


class CommandHandler:
    """The command IOAs of one group, wired to the rules, the gate and the audit log."""

    def __init__(self, group: MasterGroup, gate: CommandGate | None, audit: AuditLog | None, image: StationImage,
                 monitored: dict[int, PointMap], wire: WireClock, clock: Callable[[], float] = time.time) -> None:
        self._group = group
        self._gate = gate
        self._audit = audit
        self._image = image
        self._monitored = monitored
        self._wire = wire
        self._clock = clock
        self._maps = {c.ioa: c for c in group.commands}
        self._rules = ControlRules(group.common_address, {c.ioa: (c.type, c.mode) for c in group.commands},
                                   group.select_timeout_s)
        self._running: set[asyncio.Task] = set()

    def forget(self, link: MasterLink) -> None:
        """A closed connection's selections end with it."""
        self._rules.forget_connection(link.id)

    def handle(self, link: MasterLink, asdu: enc.ASDU, raw: bytes) -> None:
        """Judge one command ASDU and answer it; an execute runs as its own task."""
        self._frame(link, "in", raw)
        io = asdu.ios[0]
        type_name = f"{asdu.type.name}_1"
        element = io.elements[0]
        frame = ControlFrame(link.id, type_name, cot_of(asdu), asdu.cause.is_negative_confirm, asdu.cause.is_test,
                             asdu.address, io.address, element.value, bool(element.select),
                             qualifier(type_name, raw), asdu.cause.originator_address)
        verdict = self._rules.judge(frame, self._clock())
        mapping = self._maps.get(frame.ioa)
        usable = mapping is not None and mapping.type == type_name
        request = self._request(frame, mapping, element, io.time) if usable else None
        if isinstance(request, str) and verdict.action in (Action.SELECT, Action.EXECUTE):
            verdict = Verdict(Action.REFUSE, ACT_CON, request)
        if verdict.action is Action.REFUSE:
            self._refuse(link, raw, frame, verdict, request)
        elif verdict.action is Action.DESELECT:
            self._record(DESELECTED, point=mapping.point if mapping else None, ioa=frame.ioa, connection=link.peer)
            self._reply(link, raw, verdict.reply_cot, negative=False)
        elif verdict.action is Action.SELECT:
            self._select(link, raw, frame, request)
        else:
            task = asyncio.ensure_future(self._execute(link, raw, request, mapping))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _request(self, frame: ControlFrame, mapping: CommandMap, element: Any, tag: Any) -> CommandRequest | str:
        """The gate's request, or the reason the frame cannot become one (a state or time that is
        not a command)."""
        try:
            value = command_value(mapping, element)
            issued = from_cp56(self._wire, tag) if tag is not None else None
        except (ValueError, OverflowError, TypeError, AttributeError) as exc:  # NaN to int, another type's element
            return f"the command's value or time tag cannot be read: {exc}"
        return CommandRequest(self._group.name, mapping.point, value, frame.ioa, frame.type, issued, origin="iec104")

    def _refuse(self, link: MasterLink, raw: bytes, frame: ControlFrame, verdict: Verdict,
                request: CommandRequest | str | None) -> None:
        details = {"cot": frame.cot, "test": frame.test, "negative": frame.negative, "select": frame.select,
                   "connection": link.peer}
        if isinstance(request, CommandRequest) and self._gate is not None:
            self._gate.refuse(request, verdict.reason, **details)
        else:
            self._record("refused", ioa=frame.ioa, type=frame.type, reason=verdict.reason, **details)
            log.warning("104 group %s: command at IOA %d from %s refused: %s", self._group.name, frame.ioa,
                        link.peer, verdict.reason)
        self._reply(link, raw, verdict.reply_cot, negative=True)

    def _select(self, link: MasterLink, raw: bytes, frame: ControlFrame, request: CommandRequest | None) -> None:
        outcome = self._gate.select(request) if self._gate is not None and request is not None else None
        if outcome:
            self._rules.selected(frame, self._clock())
        self._reply(link, raw, ACT_CON, negative=not outcome)

    async def _execute(self, link: MasterLink, raw: bytes, request: CommandRequest, mapping: CommandMap) -> None:
        outcome = await await_deferred(self._gate.submit(request)) if self._gate is not None else None
        self._reply(link, raw, ACT_CON, negative=not outcome)
        if not outcome:
            return
        related = self._monitored.get(mapping.related_ioa) if mapping.related_ioa else None
        if related is not None:
            self._return_information(link, related, mapping, outcome.readback)
        self._reply(link, raw, ACT_TERM, negative=False)

    def _return_information(self, link: MasterLink, related: PointMap, mapping: CommandMap, readback: Any) -> None:
        """COT 11 of the related IOA: the read-back value when it shows the commanded point, else
        what the image shows now (after the device confirmed)."""
        if related.point == mapping.point:
            value, quality = readback, 0
        else:
            entry = self._image.get(related.ioa)
            value, quality = (entry.value, entry.quality) if entry else (None, 0)
        type_name, obj = self._image.event_object(related, value, quality, self._clock())
        for asdu in pack(type_name, cause(RETURN_INFORMATION), self._group.common_address, [obj]):
            link.send(asdu)

    def _reply(self, link: MasterLink, raw: bytes, cot: int, negative: bool) -> None:
        data = mirror(raw, cot, negative)
        link.send(data)
        self._frame(link, "out", data)

    def _frame(self, link: MasterLink, direction: str, raw: bytes) -> None:
        type_name = f"{enc.AsduType(raw[0]).name}_1"
        self._record(FRAME, direction=direction, connection=link.peer, type=type_name, cot=_cot_name(raw[2] & 0x3F),
                     negative=bool(raw[2] & 0x40), test=bool(raw[2] & 0x80),
                     select=bool((raw[-8] if type_name.endswith(_TIME_TAGGED) else raw[-1]) & 0x80),
                     ioa=int.from_bytes(raw[6:9], "little"), bytes=raw.hex())

    def _record(self, event: str, **fields: Any) -> None:
        if self._audit is not None:
            self._audit.append(event, group=self._group.name, **fields)


_COT_NAMES = {6: "ACTIVATION", 7: "ACTIVATION_CON", 8: "DEACTIVATION", 9: "DEACTIVATION_CON",
              10: "ACTIVATION_TERMINATION", 44: "UNKNOWN_TYPE", 45: "UNKNOWN_CAUSE", 46: "UNKNOWN_CA", 47: "UNKNOWN_IOA"}


def _cot_name(cot: int) -> str:
    """The audit log's name of a cause (the names audit files have always carried), else the number."""
    return _COT_NAMES.get(cot, str(cot))

