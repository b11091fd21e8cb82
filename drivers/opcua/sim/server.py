"""Simulated OPC UA devices serving the same profiles the gateway reads, with faults on demand.

One asyncua ``Server`` runs per distinct endpoint host:port (``endpoint``); devices on the same
endpoint share it, each one Object under Objects. ``OpcUaSimulator`` groups the site's devices,
steps every device's value engine on the reactor (a ``LoopingCall`` every ``period_s``) and
writes what changed into the nodes, server-side, with a Good status and the reactor's time as
source timestamp. A client's write to a writable node sets the engine, so ``follow`` points move.

Faults (``FAULT_KINDS``), for a device, or its endpoint for ``restart`` and ``stall``:

* ``status``: serve ``point`` with ``status=`` (a StatusCode, e.g. ``0x808D0000`` BadOutOfService)
  while its value keeps moving; ``status=0`` is Good again. A Bad status serves a null value, as
  the standard asks.
* ``remove_node``: delete ``point``'s node (subscribers get BadNodeIdUnknown); it stays deleted
  across restarts.
* ``restart``: stop the endpoint's server, listen again after ``down_s`` (default 1.0; at least
  the ~1.5 s a fresh server takes to build), with a new certificate if ``new_certificate=True``.
  The Deferred fires once it listens again.
* ``stall``: the endpoint's server hangs: its connections stay open, current and new ones (TCP
  accepts them) get no answer, while values keep moving inside. After ``for_s`` seconds, if
  given, it answers again by itself; otherwise ``healthy`` ends it. A restart ends it too.
* ``healthy``: clear the device's status faults, create its removed nodes again and end a stall
  of its endpoint. It ends the stall rather than a separate ``resume`` kind because a device on a
  stalled endpoint is not healthy: ``healthy`` stays the one way back to a device that answers.
"""

import logging
import tempfile
from pathlib import Path
from typing import Any, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from zope.interface import implementer

from drivers.opcua.profile import OpcUaConnection
from drivers.opcua.sim.device import SimulatedDevice
from drivers.opcua.sim.endpoint import Endpoint
from gateway.aio import as_deferred
from gateway.interfaces import ISimulator
from gateway.model import Device, Value
from gateway.simulation.simvalues import ValueEngine

log = logging.getLogger(__name__)

__all__ = ["FAULT_KINDS", "OpcUaSimulator"]

FAULT_KINDS = ("status", "remove_node", "restart", "stall", "healthy")


@implementer(ISimulator)
class OpcUaSimulator:
    """Every OPC UA device of a site, simulated on the endpoint its connection names."""

    def __init__(self, devices: Sequence[Device], reactor: Any, period_s: float = 0.5, seed: int = 0,
                 cert_dir: Path | None = None) -> None:
        """Writes each endpoint's certificate into ``cert_dir`` (default: a fresh temporary folder).

        Raises ValueError for two devices naming the same node on one endpoint, a starting value
        a node cannot carry, or one user name with two password variables on one endpoint.
        """
        self._reactor = reactor
        self._period_s = period_s
        self.cert_dir = cert_dir if cert_dir is not None else Path(tempfile.mkdtemp(prefix="gridgate-opcua-sim-"))
        self._devices: dict[str, SimulatedDevice] = {}
        self._endpoint_of: dict[str, Endpoint] = {}
        self._endpoints: dict[tuple[str, int], Endpoint] = {}
        for device in devices:
            connection = device.connection
            if not isinstance(connection, OpcUaConnection):
                raise ValueError(f"{device.name}: not an OPC UA connection")
            endpoint = self._endpoints.get(connection.host_port)
            if endpoint is None:
                endpoint = Endpoint(connection, self.cert_dir, reactor.seconds)
                self._endpoints[connection.host_port] = endpoint
            simulated = SimulatedDevice(device, seed)
            endpoint.add(simulated, connection)
            self._devices[device.name] = simulated
            self._endpoint_of[device.name] = endpoint
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = reactor

    def start(self) -> Deferred:
        """Tick, and build every server and listen; fires once all listen.

        Ticking starts first: building a server takes seconds, and the endpoints already
        listening serve moving values meanwhile (the others take the current ones when they listen).
        """
        self._ticker.start(self._period_s, now=True)
        return as_deferred(self._open_all())

    async def _open_all(self) -> None:
        try:
            for endpoint in self._endpoints.values():  # one at a time: builds contend for the GIL
                await endpoint.open()
                log.info("OPC UA simulator listening at %s; its certificate (for the gateway's trust folder): %s",
                         endpoint.url, endpoint.files.certificate)
        except BaseException:
            if self._ticker.running:
                self._ticker.stop()
            await self._close_all()
            raise

    def stop(self) -> Deferred:
        """Stop ticking and close every server (sessions dropped, pending restarts abandoned)."""
        if self._ticker.running:
            self._ticker.stop()
        return as_deferred(self._close_all())

    async def _close_all(self) -> None:
        for endpoint in self._endpoints.values():
            await endpoint.close()

    def _tick(self) -> None:
        now = self._reactor.seconds()
        changes = []
        for device in self._devices.values():
            try:
                changed = device.stage(device.engine.step(now))
            except Exception:  # pylint: disable=broad-except
                log.exception("simulated %s: tick failed", device.name)
                continue
            if changed:
                changes.append((device, changed))
        if changes:
            self._serve(changes)

    def _serve(self, changes: list[tuple[SimulatedDevice, list[str]]]) -> None:
        """Write changed points into their servers, logging (not raising) a failure."""
        async def write_all() -> None:
            for device, point_ids in changes:
                await self._endpoint_of[device.name].write(device, point_ids)
        as_deferred(write_all()).addErrback(lambda failure: log.error("serving values failed:\n%s",
                                                                       failure.getTraceback()))

    def value(self, device: str, point: str) -> Value:
        """The engineering value the device's node serves now (as a client scales it)."""
        return self._devices[device].served(point)

    def set_value(self, device: str, point: str, value: Value) -> None:
        """Serve ``value`` now; ValueError, changing nothing, when the point's node cannot carry it."""
        simulated = self._devices[device]
        simulated.serve(point, value)
        self._serve([(simulated, [point])])

    def engine(self, device: str) -> ValueEngine:
        """The value engine of a device (for tests that steer behaviours directly)."""
        return self._devices[device].engine

    def server_certificate(self, endpoint_host_port: tuple[str, int]) -> Path:
        """The DER file of the certificate the endpoint shows (put it into a client's trust folder)."""
        return self._endpoints[endpoint_host_port].files.certificate

    def regenerate_certificate(self, endpoint_host_port: tuple[str, int]) -> Path:
        """A new key and certificate for the endpoint, shown from its server's next start; the DER file."""
        return self._endpoints[endpoint_host_port].regenerate_certificate()

    def fault(self, device: str, kind: str, point: str | None = None, **options: Any) -> Deferred:
        """Make a device (or, for ``restart`` and ``stall``, its endpoint) misbehave; see the module's list.

        Fires once in effect. ValueError for an unknown kind, a missing ``point`` or option, a
        ``for_s`` not above 0; KeyError for a device or point the simulator does not serve;
        RuntimeError for a stall while the endpoint restarts.
        """
        simulated = self._devices[device]
        if kind in ("status", "remove_node"):
            return self._point_fault(simulated, kind, point, options)
        if kind == "restart":
            return as_deferred(self._endpoint_of[device].restart(float(options.get("down_s", 1.0)),
                                                                 bool(options.get("new_certificate", False))))
        if kind == "stall":
            return self._stall(device, options.get("for_s"))
        if kind == "healthy":
            return as_deferred(self._heal(simulated))
        raise ValueError(f"unknown fault {kind!r}; kinds: {', '.join(FAULT_KINDS)}")

    def _point_fault(self, device: SimulatedDevice, kind: str, point: str | None,
                     options: dict[str, Any]) -> Deferred:
        if point is None:
            raise ValueError(f"fault {kind} needs the point it affects")
        if point not in device.points:
            raise KeyError(f"{device.name} has no point {point!r}")
        if kind == "remove_node":
            return as_deferred(self._endpoint_of[device.name].remove(device, point))
        if "status" not in options:
            raise ValueError("fault status needs status=<StatusCode number>, e.g. 0x808D0000")
        return as_deferred(self._set_status(device, point, int(options["status"])))

    async def _set_status(self, device: SimulatedDevice, point: str, status: int) -> None:
        if status == 0:
            device.status.pop(point, None)
        else:
            device.status[point] = status
        await self._endpoint_of[device.name].write(device, [point])

    def _stall(self, device: str, for_s: Any) -> Deferred:
        if for_s is not None and not float(for_s) > 0:
            raise ValueError(f"fault stall: for_s must be above 0 seconds, got {for_s}")
        self._endpoint_of[device].stall(None if for_s is None else float(for_s))
        return succeed(None)

    async def _heal(self, device: SimulatedDevice) -> None:
        faulted, device.status = list(device.status), {}
        endpoint = self._endpoint_of[device.name]
        endpoint.resume()
        await endpoint.recreate(device)
        await endpoint.write(device, faulted)
