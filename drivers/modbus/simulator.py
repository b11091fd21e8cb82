"""Simulated Modbus devices serving the same profiles the gateway reads, with faults on demand.

One pymodbus server runs per distinct endpoint: a TCP (host, port, framing) triple, MBAP or RTU
framed, or a serial port carrying RTU. Devices with the same endpoint share that server as unit
ids of one ``SimDevice`` list, like drops of an RS-485 line or units behind a TCP gateway.

Values. Each device has a ``gateway.simvalues.ValueEngine``; a ``LoopingCall`` on the reactor
steps it every ``period_s`` and encodes every point with ``drivers.modbus.codec`` into the
device's own register image (one per table, coil/discrete/holding/input, each spanning the
profile's lowest to highest address so gap registers read as 0). A value the type cannot carry
is logged once per point, naming device and point, and the register keeps its last value.

The pymodbus hooks, and why these:

* **Data: the documented ``SimDevice(action=...)`` callback.** pymodbus awaits it on every
  register access, with the function code, the request address, the block's live register list
  ("modify inline") and, for writes, the values about to be stored. On every access the action
  copies the device's image into that list, so a request always sees the latest tick without
  reaching into pymodbus' runtime. On a write (FC 5/6/15/16, also 22/23) it checks that every
  written address belongs to a writable point (else exception 2), decodes each touched point
  from the image as it would be after the write, checks its limits (else exception 3), then
  stores the words and calls ``engine.set`` so follow/integrate behaviours react to setpoints.
* **Faults: a subclass of the server's per-connection ``ServerRequestHandler``**, created by
  overriding the server's ``callback_new_connection``. Its ``handle_request`` is replaced by one
  that looks up the addressed unit's fault first. The parent reads ``self.last_pdu`` again after
  its awaits, which mixes up answers once one is delayed; the replacement captures the request
  first. It is private pymodbus API, acceptable because pymodbus is pinned exactly.

Faults, per device (``fault(device, kind, **kw)``; ``clear_fault(device)``):

* ``silence``: the handler drops requests for the unit: no processing, no answer, while other
  units of the same endpoint answer. Unit ids no device uses are always silent (pymodbus alone
  would answer exception 4, stack-notes pitfall 8), as on a real RS-485 line.
* ``exception``: every request is answered with exception ``code`` (default 4) untouched.
* ``slow``: the answer is sent ``delay_s`` (default 1.0) late; the request executes then.
* ``garbage``: the real answer is built, then spoilt before sending: RTU (serial or over TCP)
  gets a wrong CRC; MBAP loses the last PDU byte with the MBAP length adjusted, so the frame is
  complete but its PDU does not decode. pymodbus clients report either as "no response".
* ``disconnect`` (TCP only): the endpoint's listener and every connection are closed, so new
  connections are refused; clearing listens again on the same port. It hits every unit on the
  endpoint, as pulling the cable of a TCP gateway would.
"""

import asyncio
import logging
import zlib
from dataclasses import dataclass
from typing import Any, Sequence

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from zope.interface import implementer

from drivers.modbus import codec
from drivers.modbus.profile import BIT_TABLES, ModbusConnection, ModbusPoint, ModbusProfile
from gateway.aio import as_deferred
from gateway.interfaces import Device, ISimulator
from gateway.model import Value
from gateway.simvalues import ValueEngine

log = logging.getLogger(__name__)

FAULT_KINDS = ("silence", "exception", "slow", "garbage", "disconnect")
TABLES = ("coil", "discrete", "holding", "input")  # the order of SimDevice's simdata tuple
_TABLE_OF_FUNCTION = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 4: "input",
                      3: "holding", 6: "holding", 16: "holding", 22: "holding", 23: "holding"}


@dataclass(frozen=True)
class Fault:
    """A misbehaviour of one simulated device."""

    kind: str
    code: int = int(ExcCodes.DEVICE_FAILURE)
    delay_s: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS + ("none",):
            raise ValueError(f"unknown fault {self.kind!r}; one of {', '.join(FAULT_KINDS)}")
        if not 1 <= self.code <= 255 or self.delay_s < 0:
            raise ValueError(f"fault {self.kind}: code 1..255 and delay_s >= 0 expected")


_HEALTHY = Fault("none")
_SILENT = Fault("silence")


class _Table:
    """One Modbus table of one device: the words (or bits) it serves, from ``base`` up."""

    def __init__(self, name: str, profile: ModbusProfile, points: list[ModbusPoint]) -> None:
        self.name, self.bits = name, name in BIT_TABLES
        self.points = points
        spans = [(profile.pdu_address(p), profile.pdu_address(p) + p.count) for p in points]
        self.low = min((s for s, _ in spans), default=0)
        high = max((e for _, e in spans), default=0)
        self.base = self.low - self.low % 16 if self.bits else self.low
        size = high - self.base
        self.data: list[int] = [0] * (-(-size // 16) * 16 if self.bits else size)
        self.writable_at = {a for (s, e), p in zip(spans, points) if p.writable for a in range(s, e)}

    def simdata(self) -> list[SimData]:
        """The pymodbus block declaring this table's addresses (an unusable stub if empty)."""
        if not self.points:
            kind = DataType.BITS if self.bits else DataType.INVALID
            return [SimData(address=0, count=16 if self.bits else 1, datatype=kind,
                            values=False if self.bits else 0)]
        count = len(self.data) - (self.low - self.base)
        if self.bits:
            return [SimData(address=self.low, count=count, values=False, datatype=DataType.BITS)]
        return [SimData(address=self.low, count=count, values=0, datatype=DataType.REGISTERS)]

    def registers(self) -> list[int]:
        """The table as pymodbus' block holds it: bit tables packed 16 to a register, bit 0 first."""
        if not self.bits:
            return self.data
        return [sum(1 << i for i, bit in enumerate(self.data[at:at + 16]) if bit)
                for at in range(0, len(self.data), 16)]


class _SimulatedDevice:
    """A device's engine, register image, fault, and the pymodbus action that serves them."""

    def __init__(self, device: Device, seed: int) -> None:
        assert isinstance(device.profile, ModbusProfile)
        self.name, self.profile = device.name, device.profile
        strings = {p.id: (p.name or p.id)[:2 * (p.length or 0)]
                   for p in self.profile.points if p.type == "string"}
        self.engine = ValueEngine(self.profile, seed=zlib.crc32(device.name.encode()) ^ seed,
                                  initial=strings)
        self.tables = {t: _Table(t, self.profile, [p for p in self.profile.points if p.table == t])
                       for t in TABLES}
        self.fault = _HEALTHY
        self._unencodable: set[str] = set()
        # whole registers first, so bits of an alarm word land on top of the word
        self._serve_order = sorted(self.profile.points, key=lambda p: p.bit is not None)

    def simdevice(self, unit: int) -> SimDevice:
        """The pymodbus datastore of this device; its action keeps it in step with the image."""
        return SimDevice(id=unit, simdata=tuple(self.tables[t].simdata() for t in TABLES),
                         action=self.on_access)

    def serve(self, values: dict[str, Value]) -> None:
        """Encode every point's engine value into the image."""
        for point in self._serve_order:
            self.serve_point(point, values[point.id])

    def serve_point(self, point: ModbusPoint, value: Value) -> None:
        """Encode one value; one it cannot carry is logged once and leaves the register as it was."""
        table = self.tables[point.table]
        at = self.profile.pdu_address(point) - table.base
        try:
            if point.bit is not None:
                words = [codec.set_bit(table.data[at], point.bit, bool(value))]
            else:
                words = codec.encode(point, self.profile.order_of(point), value)  # type: ignore[arg-type]
        except codec.EncodeError as exc:
            if point.id not in self._unencodable:
                self._unencodable.add(point.id)
                log.warning("simulated %s: point %s cannot serve %r: %s", self.name, point.id,
                            value, exc)
            return
        self._unencodable.discard(point.id)
        table.data[at:at + len(words)] = words

    def served(self, point_id: str) -> Value:
        """The engineering value a client reading the point gets now."""
        point = self.profile.point(point_id)
        assert isinstance(point, ModbusPoint)
        return self._decode(point, self.tables[point.table].data)

    def _decode(self, point: ModbusPoint, data: list[int]) -> Value:
        at = self.profile.pdu_address(point) - self.tables[point.table].base
        return codec.decode(point, self.profile.order_of(point), data[at:at + point.count])[0]

    async def on_access(self, function_code: int, _start: int, address: int, _count: int,
                        registers: list[int], values: list[int] | list[bool] | None
                        ) -> ExcCodes | None:
        """pymodbus' SimDevice action: take client writes, then expose the current image."""
        table = self.tables.get(_TABLE_OF_FUNCTION.get(function_code, ""))
        if table is None or not table.points:
            return ExcCodes.ILLEGAL_ADDRESS
        if values:
            refused = self._client_write(table, address, [int(v) for v in values])
            if refused:
                return refused
        current = table.registers()
        registers[:len(current)] = current
        return None

    def _client_write(self, table: _Table, address: int, words: list[int]) -> ExcCodes | None:
        """Check and apply a client write; the written points' new values go to the engine."""
        span = range(address, address + len(words))
        if any(a not in table.writable_at for a in span):
            return ExcCodes.ILLEGAL_ADDRESS
        after = list(table.data)
        after[address - table.base:address - table.base + len(words)] = words
        accepted: dict[str, Value] = {}
        for point in table.points:
            start = self.profile.pdu_address(point)
            if point.writable is None or start >= span.stop or start + point.count <= span.start:
                continue
            value = self._decode(point, after)
            if not isinstance(value, int | float) or \
                    not point.writable.min <= value <= point.writable.max:
                log.info("simulated %s: refused %s = %r (limits %g..%g)", self.name, point.id,
                         value, point.writable.min, point.writable.max)
                return ExcCodes.ILLEGAL_VALUE
            accepted[point.id] = value
        table.data[:] = after
        for point_id, value in accepted.items():
            self.engine.set(point_id, value)
        return None


class _FaultingHandler(ServerRequestHandler):
    """pymodbus' per-connection handler, answering as the addressed unit's fault dictates."""

    def handle_later(self) -> None:
        """Answer the request just decoded, in a task the endpoint can cancel on stop."""
        if self.last_pdu is not None:
            endpoint: _Endpoint = self.server.endpoint
            endpoint.track(self.loop.create_task(self._answer(self.last_pdu, self.last_addr)))

    async def _answer(self, request: ModbusPDU, addr: tuple | None) -> None:
        endpoint: _Endpoint = self.server.endpoint
        fault = endpoint.fault_of(request.dev_id)
        if fault.kind == "silence":
            return
        if fault.kind == "slow":
            await asyncio.sleep(fault.delay_s)
        if fault.kind == "exception":
            response: ModbusPDU = ExceptionResponse(request.function_code, fault.code)
        else:
            response = await self._execute(request)
        response.transaction_id, response.dev_id = request.transaction_id, request.dev_id
        if not self.transport:
            return  # the client left while the answer was delayed
        if fault.kind == "garbage":
            self.send(endpoint.spoil(self.framer.buildFrame(response)), addr)
        else:
            self.server_send(response, addr)

    async def _execute(self, request: ModbusPDU) -> ModbusPDU:
        try:
            return await request.datastore_update(self.server.context, request.dev_id)
        except Exception:  # pylint: disable=broad-except
            log.exception("simulated unit %s: request %s failed", request.dev_id, request)
            return ExceptionResponse(request.function_code, ExcCodes.DEVICE_FAILURE)


class _TcpServer(ModbusTcpServer):
    """A TCP server whose connections are served by ``_FaultingHandler``."""

    endpoint: "_Endpoint"

    def callback_new_connection(self) -> ServerRequestHandler:
        """One faulting handler per accepted connection."""
        return _FaultingHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class _SerialServer(ModbusSerialServer):
    """A serial (RTU) server whose line is served by ``_FaultingHandler``."""

    endpoint: "_Endpoint"

    def callback_new_connection(self) -> ServerRequestHandler:
        """The faulting handler of the serial line."""
        return _FaultingHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class _Endpoint:
    """One listening address (TCP) or serial port and the devices answering on it."""

    def __init__(self, connection: ModbusConnection) -> None:
        self.connection = connection
        self.serial = connection.serial is not None
        self.port = connection.port
        self.units: dict[int, _SimulatedDevice] = {}
        self.server: _TcpServer | _SerialServer | None = None
        self.active = False  # between start and stop: listening unless disconnected
        self._tasks: set[asyncio.Task] = set()
        self._lock = asyncio.Lock()

    def fault_of(self, unit: int) -> Fault:
        """The fault of the device at ``unit``; units no device uses are silent."""
        device = self.units.get(unit)
        return device.fault if device is not None else _SILENT

    def spoil(self, frame: bytes) -> bytes:
        """A frame that does not decode: wrong CRC (RTU), or a PDU one byte short (MBAP)."""
        if self.connection.framing == "rtu":
            return frame[:-1] + bytes([frame[-1] ^ 0xFF])
        pdu = frame[7:-1]
        return frame[:4] + (len(pdu) + 1).to_bytes(2, "big") + frame[6:7] + pdu

    def track(self, task: asyncio.Task) -> None:
        """Keep an answer task until it ends, so ``close`` can cancel it."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Listen, or not, as ``active`` and the devices' disconnect faults say."""
        async with self._lock:
            refuse = any(d.fault.kind == "disconnect" for d in self.units.values())
            if self.active and not refuse and self.server is None:
                await self._listen()
            elif (refuse or not self.active) and self.server is not None:
                await self._close()

    async def _listen(self) -> None:
        devices = [device.simdevice(unit) for unit, device in self.units.items()]
        conn = self.connection
        server: _TcpServer | _SerialServer
        if self.serial:
            server = _SerialServer(devices, framer=FramerType.RTU, port=conn.serial or "",
                                   baudrate=conn.baudrate, parity=conn.parity,
                                   stopbits=conn.stopbits)
        else:
            framer = FramerType.RTU if conn.framing == "rtu" else FramerType.SOCKET
            server = _TcpServer(devices, framer=framer, address=(conn.host or "", self.port))
        server.endpoint = self
        await server.serve_forever(background=True)
        self.server = server
        if not self.serial:
            self.port = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def _close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        server, self.server = self.server, None
        if server is not None:
            await server.shutdown()
        await asyncio.sleep(0)  # let the closed transports report connection_lost


@implementer(ISimulator)
class ModbusSimulator:
    """Every Modbus device of a site, simulated on the address its connection names."""

    def __init__(self, devices: Sequence[Device], reactor: Any, period_s: float = 0.5,
                 seed: int = 0) -> None:
        """Raises ValueError for two devices on one unit of one endpoint, or clashing framings."""
        self._reactor = reactor
        self._period_s = period_s
        self._devices: dict[str, _SimulatedDevice] = {}
        self._endpoint_of: dict[str, _Endpoint] = {}
        endpoints: dict[tuple, _Endpoint] = {}
        for device in devices:
            connection: ModbusConnection = device.connection  # type: ignore[assignment]
            endpoint = endpoints.setdefault(connection.bus, _Endpoint(connection))
            self._check_shared(device, endpoint)
            simulated = _SimulatedDevice(device, seed)
            endpoint.units[connection.unit] = simulated
            self._devices[device.name] = simulated
            self._endpoint_of[device.name] = endpoint
        self._check_ports(list(endpoints.values()))
        self._endpoints = list(endpoints.values())
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = reactor

    @staticmethod
    def _check_shared(device: Device, endpoint: _Endpoint) -> None:
        unit = device.connection.unit  # type: ignore[attr-defined]
        if unit in endpoint.units:
            raise ValueError(f"{device.name}: unit {unit} of {endpoint.connection.bus} is "
                             f"already simulated for {endpoint.units[unit].name}")

    @staticmethod
    def _check_ports(endpoints: list[_Endpoint]) -> None:
        seen: dict[tuple, _Endpoint] = {}
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
        """Give a point a value now, in the engine and in the registers served."""
        simulated = self._devices[device]
        simulated.engine.set(point, value)
        spec = simulated.profile.point(point)
        assert isinstance(spec, ModbusPoint)
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
        """Make a device misbehave (see the module docstring); fires once the fault is in effect.

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
        self._devices[device].fault = _HEALTHY
        return as_deferred(self._endpoint_of[device].settle())
