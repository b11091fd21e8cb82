"""Simulated Modbus devices serving the same profiles the gateway reads, with faults on demand.

One pymodbus server runs per distinct endpoint: a TCP (host, port, framing) triple, MBAP or RTU
framed, or a serial port carrying RTU. Devices with the same endpoint share that server as unit
ids of one ``SimDevice`` list, like drops of an RS-485 line or units behind a TCP gateway.

This module ties the parts together: ``ModbusSimulator`` groups the site's devices by endpoint
and steps every device's value engine on the reactor (a ``LoopingCall`` every ``period_s``).
Each device's register image, and how reads and writes are served from it, is in
``drivers.modbus.sim.device``; the faults, and the servers and endpoints that inject them, are in
``drivers.modbus.sim.faults``.
"""

import logging
from typing import Any, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from zope.interface import implementer

from drivers.modbus.profile import ModbusConnection, ModbusPoint
from drivers.modbus.sim.device import SimulatedDevice
from drivers.modbus.sim.faults import FAULT_KINDS, HEALTHY, Endpoint, Fault
from gateway.aio import as_deferred
from gateway.interfaces import ISimulator
from gateway.model import Device, Value
from gateway.simulation.simvalues import ValueEngine

log = logging.getLogger(__name__)

__all__ = ["FAULT_KINDS", "ModbusSimulator"]


@implementer(ISimulator)
class ModbusSimulator:
    """Every Modbus device of a site, simulated on the address its connection names."""

    def __init__(self, devices: Sequence[Device], reactor: Any, period_s: float = 0.5,
                 seed: int = 0) -> None:
        """Raises ValueError for two devices on one unit of one endpoint, or clashing framings."""
        self._reactor = reactor
        self._period_s = period_s
        self._devices: dict[str, SimulatedDevice] = {}
        self._endpoint_of: dict[str, Endpoint] = {}
        endpoints: dict[tuple, Endpoint] = {}
        for device in devices:
            connection: ModbusConnection = device.connection  # type: ignore[assignment]
            endpoint = endpoints.setdefault(connection.bus, Endpoint(connection))
            self._check_shared(device, endpoint)
            simulated = SimulatedDevice(device, seed)
            endpoint.units[connection.unit] = simulated
            self._devices[device.name] = simulated
            self._endpoint_of[device.name] = endpoint
        self._check_ports(list(endpoints.values()))
        self._endpoints = list(endpoints.values())
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = reactor

    @staticmethod
    def _check_shared(device: Device, endpoint: Endpoint) -> None:
        unit = device.connection.unit  # type: ignore[attr-defined]
        if unit in endpoint.units:
            raise ValueError(f"{device.name}: unit {unit} of {endpoint.connection.bus} is "
                             f"already simulated for {endpoint.units[unit].name}")

    @staticmethod
    def _check_ports(endpoints: list[Endpoint]) -> None:
        seen: dict[tuple, Endpoint] = {}
        for endpoint in endpoints:
            conn = endpoint.connection
            if endpoint.serial or conn.port == 0:
                continue
            other = seen.setdefault((conn.host, conn.port), endpoint)
            if other is not endpoint:
                raise ValueError(f"{conn.host}:{conn.port} cannot be both {conn.framing} and "
                                 f"{other.connection.framing} framed")

    def start(self) -> Deferred:
        """Serve first values, listen on every endpoint, then tick; fires once all listen."""
        self._tick()
        return as_deferred(self._open_all()).addCallback(self._start_ticking)

    def _start_ticking(self, _: object) -> None:
        self._ticker.start(self._period_s, now=False)

    async def _open_all(self) -> None:
        try:
            for endpoint in self._endpoints:
                endpoint.active = True
                await endpoint.settle()
        except BaseException:
            await self._close_all()
            raise

    def stop(self) -> Deferred:
        """Stop ticking, cancel delayed answers, close every listener and connection."""
        if self._ticker.running:
            self._ticker.stop()
        return as_deferred(self._close_all())

    async def _close_all(self) -> None:
        for endpoint in self._endpoints:
            endpoint.active = False
            await endpoint.settle()

    def _tick(self) -> None:
        now = self._reactor.seconds()
        for device in self._devices.values():
            try:
                device.serve(device.engine.step(now))
            except Exception:  # pylint: disable=broad-except
                log.exception("simulated %s: tick failed", device.name)

    def value(self, device: str, point: str) -> Value:
        """The engineering value the simulated device currently serves (as a client decodes it)."""
        return self._devices[device].served(point)

    def set_value(self, device: str, point: str, value: Value) -> None:
        """Give a point a value now, in the engine and in the registers served.

        A value the point's registers cannot carry (wrong kind, beyond its type and scale, the
        profile's 'not implemented' sentinel) raises ``codec.EncodeError``, a ValueError naming
        the point, and changes nothing: the caller (the control API) can say no, where a tick
        that meets such a value can only log it and keep the last register.
        """
        simulated = self._devices[device]
        spec = simulated.profile.point(point)
        assert isinstance(spec, ModbusPoint)
        simulated.check_value(spec, value)
        simulated.engine.set(point, value)
        simulated.serve_point(spec, value)

    def engine(self, device: str) -> ValueEngine:
        """The value engine of a device (for tests that steer behaviours directly)."""
        return self._devices[device].engine

    def port_of(self, device: str) -> int:
        """The TCP port the device listens on (the bound one when its site said port 0)."""
        endpoint = self._endpoint_of[device]
        if endpoint.serial:
            raise ValueError(f"{device} is on serial port {endpoint.connection.serial}")
        if endpoint.port == 0:
            raise RuntimeError(f"{device} is not listening yet")
        return endpoint.port

    def fault(self, device: str, kind: str, **kw: Any) -> Deferred:
        """Make a device misbehave (kinds: ``drivers.modbus.sim.faults``); fires once in effect.

        ``code`` (exception, default 4) and ``delay_s`` (slow, default 1.0) tune it. A new fault
        replaces the device's current one.
        """
        fault = Fault(kind, **kw)
        endpoint = self._endpoint_of[device]
        if kind == "disconnect" and endpoint.serial:
            raise ValueError(f"{device}: disconnect is a TCP fault; {device} is on a serial line")
        self._devices[device].fault = fault
        return as_deferred(endpoint.settle())

    def clear_fault(self, device: str) -> Deferred:
        """Make a device behave again; fires once it answers (listens again after disconnect)."""
        self._devices[device].fault = HEALTHY
        return as_deferred(self._endpoint_of[device].settle())
