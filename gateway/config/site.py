"""The site file: which devices exist, where they are, and where their data goes."""

import re
from typing import Any, Literal

from pydantic import Field, model_validator

from gateway.config.iec104 import AuditSpec, CommandPolicy, MasterGroup
from gateway.config.profile import Strict
from gateway.config.units import Duration, Size

NAME = r"^[A-Za-z][A-Za-z0-9_-]*$"


class InfluxSpec(Strict):
    """An InfluxDB target. v2 API (2.x, 3.x, Cloud, 1.8+) unless ``v1_db`` names a 1.x database."""

    url: str = Field(pattern=r"^https?://")
    org: str = ""
    bucket: str = ""
    token_env: str = Field("INFLUX_TOKEN", description="environment variable holding the token")
    v1_db: str | None = Field(None, description="post line protocol to /write?db= (InfluxDB 1.x)")
    batch_size: int = Field(5000, ge=1, le=100_000)
    flush_interval_s: Duration = 1.0
    timeout_s: Duration = 10.0
    exit_flush_s: Duration = Field(5.0, ge=0, description="on SIGTERM/Ctrl-C, time to forward what is committed")
    measurement: str = "gridgate"

    @model_validator(mode="after")
    def _target_named(self) -> "InfluxSpec":
        if self.v1_db is None and not self.bucket:
            raise ValueError("name a bucket (v2 API) or v1_db (InfluxDB 1.x)")
        return self


class SpoolSpec(Strict):
    """The durable queue between the gateway and InfluxDB."""

    path: str = "gridgate-spool.db"
    max_bytes: Size = 1 << 30
    max_age_s: Duration = 7 * 86400.0
    overflow: Literal["drop_oldest", "refuse_new"] = "drop_oldest"


class DeviceEntry(Strict):
    """One device instance. ``connection`` is validated by the profile's driver."""

    name: str = Field(pattern=NAME)
    profile: str
    connection: dict[str, Any]
    poll_s: Duration = Field(1.0, gt=0)
    timeout_s: Duration = Field(1.0, gt=0)
    retries: int = Field(1, ge=0, le=5)
    offline_after: int = Field(3, ge=1, description="consecutive failed polls before IV")
    enabled: bool = True
    tags: dict[str, str] = {}


class SiteSpec(Strict):
    """The whole site file."""

    site: str = Field(pattern=NAME)
    profile_dirs: list[str] = []
    influx: InfluxSpec | None = None
    spool: SpoolSpec = SpoolSpec()
    devices: list[DeviceEntry] = Field(min_length=1)
    master_groups: list[MasterGroup] = []
    command_policy: list[CommandPolicy] = []
    audit: AuditSpec = AuditSpec()

    @model_validator(mode="after")
    def _own_event_buffers(self) -> "SiteSpec":
        """Two master groups on one event-buffer file would each delete the other's events."""
        seen: dict[str, str] = {}
        for group in self.master_groups:
            path = group.event_buffer.path
            if path is not None and path in seen:
                raise ValueError(f"master groups {seen[path]} and {group.name} share the event buffer {path}: "
                                 f"give each its own event_buffer.path")
            if path is not None:
                seen[path] = group.name
        return self


def slug(text: str) -> str:
    """A tag-safe form of a name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)
