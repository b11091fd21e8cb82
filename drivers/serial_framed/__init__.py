"""Serial (and TCP serial-server) devices described by a framed-protocol profile: framing,
checksums and fields in YAML, no code per device.

``DRIVER`` is the plugin the core finds through the ``gridgate.drivers`` entry point.
"""

from pathlib import Path
from typing import Any, Sequence

from zope.interface import implementer

from drivers.serial_framed.driver import FramedBusDriver
from drivers.serial_framed.framing import FrameFormatError, FrameScanner
from drivers.serial_framed.link import FramedLink
from drivers.serial_framed.profile import FramedConnection, FramedProfile
from drivers.serial_framed.sim.server import FramedSimulator
from gateway.config.profile import ProfileSpec
from gateway.config.source import Problem
from gateway.interfaces import IDriver, IDriverPlugin, ISampleSink, ISimulator, ISimulatorPlugin
from gateway.metrics import Metrics
from gateway.model import Device


@implementer(IDriverPlugin, ISimulatorPlugin)
class FramedPlugin:
    """Validation, drivers and simulator for framed-serial devices."""

    name = "serial_framed"
    profile_model = FramedProfile
    connection_model = FramedConnection

    def prepare(self, connection: FramedConnection, folder: Path) -> FramedConnection:
        """A serial port is a device name, not a file of the site: nothing to resolve."""
        return connection

    def profile_problems(self, profile: ProfileSpec) -> list[Problem]:
        """A frame format no frame can satisfy; fields beyond the longest frame."""
        assert isinstance(profile, FramedProfile)
        try:
            fmt = profile.framing.frame_format()
            FrameScanner(fmt)
        except FrameFormatError as exc:
            return [(("framing",), str(exc))]
        problems: list[Problem] = []
        for index, point in enumerate(profile.points):
            if point.at is None:
                continue
            end = point.at + point.field(profile.order).size
            if end > fmt.max_length:
                problems.append((("points", index, "at"), f"field ends at octet {end}, beyond max_length "
                                                          f"{fmt.max_length}"))
        return problems

    def site_problems(self, devices: Sequence[Device]) -> list[tuple[str, str]]:
        """Two devices with one address on a bus, or one bus carrying two frame formats."""
        problems = []
        seen: dict[tuple, Device] = {}
        for device in devices:
            connection: FramedConnection = device.connection  # type: ignore[assignment]
            first = seen.setdefault(connection.bus, device)
            if first is device:
                continue
            if first.connection.address == connection.address:  # type: ignore[attr-defined]
                problems.append((device.name, f"same bus and address {connection.address} as {first.name!r}"))
            if first.profile.framing != device.profile.framing:  # type: ignore[attr-defined]
                problems.append((device.name, f"shares its bus with {first.name!r}, whose framing differs"))
        return problems

    def load_summary(self, devices: Sequence[Device]) -> str:
        """Requests per second the devices' polled messages cost."""
        rate = sum(sum(1 / m.every for m in d.profile.messages if m.request is not None)  # type: ignore[attr-defined]
                   / d.connection.poll_s for d in devices)  # type: ignore[attr-defined]
        return f"{rate:.1f} requests/s"

    def device_summary(self, device: Device) -> str:
        """Polled every poll_s, or streamed."""
        polled = any(m.request is not None for m in device.profile.messages)  # type: ignore[attr-defined]
        return f"every {device.connection.poll_s:g} s" if polled else "streamed"  # type: ignore[attr-defined]

    def build(self, devices: Sequence[Device], sink: ISampleSink, reactor: Any,
              metrics: Metrics | None = None) -> list[IDriver]:
        """One driver per bus: devices on one serial port or TCP serial server share the line."""
        buses: dict[tuple, list[Device]] = {}
        for device in devices:
            buses.setdefault(device.connection.bus, []).append(device)  # type: ignore[attr-defined]
        drivers: list[IDriver] = []
        for bus, members in buses.items():
            fmt = members[0].profile.framing.frame_format()  # type: ignore[attr-defined]
            link = FramedLink(members[0].connection, fmt, _bus_name(bus), reactor, metrics)  # type: ignore[arg-type]
            drivers.append(FramedBusDriver(link, fmt, members, sink, reactor, metrics))
        return drivers

    def simulator(self, devices: Sequence[Device], reactor: Any) -> ISimulator:
        """Every device on the port or address its connection names."""
        return FramedSimulator(devices, reactor)


def _bus_name(bus: tuple) -> str:
    return bus[1] if bus[0] == "serial" else f"{bus[1]}:{bus[2]}"


DRIVER = FramedPlugin()
