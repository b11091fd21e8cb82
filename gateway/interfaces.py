"""The driver contract and the driver registry.

Every protocol fits one shape, whatever drives its timing:

* polling protocols (Modbus) run their own schedule per device or bus and publish one batch per
  poll of one device;
* subscription protocols (OPC UA) publish a batch per data-change notification;
* pushed protocols (104 master, streaming serial sensors) publish when a frame arrives.

In every case the driver turns what it heard into ``Sample`` batches for an ``ISampleSink`` and
reports its own health through quality flags: a device that goes silent keeps its last values
with NT, then IV once declared offline. Nothing a device does may block the reactor or slow
another device.

Every driver also publishes the pseudo-point ``<device>._online`` (``ONLINE_POINT``): True at
the first good exchange and after recovery, False once the device is declared offline. It is
the device's communication status (104 comm-status points, dashboards).

A protocol is a ``DriverPlugin`` published under the ``gridgate.drivers`` entry point group; the
core never imports a concrete driver.
"""

from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence, runtime_checkable

from pydantic import BaseModel
from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from gateway.config.profile import ProfileSpec
from gateway.model import Command, Sample

ENTRY_POINT_GROUP = "gridgate.drivers"
ONLINE_POINT = "_online"


class ISampleSink(Interface):
    """Where drivers deliver what they observed."""

    def publish(samples: Sequence[Sample]) -> None:
        """Take one batch (one poll of one device, one notification, one frame); never blocks."""


class IDriver(Interface):
    """A running connection to one device or one shared bus of devices."""

    devices = Attribute("names of the devices this driver serves")

    def start() -> Deferred:
        """Connect in the background; fires at once. Never raises for an absent device."""

    def stop() -> Deferred:
        """Fires when connections are closed and in-flight commands have failed."""

    def execute(command: Command) -> Deferred:
        """Write one point; fires with a CommandResult (read-back included) or fails typed.

        Only the CommandGate calls this. Commands jump ahead of queued polls.
        """

    def stats() -> dict[str, Any]:
        """Counters for status displays and benchmarks (polls, skipped polls, failures...)."""


class ISimulator(Interface):
    """Simulated devices serving the same profiles the gateway reads."""

    def start() -> Deferred:
        """Fires once every simulated device is listening."""

    def stop() -> Deferred:
        """Fires once every listener is closed."""

    def value(device: str, point: str) -> Any:
        """The engineering value the simulated device currently serves; KeyError for a device it does not serve."""

    def set_value(device: str, point: str, value: Any) -> None:
        """Serve ``value`` now (tests and the control API provoke changes); moving behaviours continue from it."""


@dataclass(frozen=True)
class Device:
    """One device instance of a site, with its validated profile and connection."""

    name: str
    profile: ProfileSpec
    profile_file: Path
    connection: BaseModel
    poll_s: float
    timeout_s: float
    retries: int
    offline_after: int
    tags: dict[str, str] = field(default_factory=dict)


Problem = tuple[tuple[Any, ...], str]


@runtime_checkable
class DriverPlugin(Protocol):
    """What a protocol package publishes under the ``gridgate.drivers`` entry point."""

    name: str
    profile_model: type[ProfileSpec]
    connection_model: type[BaseModel]

    def profile_problems(self, profile: ProfileSpec) -> list[Problem]:
        """Checks that span several points (overlaps, ...), as (location in the profile, message)."""

    def site_problems(self, devices: Sequence[Device]) -> list[tuple[str, str]]:
        """Checks that span devices (two devices on one address...), as (device name, message)."""

    def requests_per_second(self, device: Device) -> float:
        """Protocol requests the device costs per second at its poll period."""

    def build(self, devices: Sequence[Device], sink: ISampleSink, reactor: Any) -> list[IDriver]:
        """Drivers for every device of this protocol (grouped by bus as the protocol needs)."""

    def simulator(self, devices: Sequence[Device], reactor: Any) -> ISimulator:
        """A simulator serving every device on the address its connection names."""


def load_plugins() -> dict[str, DriverPlugin]:
    """Every installed driver plugin, by protocol name."""
    plugins: dict[str, DriverPlugin] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        plugin = entry.load()
        plugins[plugin.name] = plugin
    return plugins


def group_by_protocol(devices: Iterable[Device]) -> dict[str, list[Device]]:
    """Devices of a site grouped by their profile's protocol, in site order."""
    groups: dict[str, list[Device]] = {}
    for device in devices:
        groups.setdefault(device.profile.protocol, []).append(device)
    return groups
