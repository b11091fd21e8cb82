"""The IDriver of one Modbus bus: the pollers of its devices and the command path.

One TCP endpoint or one serial port is one bus; every device (unit id) on it shares the link,
so a command for any of them waits only for the request in flight, never for queued polls.

Commands go through the same ``ModbusLink.call`` as polls, so every reply to a write or a
read-back is checked against its request first: a wrong or short reply fails the command typed
(``BadReply``, ``DeviceException``, ``DeviceTimeout``), never as a read-back value.
"""

import asyncio
import logging
from typing import Any, Callable, Sequence

from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import WriteSingleCoilRequest
from pymodbus.pdu.register_message import WriteMultipleRegistersRequest, WriteSingleRegisterRequest
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from drivers.modbus.codec import EncodeError, encode, set_bit
from drivers.modbus.link import ModbusLink, read_request
from drivers.modbus.poller import DevicePoller
from drivers.modbus.profile import ModbusPoint
from gateway.aio import as_deferred
from gateway.errors import CommandFailed, CommandRejected, DeviceError, DeviceException
from gateway.interfaces import IDriver, ISampleSink
from gateway.metrics import Metrics
from gateway.model import Command, CommandResult, Device
from gateway.writecheck import check_readback, writable_point

log = logging.getLogger(__name__)


@implementer(IDriver)
class ModbusBusDriver:
    """Polls every device of one bus and executes commands for them."""

    def __init__(self, link: ModbusLink, devices: Sequence[Device], sink: ISampleSink, reactor: Any,
                 clock: Callable[[], float], metrics: Metrics | None = None) -> None:
        self.link = link
        self._clock = clock
        self.pollers = {d.name: DevicePoller(d, link, sink, reactor, metrics) for d in devices}
        self.devices = list(self.pollers)

    def start(self) -> Deferred:
        """Start every poller; connecting happens on the first request."""
        for poller in self.pollers.values():
            poller.start()
        return succeed(None)

    def stop(self) -> Deferred:
        """Stop the pollers, wait for polls in flight, close the link."""
        async def stop_all() -> None:
            await asyncio.gather(*(p.stop() for p in self.pollers.values()))
            self.link.close()
        return as_deferred(stop_all())

    def execute(self, command: Command) -> Deferred:
        """Write one point, read it back, compare; fires with a CommandResult or fails typed."""
        return as_deferred(self._execute(command))

    async def _execute(self, command: Command) -> CommandResult:
        poller = self.pollers.get(command.device)
        if poller is None:
            raise CommandRejected(f"{command.device}: not a device of {self.link.name}")
        point: ModbusPoint = writable_point(poller.profile, command)  # type: ignore[assignment]
        remaining = command.deadline - self._clock()
        if remaining <= 0:
            raise CommandRejected(f"{command.device}.{command.point}: deadline passed before writing")
        timeout = min(poller.connection.timeout_s, remaining)
        try:
            await self._write(poller, point, command.value, timeout)
        except DeviceException as exc:  # the device answered the write with an exception: not applied
            raise CommandFailed(f"{command.device}.{command.point}: write refused: {exc}", False) from exc
        except DeviceError as exc:  # sent, no valid acknowledgement (silence, a bad reply): it may have been applied
            raise CommandFailed(f"{command.device}.{command.point}: write not acknowledged: {exc}", None) from exc
        try:
            words = await self._read(poller, point, point.count, timeout)
            value, quality = poller.decode(point.id, words)
        except DeviceError as exc:
            raise CommandFailed(f"{command.device}.{command.point}: written, read-back failed: {exc}", True) from exc
        poller.publish_readback(point.id, value, quality)
        check_readback(command, point, value, quality)
        return CommandResult(command, value, self._clock())

    async def _write(self, poller: DevicePoller, point: ModbusPoint, value: Any, timeout: float) -> None:
        address, unit = poller.profile.pdu_address(point), poller.unit
        if point.table == "coil":
            await self._request(poller, timeout, WriteSingleCoilRequest(address=address, bits=[bool(value)],
                                                                        dev_id=unit))
            return
        if point.bit is not None:
            word = (await self._read(poller, point, 1, timeout))[0]
            words = [set_bit(word, point.bit, bool(value))]
        else:
            try:  # a scale-factored point with the exponent last read; refused if none is
                words = encode(point, poller.profile.order_of(point), value, poller.exponent(point.id))
            except EncodeError as exc:
                raise CommandRejected(str(exc)) from exc
        if len(words) == 1 and poller.profile.modbus.single_register_write == 6:
            await self._request(poller, timeout, WriteSingleRegisterRequest(address=address, registers=words,
                                                                            dev_id=unit))
        else:
            await self._request(poller, timeout, WriteMultipleRegistersRequest(address=address, registers=words,
                                                                               dev_id=unit))

    async def _read(self, poller: DevicePoller, point: ModbusPoint, count: int, timeout: float) -> list:
        """``count`` registers (or bits) from the point's address; the link checked their number."""
        request = read_request(point.table, poller.profile.pdu_address(point), count, poller.unit)
        response = await self._request(poller, timeout, request)
        return response.bits if point.table == "coil" else response.registers

    async def _request(self, poller: DevicePoller, timeout: float, request: ModbusPDU) -> ModbusPDU:
        return await self.link.call(poller.device.name, timeout, 0, True, request)

    def stats(self) -> dict[str, Any]:
        """Per-device poll counters and failed polls by cause, bus request count and queue depth."""
        return {"bus": self.link.name, "requests": self.link.requests, "queued": self.link.gate.waiting,
                "ignored_frames": self.link.ignored_frames,
                "devices": {name: dict(p.counters, offline=p.offline, failures=dict(p.causes))
                            for name, p in self.pollers.items()}}
