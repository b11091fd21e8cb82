"""One Modbus connection (TCP socket or serial line) with one request in flight.

pymodbus' async client does not serialise callers (its docs say so), keeps one timeout per
client and reconnects on its own schedule. Devices sharing a bus need their own timeouts and a
queue where commands overtake polls, so this module owns those three things:

* ``PriorityGate`` hands the bus to one request at a time, command requests first;
* ``ModbusLink.call`` sets the requesting device's timeout for that one request, retries it,
  checks the reply against the request before anyone decodes it (``replycheck``, on the bytes
  ``wireframe`` keeps), and turns pymodbus' outcomes into the gateway's typed errors;
* connecting is done here with exponential backoff (pymodbus' own reconnect is disabled), so a
  dead TCP peer costs no time on the bus between attempts.
"""

import asyncio
import logging
from collections import deque
from typing import Any, Callable

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsRequest, ReadDiscreteInputsRequest
from pymodbus.pdu.register_message import ReadHoldingRegistersRequest, ReadInputRegistersRequest
from twisted.internet.interfaces import IReactorTime

from drivers.modbus.profile import ModbusConnection, Table
from drivers.modbus.replycheck import Frame, check_reply
from drivers.modbus.wireframe import Heard, Undecodable, WatchingRtuFramer, WatchingSocketFramer, install
from gateway.errors import BadReply, DeviceError, DeviceException, DeviceGarbage, DeviceTimeout
from gateway.retry import Backoff

log = logging.getLogger(__name__)
# pymodbus logs every timeout at ERROR with a traceback; the driver reports failures itself, once.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 8.0  # under the poller's 10 s probe period, so a probe is never turned away by the backoff


class PriorityGate:
    """An asyncio lock whose waiters are served commands first, then polls, each in FIFO order."""

    def __init__(self) -> None:
        self._busy = False
        self._waiters: tuple[deque[asyncio.Future], deque[asyncio.Future]] = (deque(), deque())

    async def acquire(self, priority: bool) -> None:
        """Wait for the bus; ``priority`` requests (commands) overtake queued polls."""
        if not self._busy:
            self._busy = True
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[0 if priority else 1].append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()
            else:
                self._waiters[0 if priority else 1].remove(waiter)
            raise

    def release(self) -> None:
        """Give the bus to the next waiter, or mark it free."""
        for queue in self._waiters:
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self._busy = False

    @property
    def waiting(self) -> int:
        """Requests queued behind the one in flight."""
        return len(self._waiters[0]) + len(self._waiters[1])


_READ_REQUESTS: dict[str, Callable[..., ModbusPDU]] = {
    "coil": ReadCoilsRequest, "discrete": ReadDiscreteInputsRequest,
    "holding": ReadHoldingRegistersRequest, "input": ReadInputRegistersRequest}


def read_request(table: Table, start: int, count: int, unit: int) -> ModbusPDU:
    """The read request (FC1-4) for ``count`` registers or bits of ``table`` from ``start``."""
    return _READ_REQUESTS[table](address=start, count=count, dev_id=unit)


def make_client(connection: ModbusConnection) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
    """A pymodbus client for the link, with its own retries and reconnects switched off."""
    framer = FramerType.RTU if connection.framing == "rtu" else FramerType.SOCKET
    if connection.serial is not None:
        return AsyncModbusSerialClient(
            connection.serial, framer=framer, baudrate=connection.baudrate, parity=connection.parity,
            stopbits=connection.stopbits, timeout=1.0, retries=0, reconnect_delay=0)
    return AsyncModbusTcpClient(connection.host or "", port=connection.port, framer=framer,
                                timeout=1.0, retries=0, reconnect_delay=0)


class ModbusLink:
    """A connection shared by every device on one bus."""

    def __init__(self, connection: ModbusConnection, name: str,
                 reactor: IReactorTime, client_factory: Callable[..., Any] = make_client) -> None:
        self.name = name
        self.gate = PriorityGate()
        self._connection = connection
        self._client_factory = client_factory
        self._client: Any = None
        self._framer: WatchingSocketFramer | WatchingRtuFramer | None = None
        self._reactor_seconds = reactor.seconds
        self._backoff = Backoff(reactor, BACKOFF_START_S, BACKOFF_MAX_S)
        self.requests = 0
        self.ignored_frames = 0  # frames for another unit or transaction, bad CRCs, garbage

    async def call(self, device: str, timeout_s: float, retries: int, priority: bool,
                   request: ModbusPDU) -> ModbusPDU:
        """Send ``request`` alone on the bus; its reply, checked against it, or a typed DeviceError.

        A reply that fails a check raises ``BadReply`` at once (it is not retried: the device
        answered, wrongly); only silence is retried.
        """
        await self.gate.acquire(priority)
        try:
            await self._ensure_connected(device, timeout_s)
            self._set_timeout(timeout_s)
            sent = bytes([request.function_code]) + request.encode()
            heard = self._heard()
            for attempt in range(retries + 1):
                self.requests += 1
                heard.clear()
                try:
                    reply = await self._client.execute(False, request)
                except ModbusIOException as exc:
                    if attempt == retries:
                        raise self._unanswered(device, sent[0], timeout_s, retries) from exc
                    continue
                except ConnectionException as exc:
                    raise DeviceError(device, f"connection lost: {exc}") from exc
                except ModbusException as exc:
                    raise DeviceGarbage(device, str(exc)) from exc
                finally:
                    self.ignored_frames += len(heard.skipped)
                return self._checked(device, Frame(request.dev_id, request.transaction_id, sent), reply)
            raise AssertionError("unreachable: the last attempt returns or raises")
        finally:
            self.gate.release()

    def _heard(self) -> Heard:
        assert self._framer is not None, "installed with the client"
        return self._framer.heard

    def _unanswered(self, device: str, fc: int, timeout_s: float, retries: int) -> DeviceError:
        """No reply accepted: silence, or (counted under its own cause) frames that were not one."""
        heard = self._heard()
        what = f"no reply to FC{fc} within {timeout_s:g} s ({retries + 1} attempt(s))"
        if heard.skipped:
            cause = heard.skipped[-1][0]
            return BadReply(device, cause, f"{what}; ignored " + ", ".join(w for _, w in heard.skipped))
        if heard.unframed:
            return BadReply(device, "unframed", f"{what}; {heard.unframed} byte(s) arrived that make no frame")
        return DeviceTimeout(device, what)

    def _checked(self, device: str, request: Frame, reply: ModbusPDU) -> ModbusPDU:
        """The reply, once it is known to answer the request; ``DeviceException`` for an exception reply."""
        wire = getattr(reply, "wire", b"")
        got = Frame(reply.dev_id, reply.transaction_id, wire)
        mismatch = check_reply(device, request, got, mbap=isinstance(self._framer, WatchingSocketFramer))
        if mismatch is not None:
            raise mismatch
        if isinstance(reply, Undecodable):
            raise BadReply(device, "undecodable", f"reply to FC{request.pdu[0]}: {wire.hex(' ')} does not decode")
        if reply.isError():
            raise DeviceException(device, reply.exception_code)
        return reply

    def _set_timeout(self, timeout_s: float) -> None:
        """The requesting device's timeout, for this one request (pymodbus keeps one per client).

        The transaction manager reads its own copy of the parameters (``ctx.comm_params``);
        pymodbus is pinned exactly, so relying on that attribute is safe.
        """
        self._client.ctx.comm_params.timeout_connect = timeout_s

    async def _ensure_connected(self, device: str, timeout_s: float) -> None:
        if self._client is None:  # pymodbus clients can only be built inside the running loop
            self._client = self._client_factory(self._connection)
            self._framer = install(self._client)
        if self._client.connected:
            return
        if not self._backoff.due():
            raise DeviceError(device, f"{self.name} not connected (next attempt in "
                                      f"{self._backoff.remaining():.1f} s)")
        self._set_timeout(timeout_s)
        started = self._reactor_seconds()
        if await self._client.connect():
            if self._backoff.attempts:
                log.info("%s: connected again", self.name)
            self._backoff.succeeded()
            return
        if not self._backoff.attempts:
            log.warning("%s: cannot connect; retrying with backoff up to %g s", self.name, BACKOFF_MAX_S)
        self._backoff.failed(since=started)
        raise DeviceError(device, f"{self.name} not connected")

    def close(self) -> None:
        """Close the connection, if one was ever made."""
        if self._client is not None:
            self._client.close()
