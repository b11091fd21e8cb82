"""OPC UA devices (an EMS, a PV plant controller, a PLC) on asyncua: subscribed, secured, restart-proof.

``DRIVER`` is the plugin the core finds through the ``gridgate.drivers`` entry point.
"""

from pathlib import Path
from typing import Any, Sequence

from zope.interface import implementer

from drivers.opcua.browse import add_command as add_browse_command
from drivers.opcua.driver import OpcUaDriver
from drivers.opcua.profile import OpcUaConnection, OpcUaProfile
from drivers.opcua.session import security_problems
from drivers.opcua.sim.server import OpcUaSimulator
from gateway.config.profile import ProfileSpec
from gateway.config.source import Problem
from gateway.interfaces import ICommandPlugin, IDriver, IDriverPlugin, ISampleSink, ISimulator, ISimulatorPlugin
from gateway.metrics import Metrics
from gateway.model import Device


SIMULATOR_CERTS = Path(".gridgate/opcua-sim")


@implementer(IDriverPlugin, ISimulatorPlugin, ICommandPlugin)
class OpcUaPlugin:
    """Validation, drivers and simulator for OPC UA devices."""

    name = "opcua"
    profile_model = OpcUaProfile
    connection_model = OpcUaConnection

    def prepare(self, connection: OpcUaConnection, folder: Path) -> OpcUaConnection:
        """Certificate, key and trust folder resolved against the site file's folder."""
        security = connection.security
        paths = {key: str((folder / value).resolve()) for key in ("certificate", "private_key_file", "trust")
                 if (value := getattr(security, key)) is not None}
        return connection.model_copy(update={"security": security.model_copy(update=paths)})

    def profile_problems(self, profile: ProfileSpec) -> list[Problem]:
        """Two points on one node (same namespace URI and identifier)."""
        assert isinstance(profile, OpcUaProfile)
        seen: dict[tuple[str, str], str] = {}
        problems: list[Problem] = []
        for index, point in enumerate(profile.points):
            key = (profile.namespace_of(point), point.node)
            if key in seen:
                problems.append((("points", index, "node"), f"{point.id!r} reads the node of {seen[key]!r} ({point.node})"))
            seen.setdefault(key, point.id)
        return problems

    def site_problems(self, devices: Sequence[Device]) -> list[tuple[str, str]]:
        """Certificate, key and trust folder that cannot be used (devices on one server do not
        clash: each has its own session)."""
        return [(device.name, problem) for device in devices
                for problem in security_problems(device.connection.security)]  # type: ignore[attr-defined]

    def load_summary(self, devices: Sequence[Device]) -> str:
        """Monitored items and read points."""
        points = [p for d in devices for p in d.profile.points]
        read = sum(1 for p in points if getattr(p, "mode", "subscribe") == "read")
        return f"{len(points) - read} monitored items, {read} read points"

    def device_summary(self, device: Device) -> str:
        """Publishing interval and security."""
        connection: OpcUaConnection = device.connection  # type: ignore[assignment]
        security = connection.security
        secured = "no security" if security.policy == "None" else f"{security.policy} {security.mode}"
        return f"subscribed every {connection.publishing_interval_ms} ms at {connection.endpoint}, {secured}"

    def build(self, devices: Sequence[Device], sink: ISampleSink, reactor: Any,
              metrics: Metrics | None = None) -> list[IDriver]:
        """One driver (one session) per device."""
        return [OpcUaDriver(device, sink, reactor, metrics) for device in devices]

    def add_commands(self, subparsers: Any) -> None:
        """``gridgate opcua browse``."""
        add_browse_command(subparsers)

    def simulator(self, devices: Sequence[Device], reactor: Any) -> ISimulator:
        """Simulated servers on the endpoints the site names; their certificates kept in
        ``.gridgate/opcua-sim/`` of the working folder, so a gateway trusts them across restarts."""
        return OpcUaSimulator(devices, reactor, cert_dir=SIMULATOR_CERTS)


DRIVER = OpcUaPlugin()
