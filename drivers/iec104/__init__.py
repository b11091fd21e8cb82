"""Downstream IEC 60870-5-104 stations (booster-station RTUs, protection relays, PV collectors),
the gateway as their master, on c104's client.

``DRIVER`` is the plugin the core finds through the ``gridgate.drivers`` entry point. It loads
c104 (its C library and threads) only when a site has such a station: ``build`` and
``simulator`` import the driver and the simulator, the rest needs only the models.
"""

from pathlib import Path
from typing import Any, Sequence

from zope.interface import implementer

from drivers.iec104.profile import Iec104Connection, Iec104Profile
from gateway.config.profile import ProfileSpec
from gateway.config.source import Problem
from gateway.interfaces import IDriver, IDriverPlugin, ISampleSink, ISimulator, ISimulatorPlugin
from gateway.metrics import Metrics
from gateway.model import Device


@implementer(IDriverPlugin, ISimulatorPlugin)
class Iec104Plugin:
    """Validation, drivers and simulator for downstream IEC 104 stations."""

    name = "iec104"
    profile_model = Iec104Profile
    connection_model = Iec104Connection

    def prepare(self, connection: Iec104Connection, folder: Path) -> Iec104Connection:
        """Nothing in the connection names a file."""
        return connection

    def profile_problems(self, profile: ProfileSpec) -> list[Problem]:
        """The model checks one point per IOA already."""
        return []

    def site_problems(self, devices: Sequence[Device]) -> list[tuple[str, str]]:
        """Two devices on one station (host, port and common address): each would open its own link
        to an RTU that serves one master, and take the same IOAs."""
        seen: dict[tuple[str, int, int], str] = {}
        problems = []
        for device in devices:
            connection: Iec104Connection = device.connection  # type: ignore[assignment]
            key = (connection.host, connection.port, connection.common_address)
            if key in seen:
                problems.append((device.name, f"{connection.host}:{connection.port} common address "
                                              f"{connection.common_address} is already {seen[key]}'s"))
            seen.setdefault(key, device.name)
        return problems

    def load_summary(self, devices: Sequence[Device]) -> str:
        """Links and information objects."""
        return f"{len(devices)} station link(s), {sum(len(d.profile.points) for d in devices)} information objects"

    def device_summary(self, device: Device) -> str:
        """Where the station is, and how often it is interrogated."""
        connection: Iec104Connection = device.connection  # type: ignore[assignment]
        gi = f"GI every {connection.gi_every_s:g} s" if connection.gi_every_s else "GI after STARTDT only"
        return (f"master of {connection.host}:{connection.port} CA {connection.common_address}, {gi}, "
                f"time tags in {connection.wire_time_zone}")

    def build(self, devices: Sequence[Device], sink: ISampleSink, reactor: Any,
              metrics: Metrics | None = None) -> list[IDriver]:
        """One driver (one c104 client, one link) per station."""
        from drivers.iec104.driver import Iec104Driver
        return [Iec104Driver(device, sink, reactor, metrics) for device in devices]

    def simulator(self, devices: Sequence[Device], reactor: Any) -> ISimulator:
        """Simulated stations on the host:port each connection names."""
        from drivers.iec104.sim.server import Iec104Simulator
        return Iec104Simulator(devices, reactor)


DRIVER = Iec104Plugin()
