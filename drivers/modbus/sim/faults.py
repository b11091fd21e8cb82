"""Faults of simulated Modbus devices, and the pymodbus servers and endpoints that inject them.

Split from ``drivers.modbus.sim.server`` because faults reach into pymodbus' per-connection
request handling, which the register image (``drivers.modbus.sim.device``) never needs to see.

The hook: **a subclass of the server's per-connection ``ServerRequestHandler``**, created by
overriding the server's ``callback_new_connection``. Its ``handle_request`` is replaced by one
that looks up the addressed unit's fault first. The parent reads ``self.last_pdu`` again after
its awaits, which mixes up answers once one is delayed; the replacement captures the request
first. It is private pymodbus API, acceptable because pymodbus is pinned exactly. Before a request
reaches the datastore, the handler also asks the device what its profile makes it refuse
(exception 01 for a function it lacks, 02 for an address it does not implement; see
``drivers.modbus.sim.device``).

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
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler

from drivers.modbus.profile import ModbusConnection

if TYPE_CHECKING:  # sim.device imports this module for HEALTHY
    from drivers.modbus.sim.device import SimulatedDevice

log = logging.getLogger("drivers.modbus.sim.server")  # one logger for the whole simulator

FAULT_KINDS = ("silence", "exception", "slow", "garbage", "disconnect")


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


HEALTHY = Fault("none")
_SILENT = Fault("silence")


class _FaultingHandler(ServerRequestHandler):
    """pymodbus' per-connection handler, answering as the addressed unit's fault dictates."""

    def handle_later(self) -> None:
        """Answer the request just decoded, in a task the endpoint can cancel on stop."""
        if self.last_pdu is not None:
            endpoint: Endpoint = self.server.endpoint
            endpoint.track(self.loop.create_task(self._answer(self.last_pdu, self.last_addr)))

    async def _answer(self, request: ModbusPDU, addr: tuple | None) -> None:
        endpoint: Endpoint = self.server.endpoint
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
        refused = self.server.endpoint.refusal(request)
        if refused is not None:
            return ExceptionResponse(request.function_code, refused)
        try:
            return await request.datastore_update(self.server.context, request.dev_id)
        except Exception:  # pylint: disable=broad-except
            log.exception("simulated unit %s: request %s failed", request.dev_id, request)
            return ExceptionResponse(request.function_code, ExcCodes.DEVICE_FAILURE)


class _TcpServer(ModbusTcpServer):
    """A TCP server whose connections are served by ``_FaultingHandler``."""

    endpoint: "Endpoint"

    def callback_new_connection(self) -> ServerRequestHandler:
        """One faulting handler per accepted connection."""
        return _FaultingHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class _SerialServer(ModbusSerialServer):
    """A serial (RTU) server whose line is served by ``_FaultingHandler``."""

    endpoint: "Endpoint"

    def callback_new_connection(self) -> ServerRequestHandler:
        """The faulting handler of the serial line."""
        return _FaultingHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class Endpoint:
    """One listening address (TCP) or serial port and the devices answering on it."""

    def __init__(self, connection: ModbusConnection) -> None:
        self.connection = connection
        self.serial = connection.serial is not None
        self.port = connection.port
        self.units: dict[int, SimulatedDevice] = {}
        self.server: _TcpServer | _SerialServer | None = None
        self.active = False  # between start and stop: listening unless disconnected
        self._tasks: set[asyncio.Task] = set()
        self._lock = asyncio.Lock()

    def fault_of(self, unit: int) -> Fault:
        """The fault of the device at ``unit``; units no device uses are silent."""
        device = self.units.get(unit)
        return device.fault if device is not None else _SILENT

    def refusal(self, request: ModbusPDU) -> ExcCodes | None:
        """What the addressed device's profile makes it refuse (01, 02), or None."""
        device = self.units.get(request.dev_id)
        return device.refusal(request) if device is not None else None

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
