"""What one master group serves on the wire, IOA by IOA: the table behind ``points export`` and ``dispatch-test``.

A dispatch centre commissions against its point table (点表), so the table must say what the
outstation really sends, not what the site file configures. Both consumers build their rows
here, so the exported table and the commissioning test cannot disagree:

* device points (``points:``), ``kind`` "monitor": general interrogation (COT 20) with the
  untagged twin of the configured type (``PointMap.gi_type``; none with ``gi: false``),
  spontaneous (COT 3) and return information (COT 11) with the configured type;
* counters (M_IT), ``kind`` "counter": counter interrogation (COT 37) only, untagged;
* comm status per device (``kind`` "status") and the buffer-overflow and clock alarms (``kind``
  "alarm"): the outstation maps them as M_SP_TB_1 points, so GI M_SP_NA_1, events M_SP_TB_1;
* command IOAs (``commands:``), ``kind`` "command": the command type, mirrored in ACT_CON/ACT_TERM.

The status and alarm mappings are built exactly as ``outstation._by_point`` builds them (a unit
test holds the two together), and every type comes from the ``PointMap`` properties the
outstation itself answers with.
"""

from dataclasses import dataclass
from typing import Literal, Sequence

from gateway.model import ONLINE_POINT, point_id
from gateway.northbound.iec104.section import ALARM_POINTS, CommandMap, MasterGroup, PointMap

Kind = Literal["monitor", "counter", "status", "alarm", "command"]
STATUS_TYPE = "M_SP_TB_1"
# site-file key -> (the outstation's internal point of the group, row name, description)
_ALARM_TEXT = {"buffer_overflow_ioa": ("event buffer overflow", "event buffer overflow (events lost)"),
               "clock_alarm_ioa": ("clock alarm", "clock synchronisation alarm"),
               "failsafe_alarm_ioa": ("fail-safe alarm", "fail-safe value not applied")}
ALARMS = {key: (ALARM_POINTS[key], *text) for key, text in _ALARM_TEXT.items()}


@dataclass(frozen=True)
class WireRow:
    """One IOA of a group as a master receives or sends it."""

    kind: Kind
    ioa: int
    point: str                    # device.point; for status and alarm rows their name ("pcs1 communication status")
    device: str                   # "" for the group's alarms
    type: str                     # as configured (status and alarm rows: STATUS_TYPE)
    mapping: PointMap | None = None    # every monitored row (status and alarm rows: the outstation's own mapping)
    command: CommandMap | None = None  # command rows
    name: str = ""                # status and alarm rows: what they report (device rows: the profile names them)
    source: str = ""              # status and alarm rows: the site-file key that sets the IOA

    @property
    def gi_type(self) -> str | None:
        """The type answered at general interrogation (COT 20); None when the row is not in it."""
        return self.mapping.gi_type if self.mapping is not None else None

    @property
    def ci_type(self) -> str | None:
        """The type answered at counter interrogation (COT 37); None for everything but counters."""
        return self.mapping.counter_type if self.mapping is not None else None

    @property
    def event_type(self) -> str | None:
        """The type sent spontaneously and as return information; None when never sent so."""
        return self.mapping.event_type if self.mapping is not None else None

    @property
    def types(self) -> frozenset[str]:
        """Every monitored type the row arrives with (empty for commands)."""
        return frozenset(t for t in (self.gi_type, self.ci_type, self.event_type) if t is not None)


def wire_rows(group: MasterGroup) -> list[WireRow]:
    """Every IOA the group serves, sorted by IOA."""
    rows = [WireRow("counter" if m.counter_type else "monitor", m.ioa, m.point, m.point.split(".", 1)[0], m.type, m)
            for m in group.points]
    rows += [WireRow("status", ioa, f"{device} communication status", device, STATUS_TYPE,
                     PointMap(point=point_id(device, ONLINE_POINT), ioa=ioa, type=STATUS_TYPE),
                     name=f"communication status of {device}", source=f"comm_status.{device}")
             for device, ioa in group.comm_status.items()]
    for key, (internal, point, name) in ALARMS.items():
        if ioa := getattr(group, key):
            rows.append(WireRow("alarm", ioa, point, "", STATUS_TYPE,
                                PointMap(point=point_id(group.name, internal), ioa=ioa, type=STATUS_TYPE),
                                name=name, source=key))
    rows += [WireRow("command", c.ioa, c.point, c.point.split(".", 1)[0], c.type, command=c) for c in group.commands]
    return sorted(rows, key=lambda row: row.ioa)


def commands(rows: Sequence[WireRow]) -> list[CommandMap]:
    """The command mappings of the rows, in row order."""
    return [row.command for row in rows if row.command is not None]
