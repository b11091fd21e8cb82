"""Modbus TCP, Modbus RTU on a serial line, and RTU framed over TCP, on pymodbus.

``DRIVER`` is the plugin the core finds through the ``gridgate.drivers`` entry point; it also
adds ``gridgate discover`` (SunSpec devices, ``drivers.modbus.sunspec``).
"""

import time
from pathlib import Path
from typing import Any, Sequence

from zope.interface import implementer

from drivers.modbus.driver import ModbusBusDriver
from drivers.modbus.link import ModbusLink
from drivers.modbus.plan import plan_reads
from drivers.modbus.profile import ModbusConnection, ModbusPoint, ModbusProfile
from drivers.modbus.sim.server import ModbusSimulator
from drivers.modbus.sunspec.command import add_command as add_discover_command
from gateway.config.profile import ProfileSpec
from gateway.config.source import Problem
from gateway.interfaces import ICommandPlugin, IDriver, IDriverPlugin, ISampleSink, ISimulator, ISimulatorPlugin
from gateway.metrics import Metrics
from gateway.model import Device


@implementer(IDriverPlugin, ISimulatorPlugin, ICommandPlugin)
class ModbusPlugin:
    """Validation, drivers, simulator and ``gridgate discover`` for Modbus devices."""

    name = "modbus"
    profile_model = ModbusProfile
    connection_model = ModbusConnection

    def prepare(self, connection: ModbusConnection, folder: Path) -> ModbusConnection:
        """A serial port path is a device name, not a file of the site: nothing to resolve."""
        return connection

    def profile_problems(self, profile: ProfileSpec) -> list[Problem]:
        """Points past the end of the address space, two points claiming one register, or a
        ``scale_factor`` that names no plain int16 point.

        A bool-with-bit point may share its register with other bits and with a whole-register
        point (an alarm word and its bits); two whole-register points, or two points on the same
        bit, may not.
        """
        assert isinstance(profile, ModbusProfile)
        problems: list[Problem] = []
        taken: dict[tuple[str, int], list[int]] = {}
        by_id = {point.id: point for point in profile.points}
        for index, point in enumerate(profile.points):
            if point.scale_factor is not None and (problem := _scale_factor_problem(point.scale_factor, by_id)):
                problems.append((("points", index, "scale_factor"), problem))
            start = profile.pdu_address(point)
            if start < 0 or start + point.count > 65536:
                problems.append((("points", index, "address"),
                                 f"registers {start}..{start + point.count - 1} outside 0..65535 "
                                 f"(address_base {profile.modbus.address_base})"))
                continue
            clash = _first_clash(profile, index, taken)
            if clash:
                problems.append((("points", index, "address"), clash))
        return problems

    def site_problems(self, devices: Sequence[Device]) -> list[tuple[str, str]]:
        """Two devices answering on the same bus and unit id."""
        seen: dict[tuple, str] = {}
        problems = []
        for device in devices:
            connection: ModbusConnection = device.connection  # type: ignore[assignment]
            key = connection.bus + (connection.unit,)
            if key in seen:
                problems.append((device.name, f"same bus and unit id {connection.unit} as {seen[key]!r}"))
            seen.setdefault(key, device.name)
        return problems

    def load_summary(self, devices: Sequence[Device]) -> str:
        """Read requests per second the devices' register plans cost at their poll periods."""
        rate = sum(len(plan_reads(d.profile)) / d.connection.poll_s for d in devices)  # type: ignore[arg-type]
        return f"{rate:.1f} requests/s"

    def device_summary(self, device: Device) -> str:
        """The poll period."""
        return f"every {device.connection.poll_s:g} s"

    def build(self, devices: Sequence[Device], sink: ISampleSink, reactor: Any,
              metrics: Metrics | None = None) -> list[IDriver]:
        """One driver per bus: devices sharing a TCP endpoint or serial port share one link."""
        buses: dict[tuple, list[Device]] = {}
        for device in devices:
            buses.setdefault(device.connection.bus, []).append(device)  # type: ignore[attr-defined]
        drivers: list[IDriver] = []
        for bus, members in buses.items():
            link = ModbusLink(members[0].connection, _bus_name(bus), reactor)  # type: ignore[arg-type]
            drivers.append(ModbusBusDriver(link, members, sink, reactor, time.time, metrics))
        return drivers

    def simulator(self, devices: Sequence[Device], reactor: Any) -> ISimulator:
        """Simulated devices on the addresses the site names."""
        return ModbusSimulator(devices, reactor)

    def add_commands(self, subparsers: Any) -> None:
        """``gridgate discover``: find a SunSpec device's models and draft its profile."""
        add_discover_command(subparsers)


def _scale_factor_problem(name: str, by_id: dict[str, ModbusPoint]) -> str:
    """Why point ``name`` cannot be a scale factor: its raw int16 value is the exponent, so it
    must exist, be int16, and carry no scale, offset or scale factor of its own."""
    factor = by_id.get(name)
    if factor is None:
        return f"scale_factor {name!r} is no point of this profile"
    if factor.type != "int16":
        return f"scale_factor {name!r} is type {factor.type}; a scale factor is an int16 register (SunSpec sunssf)"
    if factor.scale != 1 or factor.offset != 0 or factor.scale_factor is not None:
        return f"scale_factor {name!r} must be a plain int16 (no scale, offset or scale_factor): its raw value is the exponent"
    return ""


def _first_clash(profile: ModbusProfile, index: int, taken: dict[tuple[str, int], list[int]]) -> str:
    point = profile.points[index]
    start = profile.pdu_address(point)
    clash = ""
    for register in range(start, start + point.count):
        owners = taken.setdefault((point.table, register), [])
        for other_index in owners:
            other = profile.points[other_index]
            if not clash and (point.bit is None) == (other.bit is None) and point.bit == other.bit:
                clash = (f"{point.id!r} overlaps {other.id!r} at {point.table} register "
                         f"{register + profile.modbus.address_base}")
        owners.append(index)
    return clash


def _bus_name(bus: tuple) -> str:
    return f"serial {bus[1]}" if bus[0] == "serial" else f"tcp {bus[1]}:{bus[2]}" + (" (rtu)" if bus[3] == "rtu" else "")


DRIVER = ModbusPlugin()
