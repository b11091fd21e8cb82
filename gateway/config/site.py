"""The site file: which devices exist, where they are, and where their data goes.

``SiteSpec`` holds the core's sections; each northbound plugin adds the section it owns
(``site_model``), so the core validates, e.g., ``master_groups`` without knowing IEC 104.
"""

import re
from typing import Any, Iterable, Literal

from pydantic import ConfigDict, Field, create_model, model_validator

from gateway.commands.policy import AuditSpec, CommandPolicy

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
    """One device instance. ``connection`` is validated by the profile's driver, and so is every
    other key of the entry (``poll_s``, ``timeout_s``... for a driver that polls): they are the
    driver's, written beside ``connection`` for readability."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(pattern=NAME)
    profile: str
    connection: dict[str, Any]
    enabled: bool = True
    tags: dict[str, str] = {}


class SiteSpec(Strict):
    """The whole site file."""

    site: str = Field(pattern=NAME)
    profile_dirs: list[str] = []
    influx: InfluxSpec | None = None
    spool: SpoolSpec = SpoolSpec()
    devices: list[DeviceEntry] = Field(min_length=1)
    command_policy: list[CommandPolicy] = []
    audit: AuditSpec = AuditSpec()


def site_model(plugins: Iterable[Any]) -> type[SiteSpec]:
    """``SiteSpec`` with the section each northbound plugin owns (its ``section`` key, model and
    default); one class per set of plugins, so two sites loaded with the same plugins compare equal."""
    key = tuple(plugins)
    if key not in _MODELS:
        fields: dict[str, Any] = {p.section: (p.section_model, p.section_default) for p in key}
        _MODELS[key] = create_model("SiteSpec", __base__=SiteSpec, __doc__=SiteSpec.__doc__, **fields) if fields else SiteSpec
    return _MODELS[key]


_MODELS: dict[tuple[Any, ...], type[SiteSpec]] = {}


def slug(text: str) -> str:
    """A tag-safe form of a name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)
