"""The IEC 104 master's part of profiles and site files: the downstream device's point table
(IOA, type, name, unit, scale) and how its link is reached (host, common address, timers,
interrogation periods, clock sync, the time zone of its time tags).

A point names the type the RTU sends spontaneously; its untagged or tagged twin on the same IOA
is taken too (RTUs answer an interrogation untagged and send events tagged). One point per IOA
and common address: c104 keeps one type per IOA of a station.
"""

from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from gateway.config.profile import PointSpec, ProfileSpec, Strict
from gateway.config.units import Duration
from gateway.iec104.timers import Timers
from gateway.iec104.types import COUNTERS, IOA_MAX, MonitorType

COMMON_ADDRESS = Field(ge=1, le=65534)


class Iec104Point(PointSpec):
    """A monitored information object of the downstream station."""

    ioa: int = Field(ge=1, le=IOA_MAX)
    type: MonitorType = Field(description="the type the RTU sends; its tagged or untagged twin is taken too")
    common_address: int | None = Field(None, ge=1, le=65534, description="default: the connection's")

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
        seen: dict[tuple[int | None, int], str] = {}
        for point in self.points:
            key = (point.common_address, point.ioa)
            if key in seen:
                raise ValueError(f"{point.id}: IOA {point.ioa} is already {seen[key]}'s (one point per IOA)")
            seen[key] = point.id
        return self


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
    command_timeout_s: Duration = Field(10.0, gt=0, description="an interrogation's or command's answer")

    @field_validator("wire_time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Asia/Shanghai or UTC)") from None
        return value

    @property
    def value_age_s(self) -> float:
        """How old a good value may be: spontaneous data is sent at once, so the interrogation
        period bounds it (commissioning checks use it)."""
        return self.gi_every_s or 0.0
