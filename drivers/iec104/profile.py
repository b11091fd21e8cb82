"""The IEC 104 master's part of profiles and site files: the downstream device's point table
(IOA, type, name, unit, scale) and how its link is reached (host, common address, timers,
interrogation periods, clock sync, the time zone of its time tags).

A point names the type the RTU sends spontaneously; its untagged or tagged twin on the same IOA
is taken too (RTUs answer an interrogation untagged and send events tagged). One point per IOA
and common address: c104 keeps one type per IOA of a station.

A point the station lets the master command names its command (``command:``: the command IOA,
type and whether it is selected before it is executed); a command to the point goes to that IOA
and is confirmed by the point itself, the station's return information.
"""

from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator, model_validator

from gateway.config.profile import PointSpec, ProfileSpec, Strict
from gateway.config.units import Duration
from gateway.iec104.timers import Timers
from gateway.iec104.types import COUNTERS, IOA_MAX, CommandType, MonitorType
from gateway.iec104.wiretime import wire_zone

COMMON_ADDRESS = Field(ge=1, le=65534)
# a command type's family -> the monitored types whose return information confirms it, and the
# command values it can carry (C_SC: off 0 / on 1; C_DC: off 1 / on 2, as the double point's states)
COMMANDED = {"C_SC": (("M_SP",), (0.0, 1.0)), "C_DC": (("M_DP",), (1.0, 2.0)), "C_SE": (("M_ME",), None)}


class Iec104Command(Strict):
    """How a point is commanded: the command's IOA and type, direct or select-before-operate."""

    ioa: int = Field(ge=1, le=IOA_MAX)
    type: CommandType
    mode: Literal["direct", "select_execute"] = "direct"
    qualifier: Literal["none", "short", "long", "persistent"] = Field(
        "none", description="C_SC/C_DC: the output pulse (QU)")


class Iec104Point(PointSpec):
    """A monitored information object of the downstream station."""

    ioa: int = Field(ge=1, le=IOA_MAX)
    type: MonitorType = Field(description="the type the RTU sends; its tagged or untagged twin is taken too")
    common_address: int | None = Field(None, ge=1, le=65534, description="default: the connection's")
    command: Iec104Command | None = None

    @model_validator(mode="after")
    def _commandable(self) -> "Iec104Point":
        if self.command is None:
            return self
        monitored, values = COMMANDED[self.command.type[:4]]
        if not self.type.startswith(monitored):
            raise ValueError(f"a {self.command.type} is confirmed by a {' or '.join(monitored)} point, not {self.type}")
        if self.writable is None:
            raise ValueError("a commanded point needs writable limits: writable: {min: ..., max: ...}")
        if values is not None and not (values[0] <= self.writable.min and self.writable.max <= values[1]):
            raise ValueError(f"a {self.command.type} carries {values[0]:g} (off) or {values[1]:g} (on): "
                             f"writable limits within [{values[0]:g}, {values[1]:g}]")
        return self

    def value_kind(self) -> Literal["bool", "int", "float", "str"]:
        """Single points are booleans, double points their state 0..3, counters integers."""
        if self.type.startswith("M_SP"):
            return "bool"
        if self.type.startswith("M_DP") or (self.type in COUNTERS and self.scale == 1 and self.offset == 0):
            return "int"
        return "float"


class Iec104Profile(ProfileSpec):
    """A downstream station's point table (点表)."""

    protocol: Literal["iec104"]
    points: list[Iec104Point] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_point_per_ioa(self) -> "Iec104Profile":
        """Monitored and command IOAs all distinct (c104 keeps one type per IOA of a station)."""
        seen: dict[tuple[int | None, int], str] = {}
        for point in self.points:
            ioas = [(point.ioa, point.id)] + ([(point.command.ioa, f"{point.id}'s command")] if point.command else [])
            for ioa, owner in ioas:
                key = (point.common_address, ioa)
                if key in seen:
                    raise ValueError(f"{owner}: IOA {ioa} is already {seen[key]}'s (one point per IOA)")
                seen[key] = owner
        return self


def _is_utc(zone: str) -> bool:
    """Whether ``zone`` is UTC all year (its offset in January and July is zero)."""
    tz = ZoneInfo(zone)
    return all(datetime(2026, month, 1, tzinfo=tz).utcoffset() == timedelta(0) for month in (1, 7))


class Iec104Connection(Strict):
    """Where a downstream station is and how the gateway keeps its link."""

    host: str
    port: int = Field(2404, ge=1, le=65535)
    common_address: int = COMMON_ADDRESS
    timers: Timers = Timers()
    gi_every_s: Duration | None = Field(900.0, gt=0, description="besides the GI after every STARTDT; null: never")
    counter_interrogation_every_s: Duration | None = Field(900.0, gt=0, description="null: never")
    clock_sync: Literal["on_connect", "never"] = Field("on_connect", description="C_CS_NA_1 after every STARTDT")
    clock_sync_every_s: Duration | None = Field(None, gt=0, description="and again this often")
    wire_time_zone: str = Field("UTC", description="the zone of the station's time tags, e.g. Asia/Shanghai")
    offline_after_s: Duration = Field(30.0, gt=0, description="link not open this long: points IV, device offline")
    command_timeout_s: Duration = Field(10.0, gt=0, description="each answer to a command (ACT_CON, ACT_TERM); "
                                                                "inside t1")

    @model_validator(mode="after")
    def _clock_sync_in_utc(self) -> "Iec104Connection":
        """c104 sends a clock sync with the UTC fields of the gateway's clock, whatever the wire zone."""
        syncs = self.clock_sync != "never" or self.clock_sync_every_s is not None
        if syncs and not _is_utc(self.wire_time_zone):
            raise ValueError(f"the clock sync the gateway sends carries UTC (c104), not {self.wire_time_zone}: "
                             "set clock_sync: never (and no clock_sync_every_s) for this station, or run its "
                             "time tags in UTC")
        return self

    @model_validator(mode="after")
    def _answers_inside_t1(self) -> "Iec104Connection":
        if self.command_timeout_s >= self.timers.t1:
            raise ValueError(f"command_timeout_s ({self.command_timeout_s:g} s) must be shorter than t1 "
                             f"({self.timers.t1:g} s): a command's answers are awaited inside t1")
        return self

    @field_validator("wire_time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return wire_zone(value)

    @property
    def value_age_s(self) -> float:
        """How old a good value may be: spontaneous data is sent at once, so the interrogation
        period bounds it (commissioning checks use it)."""
        return self.gi_every_s or 0.0
