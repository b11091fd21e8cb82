"""IEC 104 command points of a master group: from a C_SC/C_DC/C_SE ASDU to the CommandGate.

c104 decides the ACT_CON by the callback's return value and handles select-before-operate
itself (a select never reaches Python; an execute without a select is refused inside c104).
So the callback, on c104's thread, decodes the command into engineering units, hands it to
the gate on the reactor and blocks until the gate's verdict (the gate's deadline stays under
t1), then returns SUCCESS or FAILURE. After a success the ACT_TERM follows (for select-before-
operate c104 sends it itself when it clears the selection, with the S/E bit of the select set:
a quirk of c104 2.2.1 to check against the master), and c104 sends the related monitored point
back with COT 11. Every command frame in and out is also written to the
audit log, so refusals made inside c104 (execute without select, unknown IOA) leave a record.

This module must not use ``from __future__ import annotations``: c104 checks callback
annotations as real objects.
"""

import logging
from typing import Any

import c104
from twisted.internet.threads import blockingCallFromThread

from gateway.commands.audit import AuditLog
from gateway.commands.gate import CommandGate, CommandRequest
from gateway.config.iec104 import CommandMap, MasterGroup
from gateway.northbound.wiretime import WireClock

log = logging.getLogger(__name__)

FRAME = "frame"
TERMINATION_DELAY_S = 0.02  # after c104 has queued the ACT_CON of the returning callback
_NOT_COMMANDS = {"C_IC_NA_1", "C_CI_NA_1", "C_CS_NA_1", "C_RD_NA_1", "C_TS_TA_1", "C_RP_NA_1"}


def command_value(mapping: CommandMap, value: Any) -> float:
    """The engineering value a command carries (c104's value types to a float)."""
    family = mapping.type[:4]
    if family == "C_SC":
        return mapping.on_value if bool(value) else mapping.off_value
    if family == "C_DC":
        return mapping.on_value if value == c104.Double.ON else mapping.off_value
    if mapping.type in ("C_SE_NA_1", "C_SE_TA_1"):
        return float(value) * (mapping.full_scale or 1.0)
    if mapping.type in ("C_SE_NB_1", "C_SE_TB_1"):
        return int(value) / mapping.multiplier
    return float(value)


def _select_bit(type_name: str, apdu: bytes) -> bool:
    """The S/E bit of a single-object command: bit 7 of its qualifier (QOS, SCO, DCO), the last
    octet, or the one before the 7-octet CP56Time2a of time-tagged types. c104's explanation
    does not carry it for setpoints."""
    qualifier = apdu[-8] if type_name.endswith(("TA_1", "TB_1", "TC_1")) else apdu[-1]
    return bool(qualifier & 0x80)


class CommandPoints:
    """The command IOAs of one group, wired to the gate and the audit log."""

    def __init__(self, group: MasterGroup, gate: CommandGate, audit: AuditLog, reactor: Any, wire: WireClock) -> None:
        self._group = group
        self._gate = gate
        self._audit = audit
        self._reactor = reactor
        self._wire = wire
        self._maps = {c.ioa: c for c in group.commands}
        self._points: dict[int, c104.Point] = {}

    def add_to(self, server: c104.Server, station: c104.Station) -> None:
        """Create every command point; audit every command frame of the server."""
        for mapping in self._group.commands:
            mode = c104.CommandMode.SELECT_AND_EXECUTE if mapping.mode == "select_execute" else c104.CommandMode.DIRECT
            point = station.add_point(io_address=mapping.ioa, type=getattr(c104.Type, mapping.type),
                                      related_io_address=mapping.related_ioa,
                                      related_io_autoreturn=mapping.related_ioa is not None, command_mode=mode)
            point.on_receive(callable=self._c104_on_command)
            self._points[mapping.ioa] = point
        if self._maps:
            server.on_receive_raw(callable=self._c104_frame_in)
            server.on_send_raw(callable=self._c104_frame_out)

    # -- c104 threads -----------------------------------------------------------------------

    def _c104_on_command(self, point: c104.Point, previous_info: c104.Information, message: c104.IncomingMessage) -> c104.ResponseState:
        mapping = self._maps[point.io_address]
        recorded = message.info.recorded_at if mapping.type.endswith(("TA_1", "TB_1", "TC_1")) else None
        request = CommandRequest(self._group.name, mapping.point, command_value(mapping, point.value), mapping.ioa,
                                 mapping.type, self._wire.from_c104(recorded) if recorded else None)
        confirmed = blockingCallFromThread(self._reactor, self._gate.submit, request)
        if confirmed and mapping.mode == "direct":  # after an SBO execute c104 sends the ACT_TERM itself
            self._reactor.callFromThread(self._reactor.callLater, TERMINATION_DELAY_S, self._terminate, point.io_address)
        return c104.ResponseState.SUCCESS if confirmed else c104.ResponseState.FAILURE

    def _c104_frame_in(self, server: c104.Server, data: bytes) -> None:
        self._frame("in", data)

    def _c104_frame_out(self, server: c104.Server, data: bytes) -> None:
        self._frame("out", data)

    def _frame(self, direction: str, data: bytes) -> None:
        frame = c104.explain_bytes_dict(apdu=data)
        kind = frame.get("type")
        if not isinstance(kind, c104.Type) or not kind.name.startswith("C_") or kind.name in _NOT_COMMANDS:
            return
        fields = {"direction": direction, "group": self._group.name, "type": kind.name,
                  "cot": frame["cot"].name, "negative": bool(frame.get("negative")), "select": _select_bit(kind.name, data),
                  "ioa": frame.get("firstInformationObjectAddress"), "bytes": data.hex()}
        self._reactor.callFromThread(self._audit.append, FRAME, **fields)

    # -- reactor thread ---------------------------------------------------------------------

    def _terminate(self, ioa: int) -> None:
        self._points[ioa].transmit(cause=c104.Cot.ACTIVATION_TERMINATION)
