"""One Modbus connection (TCP socket or serial line) with one request in flight.

pymodbus' async client does not serialise callers (its docs say so), keeps one timeout per
client and reconnects on its own schedule. Devices sharing a bus need their own timeouts and a
queue where commands overtake polls, so this module owns those three things:

* ``PriorityGate`` hands the bus to one request at a time, command requests first;
* ``ModbusLink.call`` sets the requesting device's timeout for that one request, retries it,
  and turns pymodbus' outcomes into the gateway's typed errors;
* connecting is done here with exponential backoff (pymodbus' own reconnect is disabled), so a
  dead TCP peer costs no time on the bus between attempts.
"""

import asyncio
import logging
import random
from collections import deque
from typing import Any, Awaitable, Callable

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from drivers.modbus.profile import ModbusConnection
from gateway.errors import DeviceError, DeviceException, DeviceGarbage, DeviceTimeout

log = logging.getLogger(__name__)
# pymodbus logs every timeout at ERROR with a traceback; the driver reports failures itself, once.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0


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
                 clock: Callable[[], float], client_factory: Callable[..., Any] = make_client) -> None:
        self.name = name
        self.gate = PriorityGate()
        self._connection = connection
        self._client_factory = client_factory
        self._client: Any = None
        self._clock = clock
        self._backoff = BACKOFF_START_S
        self._next_attempt = 0.0
        self._down_logged = False
        self.requests = 0

    async def call(self, device: str, timeout_s: float, retries: int, priority: bool,
                   request: Callable[[Any], Awaitable[Any]]) -> Any:
        """Run ``request(client)`` alone on the bus; its response PDU, or a typed DeviceError."""
        await self.gate.acquire(priority)
        try:
            await self._ensure_connected(device, timeout_s)
            self._set_timeout(timeout_s)
            for attempt in range(retries + 1):
                try:
                    self.requests += 1
                    return self._checked(device, await request(self._client))
                except ModbusIOException as exc:
                    if attempt == retries:
                        raise DeviceTimeout(device, f"no answer within {timeout_s:g} s "
                                                    f"({retries + 1} attempt(s))") from exc
                except ConnectionException as exc:
                    raise DeviceError(device, f"connection lost: {exc}") from exc
                except ModbusException as exc:
                    raise DeviceGarbage(device, str(exc)) from exc
        finally:
            self.gate.release()

    def _set_timeout(self, timeout_s: float) -> None:
        """The requesting device's timeout, for this one request (pymodbus keeps one per client).

        The transaction manager reads its own copy of the parameters (``ctx.comm_params``);
        pymodbus is pinned exactly, so relying on that attribute is safe.
        """
        self._client.ctx.comm_params.timeout_connect = timeout_s

    @staticmethod
    def _checked(device: str, response: Any) -> Any:
        if response.isError():
            raise DeviceException(device, getattr(response, "exception_code", 0))
        return response

    async def _ensure_connected(self, device: str, timeout_s: float) -> None:
        if self._client is None:  # pymodbus clients can only be built inside the running loop
            self._client = self._client_factory(self._connection)
        if self._client.connected:
            return
        now = self._clock()
        if now < self._next_attempt:
            raise DeviceError(device, f"{self.name} not connected (next attempt in "
                                      f"{self._next_attempt - now:.1f} s)")
        self._set_timeout(timeout_s)
        if await self._client.connect():
            if self._down_logged:
                log.info("%s: connected again", self.name)
            self._backoff, self._down_logged = BACKOFF_START_S, False
            return
        self._next_attempt = now + self._backoff * random.uniform(0.8, 1.2)
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)
        if not self._down_logged:
            log.warning("%s: cannot connect; retrying with backoff up to %g s", self.name, BACKOFF_MAX_S)
            self._down_logged = True
        raise DeviceError(device, f"{self.name} not connected")

    def close(self) -> None:
        """Close the connection, if one was ever made."""
        if self._client is not None:
            self._client.close()
