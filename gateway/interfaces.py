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

Every driver also publishes the pseudo-point ``<device>._online`` (``model.ONLINE_POINT``);
``health.DeviceHealth`` holds these rules once for every driver.

A protocol is an ``IDriverPlugin`` published under the ``gridgate.drivers`` entry point group, a
northbound side an ``INorthboundPlugin`` under ``gridgate.northbound``; ``registry`` loads and
verifies them, and the core never imports a concrete one. This module holds zope interfaces
only: value types live in ``model``.
"""

from typing import Any, Sequence

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from gateway.model import Command, Sample


class ISampleSink(Interface):
    """Where drivers deliver what they observed."""

    def publish(samples: Sequence[Sample]) -> None:
        """Take one batch (one poll of one device, one notification, one frame); never blocks."""


class IStatsSource(Interface):
    """A part with counters worth showing in detail (a driver, the writer, an outstation)."""

    def stats() -> dict[str, Any]:
        """Counters for status displays and benchmarks, as plain data."""


class IDriver(IStatsSource):
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


class IDriverPlugin(Interface):
    """What a protocol package publishes under the ``gridgate.drivers`` entry point group.

    The core validates profiles with ``profile_model`` and each device's ``connection:`` with
    ``connection_model``; everything timing-shaped (a poll period, retries) belongs to the
    connection model of a driver that polls, so a push driver has none.
    """

    name = Attribute("protocol name, the ``protocol:`` of its profiles; unique among installed plugins")
    profile_model = Attribute("pydantic model (a ProfileSpec) its profiles validate against")
    connection_model = Attribute("pydantic model a device's ``connection:`` validates against")

    def prepare(connection: Any, folder: Any) -> Any:
        """The validated connection with its file names (certificates...) resolved against the
        site file's folder (a Path)."""

    def profile_problems(profile: Any) -> list:
        """Checks that span several points (overlaps, ...), as (location in the profile, message)."""

    def site_problems(devices: Sequence[Any]) -> list:
        """Checks that span devices (two devices on one address...), as (device name, message)."""

    def load_summary(devices: Sequence[Any]) -> str:
        """What these devices cost, for ``gridgate check`` (e.g. ``12.0 requests/s``)."""

    def device_summary(device: Any) -> str:
        """How one device is read, for ``gridgate check`` (e.g. ``every 1 s``)."""

    def build(devices: Sequence[Any], sink: ISampleSink, reactor: Any, metrics: Any) -> list:
        """IDriver providers for every device of this protocol (grouped by bus as the protocol needs),
        registering their counters in ``metrics`` (a ``metrics.Metrics``; per-device health is
        registered by ``health.DeviceHealth``)."""


class ISimulatorPlugin(Interface):
    """A driver plugin that can also simulate its devices (optional: a push driver may have none)."""

    def simulator(devices: Sequence[Any], reactor: Any) -> ISimulator:
        """A simulator serving every device on the address its connection names."""


class ICommandPlugin(Interface):
    """A plugin with command-line tools of its own (``gridgate opcua browse``...): optional."""

    def add_commands(subparsers: Any) -> None:
        """Add its subcommands to ``gridgate``'s argparse subparsers; each sets ``func``."""


class INorthboundPlugin(Interface):
    """What a northbound side (the IEC 104 outstation, ...) publishes under ``gridgate.northbound``.

    It owns one top-level section of the site file: its model, its cross-checks against the
    devices, and the services it runs.
    """

    name = Attribute("plugin name; unique among installed northbound plugins")
    section = Attribute("the site-file key it owns, e.g. ``master_groups``")
    section_model = Attribute("type the section validates against (a pydantic model or list of them)")
    section_default = Attribute("value of the section when the site file leaves it out")

    def prepare(section: Any, folder: Any) -> Any:
        """The validated section with file names resolved against the site file's folder."""

    def problems(section: Any, site: Any) -> list:
        """Cross-checks against the site (``config.loader.SiteView``: spec, resolved devices, and the
        names of devices that failed to resolve, whose references are not reported again), as
        (location in the site file, message)."""

    def summary(section: Any) -> list:
        """Lines for ``gridgate check``'s summary."""

    def spool_files(section: Any, spool_path: str) -> list:
        """Every spool-like file the section's services open (``--salvage-spool`` checks them)."""

    def commands(section: Any) -> bool:
        """True when the section can command devices (the gateway then opens the audit log and the gate)."""

    def build(section: Any, context: Any) -> list:
        """twisted Services to run, given the ``service.NorthboundContext`` (table, gate, audit,
        spool path, reactor). A service with a ``ready`` Deferred delays the gateway's readiness
        until it fires, and fails the start-up when it fails."""
