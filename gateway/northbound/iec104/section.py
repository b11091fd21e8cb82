"""The outstation's part of a site file: master groups and their point tables.

A master group is one dispatch centre (地调/省调/集控): its own port, allowed master IPs, common
address, protocol timers, time zone on the wire, and its own table of IOAs. Several groups may
map the same device point; each sees only its own table.
"""

from typing import Literal

from pydantic import Field, field_validator, model_validator

from gateway.config.profile import DEVICE_POINT, Strict
from gateway.config.units import Duration, Size
from gateway.iec104.timers import Timers
from gateway.iec104.types import COUNTERS, IOA_MAX, UNTAGGED, CommandType, MonitorType
from gateway.iec104.wiretime import wire_zone

# a master group's alarm IOAs (site-file key) -> the outstation's internal point name (point "<group>.<name>")
ALARM_POINTS = {"buffer_overflow_ioa": "_buffer_overflow", "clock_alarm_ioa": "_clock_alarm",
                "failsafe_alarm_ioa": "_failsafe_alarm"}


class PointMap(Strict):
    """One device point at one IOA of a master group."""

    point: str = Field(pattern=DEVICE_POINT, description="device.point")
    ioa: int = Field(ge=1, le=IOA_MAX)
    type: MonitorType
    deadband: float | None = Field(None, ge=0, description="absolute, engineering units")
    deadband_percent: float | None = Field(None, gt=0, le=100, description="percent of full_scale")
    full_scale: float | None = Field(None, gt=0, description="normalized types: value / full_scale")
    multiplier: float = Field(1.0, description="scaled types: value x multiplier as int16; counters: value x "
                                                "multiplier as the integer count (100 keeps a meter's 0.01 kWh)")
    gi: bool = Field(True, description="answered in general interrogation (counters answer counter interrogation only)")

    @model_validator(mode="after")
    def _scaling(self) -> "PointMap":
        if self.deadband is not None and self.deadband_percent is not None:
            raise ValueError("give deadband or deadband_percent, not both")
        if self.deadband_percent is not None and self.full_scale is None:
            raise ValueError("deadband_percent needs full_scale")
        if self.type in ("M_ME_NA_1", "M_ME_TD_1") and self.full_scale is None:
            raise ValueError(f"{self.type} (normalized) needs full_scale")
        return self

    @property
    def threshold(self) -> float:
        """The change that triggers a spontaneous transmission (0: any change)."""
        if self.deadband_percent is not None and self.full_scale is not None:
            return self.full_scale * self.deadband_percent / 100
        return self.deadband or 0.0

    @property
    def gi_type(self) -> str | None:
        """The type answered at COT 20: the untagged twin; None for counters and ``gi: false``."""
        if self.type in COUNTERS or not self.gi:
            return None
        return UNTAGGED.get(self.type, self.type)

    @property
    def event_type(self) -> str | None:
        """The type sent spontaneously (COT 3): the configured one; None for counters (counter
        interrogation only, so an unchanged meter is not sent on every poll)."""
        return None if self.type in COUNTERS else self.type

    @property
    def counter_type(self) -> str | None:
        """The type answered at COT 37: the untagged counter type; None for other points."""
        return UNTAGGED.get(self.type, self.type) if self.type in COUNTERS else None


class CommandMap(Strict):
    """A command IOA of a master group and the device point it writes."""

    ioa: int = Field(ge=1, le=IOA_MAX)
    type: CommandType
    point: str = Field(pattern=DEVICE_POINT, description="device.point (writable)")
    mode: Literal["direct", "select_execute"] = "select_execute"
    related_ioa: int | None = Field(None, ge=1, le=IOA_MAX, description="monitored IOA sent back with COT 11")
    on_value: float = Field(1.0, description="C_SC/C_DC: value written for ON")
    off_value: float = Field(0.0, description="C_SC/C_DC: value written for OFF")
    full_scale: float | None = Field(None, gt=0, description="C_SE_NA/TA: value = normalized x full_scale")
    multiplier: float = Field(1.0, description="C_SE_NB/TB: value = scaled / multiplier")

    @model_validator(mode="after")
    def _scaling(self) -> "CommandMap":
        if self.type in ("C_SE_NA_1", "C_SE_TA_1") and self.full_scale is None:
            raise ValueError(f"{self.type} (normalized) needs full_scale")
        if self.multiplier == 0:
            raise ValueError("multiplier must not be 0")
        return self


class FallbackWrite(Strict):
    """One value the fail-safe writes."""

    point: str = Field(pattern=DEVICE_POINT)
    value: float


class FailSafeSpec(Strict):
    """What happens when every master of the group has been gone for ``after_s``."""

    after_s: Duration = Field(gt=0)
    writes: list[FallbackWrite] = Field(min_length=1)


class EventBufferSpec(Strict):
    """Changes kept while no master is connected (persistent, bounded)."""

    path: str | None = Field(None, description="default: <spool path>.<group>.events")
    max_bytes: Size = 256 << 20
    max_age_s: Duration = 7 * 86400.0
    send_rate: int = Field(2000, ge=10, le=20000, description="objects per second sent to masters")


class ClockSyncSpec(Strict):
    """What a C_CS_NA_1 from the master does."""

    alarm_offset_s: Duration = 1.0
    step_os_clock: bool = False


class TlsSpec(Strict):
    """IEC 62351-3 TLS on the group's port: mutual authentication, masters' certificates checked
    against ``ca`` (chain and validity time). Paths are relative to the site file's folder."""

    cert: str = Field(description="the outstation's certificate (PEM)")
    key: str = Field(description="its private key (PEM, unencrypted, mode 0600)")
    ca: str = Field(description="CA certificate the masters' certificates must chain to")
    pinned_masters: list[str] = Field([], description="when given, only these master certificates are accepted")
    min_version: Literal["1.2", "1.3"] = "1.2"
    warn_days: int = Field(30, ge=0, le=3650, description="warn this many days before a certificate expires")

    @field_validator("min_version", mode="before")
    @classmethod
    def _version_text(cls, value: object) -> object:
        return {1.2: "1.2", 1.3: "1.3"}.get(value, value) if isinstance(value, float) else value  # YAML reads 1.2 as a float


class MasterGroup(Strict):
    """One dispatch centre and what it sees."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_-]*$")
    bind: str
    port: int = Field(2404, ge=0, le=65535)
    allowed_masters: list[str] = Field(min_length=1, description="master IP addresses")
    max_connections: int = Field(2, ge=1, le=16)
    select_timeout_s: Duration = Field(10.0, gt=0, description="an execute must follow its select within this")
    common_address: int = Field(ge=1, le=65534)
    timers: Timers = Timers()
    wire_time_zone: str = Field("UTC", description="time zone of CP56Time2a on the wire, e.g. Asia/Shanghai")
    event_buffer: EventBufferSpec = EventBufferSpec()
    clock_sync: ClockSyncSpec = ClockSyncSpec()
    comm_status: dict[str, int] = Field({}, description="device -> IOA of its communication status (M_SP_TB_1)")
    buffer_overflow_ioa: int | None = Field(None, ge=1, le=IOA_MAX)
    clock_alarm_ioa: int | None = Field(None, ge=1, le=IOA_MAX)
    failsafe_alarm_ioa: int | None = Field(None, ge=1, le=IOA_MAX, description="on while a fail-safe value "
                                                                             "could not be applied")
    points: list[PointMap] = []
    commands: list[CommandMap] = []
    failsafe: FailSafeSpec | None = None
    tls: TlsSpec | None = Field(None, description="IEC 62351-3 TLS (mutual authentication)")

    @field_validator("wire_time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return wire_zone(value)

    @field_validator("comm_status")
    @classmethod
    def _status_ioas(cls, value: dict[str, int]) -> dict[str, int]:
        for device, ioa in value.items():
            if not 1 <= ioa <= IOA_MAX:
                raise ValueError(f"IOA {ioa} of {device} outside 1..{IOA_MAX}")
        return value
