"""Value types shared by the core and every driver.

A ``Sample`` is the unit of data flow: drivers publish batches of them, the PointTable keeps the
latest per point, the spool persists every one. Quality flags carry the IEC 60870-5-101/104
meanings so the northbound side can pass them on without translation.
"""

from dataclasses import dataclass, field
from enum import IntFlag
from pathlib import Path
from typing import Iterable, Union

from pydantic import BaseModel

from gateway.config.profile import ProfileSpec

Value = Union[float, int, bool, str, None]
ONLINE_POINT = "_online"
"""Every driver publishes ``<device>._online``: True at the first good exchange and after
recovery, False once the device is declared offline (104 comm-status points, dashboards)."""


class Quality(IntFlag):
    """IEC 60870-5-104 quality descriptor bits (same bit positions as the QDS octet)."""

    GOOD = 0
    OV = 0x01  # overflow: value outside the representable range
    BL = 0x10  # blocked
    SB = 0x20  # substituted
    NT = 0x40  # not topical: the last poll failed, the value is the last one known
    IV = 0x80  # invalid: no value, a sentinel, or the device is declared offline


def point_id(device: str, point: str) -> str:
    """The site-wide id of a device point, ``device.point``."""
    return f"{device}.{point}"


@dataclass(slots=True, frozen=True)
class Sample:
    """One observation of one point.

    ``source_time`` is the device's own time stamp where the protocol carries one, else the
    moment the answer arrived; ``gateway_time`` is always the moment the gateway received it.
    Both are POSIX seconds (UTC).
    """

    point: str
    value: Value
    quality: Quality
    source_time: float
    gateway_time: float


@dataclass(slots=True, frozen=True)
class Command:
    """A request to write one device point, already authorised by the CommandGate."""

    device: str
    point: str
    value: float | int | bool
    deadline: float  # POSIX seconds by which the driver must have confirmed or failed
    origin: str = "local"


@dataclass(slots=True, frozen=True)
class CommandResult:
    """What the driver saw after writing: the value read back from the device."""

    command: Command
    readback: Value
    completed_at: float
    extra: dict[str, Value] = field(default_factory=dict)


@dataclass(frozen=True)
class Device:
    """One device instance of a site, with its validated profile and connection (the driver's
    model: where the device is, and for a polling driver how often it is polled)."""

    name: str
    profile: ProfileSpec
    profile_file: Path
    connection: BaseModel
    tags: dict[str, str] = field(default_factory=dict)


def group_by_protocol(devices: Iterable[Device]) -> dict[str, list[Device]]:
    """Devices of a site grouped by their profile's protocol, in site order."""
    groups: dict[str, list[Device]] = {}
    for device in devices:
        groups.setdefault(device.profile.protocol, []).append(device)
    return groups
