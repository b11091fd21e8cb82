"""Simulated framed-serial devices from the same profiles: on a serial port (the far end of a pty
pair, as ``socat`` or ``gateway.simulation.ptypair`` makes) or listening on TCP like a serial
server; devices with the same port or address share it, as drops of one RS-485 line.

A request is recognised by its octets (the frame the driver would send for that device and
message) and answered with the message's payload built by the profile's fields (``fields``), the
match octets written in, framed by ``framing.build``; a streamed message goes out every
``period_s`` by itself. Values come from the shared value engine.

Faults on demand (``fault``), per device: ``bad_checksum`` (answers with the checksum broken),
``truncated`` (answers cut in half), ``garbage`` (``chunks`` of noise before each answer, default
1: random octets, some ending in the start octets or in the head of a real frame; counted in
``garbage_chunks``), ``silence`` (no answer, nothing streamed), ``late`` (each answer ``delay_s``
late, default 0.5 s: after the master's timeout), for an FBG interrogator
``missing_peak`` and ``double_peak`` (the first grating's peak gone, or doubled), ``healthy``.
"""

import logging
import random
from dataclasses import dataclass, field
from typing import Any, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from zope.interface import implementer

from drivers.serial_framed.driver import match_octets, request_frame
from drivers.serial_framed.fbg import Grating, PeakTable
from drivers.serial_framed.fields import MessageLayout
from drivers.serial_framed.framing import FrameFormat, build
from drivers.serial_framed.profile import FramedConnection, FramedProfile, MessageSpec
from gateway.interfaces import ISimulator
from gateway.model import Device, Value
from gateway.simulation.simvalues import ValueEngine

log = logging.getLogger(__name__)

FAULT_KINDS = ("bad_checksum", "truncated", "garbage", "silence", "late", "missing_peak", "double_peak", "healthy")


@dataclass
class SimulatedFramedDevice:
    """One device: its values, its messages' layouts and the requests it answers."""

    device: Device
    engine: ValueEngine
    fmt: FrameFormat
    fault: str = "healthy"
    delay_s: float = 0.5
    chunks: int = 1  # garbage chunks before each answer
    garbage_chunks: int = 0  # sent so far
    layouts: dict[str, MessageLayout] = field(default_factory=dict)
    served: dict[str, Value] = field(default_factory=dict)

    @property
    def profile(self) -> FramedProfile:
        return self.device.profile  # type: ignore[return-value]

    @property
    def address(self) -> int:
        return self.device.connection.address  # type: ignore[attr-defined]

    def requests(self) -> dict[bytes, MessageSpec]:
        """The frames this device answers, by their octets."""
        return {request_frame(self.fmt, m, self.address): m for m in self.profile.messages if m.request is not None}

    def reply(self, message: MessageSpec) -> bytes:
        """The message's frame with the values served now."""
        layout = self.layouts.setdefault(message.name, self.profile.layout(message.name))
        values = {p.id: self.served[p.id] for p in self.profile.points if p.message == message.name and p.at is not None}
        marker = match_octets(self.fmt, message, self.address)
        payload = bytearray(layout.payload(values, self._size(layout, message, len(marker))))
        gratings = self.profile.gratings(message.name)
        if gratings is not None:
            payload = self._with_peaks(payload, layout, *gratings)
        if message.match is not None:
            payload[message.match.at:message.match.at + len(marker)] = marker
        return build(self.fmt, bytes(payload))

    def _with_peaks(self, fields: bytearray, layout: MessageLayout, table: PeakTable,
                    gratings: list[Grating]) -> bytearray:
        """The peak table of the gratings' served temperatures, the fields written over it."""
        payload = bytearray(table.payload(self.peaks(table.channels, gratings), len(fields)))
        for field_ in layout.fields:
            payload[field_.at:field_.at + field_.size] = fields[field_.at:field_.at + field_.size]
        return payload

    def peaks(self, channels: int, gratings: list[Grating]) -> list[list[float]]:
        """Each channel's peaks for the served temperatures (a reference's shift added to the
        gratings that subtract it); the ``missing_peak`` and ``double_peak`` faults applied to the
        first grating that is nobody's reference."""
        by_point = {g.point: g for g in gratings}
        shift = {g.point: g.shift_for(float(self.served[g.point])) for g in gratings}  # type: ignore[arg-type]
        table: list[list[float]] = [[] for _ in range(channels)]
        references = {g.reference for g in gratings}
        faulted = next((g.point for g in gratings if g.point not in references), None)
        for grating in gratings:
            wavelength = grating.base_nm + shift[grating.point]
            if grating.reference is not None:
                wavelength += shift[grating.reference] if grating.reference in by_point else 0.0
            if grating.point == faulted and self.fault == "missing_peak":
                continue
            table[grating.channel - 1].append(wavelength)
            if grating.point == faulted and self.fault == "double_peak":
                table[grating.channel - 1].append(wavelength + 0.01)
        return [sorted(channel) for channel in table]

    def _size(self, layout: MessageLayout, message: MessageSpec, marker: int) -> int:
        """The reply's payload size: the match's length, else room for the fields, the length
        field and the match octets."""
        if message.match is not None and message.match.length is not None:
            return message.match.length
        length = self.fmt.length
        header = length.offset + length.size - len(self.fmt.start) if length and self.fmt.encoding == "binary" else 0
        return max(layout.length, header, message.match.at + marker if message.match else 0)


class _Line(Protocol):
    """One serial port or TCP connection of an endpoint."""

    def __init__(self, endpoint: "Endpoint") -> None:
        self.endpoint = endpoint
        self._buffer = b""

    def connectionMade(self) -> None:
        self.endpoint.lines.append(self)

    def connectionLost(self, reason: Any = None) -> None:
        if self in self.endpoint.lines:
            self.endpoint.lines.remove(self)

    def dataReceived(self, data: bytes) -> None:
        self._buffer = (self._buffer + data)[-8192:]
        while True:
            found = self.endpoint.find_request(self._buffer)
            if found is None:
                return
            end, device, message = found
            self._buffer = self._buffer[end:]
            self.endpoint.answer(self.transport, device, message)


class Endpoint:
    """A serial port or TCP address, and the devices answering on it."""

    def __init__(self, connection: FramedConnection, reactor: Any, rng: random.Random) -> None:
        self.connection = connection
        self.devices: list[SimulatedFramedDevice] = []
        self.lines: list[_Line] = []
        self._reactor, self._rng = reactor, rng
        self._listening: Any = None
        self._requests: dict[bytes, tuple[SimulatedFramedDevice, MessageSpec]] = {}

    def add(self, device: SimulatedFramedDevice) -> None:
        self.devices.append(device)
        for octets_, message in device.requests().items():
            self._requests[octets_] = (device, message)

    def find_request(self, buffer: bytes) -> tuple[int, SimulatedFramedDevice, MessageSpec] | None:
        """The earliest complete request in ``buffer``: where it ends, whose it is."""
        best: tuple[int, SimulatedFramedDevice, MessageSpec] | None = None
        for request, (device, message) in self._requests.items():
            at = buffer.find(request)
            if at >= 0 and (best is None or at + len(request) < best[0]):
                best = (at + len(request), device, message)
        return best

    def answer(self, transport: Any, device: SimulatedFramedDevice, message: MessageSpec) -> None:
        if device.fault == "silence":
            return
        frame = self.faulty(device, device.reply(message))
        if device.fault == "late":
            self._reactor.callLater(device.delay_s, transport.write, frame)
        else:
            transport.write(frame)

    def faulty(self, device: SimulatedFramedDevice, frame: bytes) -> bytes:
        """The frame as the device's fault has it."""
        if device.fault == "bad_checksum":
            return frame[:-1 - len(device.fmt.end)] + bytes([frame[-1 - len(device.fmt.end)] ^ 0x5A]) + device.fmt.end
        if device.fault == "truncated":
            return frame[:len(frame) // 2]
        if device.fault == "garbage":
            return b"".join(self._garbage(device, frame) for _ in range(device.chunks)) + frame
        return frame

    def _garbage(self, device: SimulatedFramedDevice, frame: bytes) -> bytes:
        """One chunk of line noise: random octets, now and then the start octets or the first part
        of a real frame in them (the hardest case: a frame's head with no tail)."""
        device.garbage_chunks += 1
        noise = bytes(self._rng.randrange(256) for _ in range(self._rng.randrange(0, 40)))
        kind = self._rng.randrange(3)
        if kind == 1:
            return noise + device.fmt.start
        if kind == 2:
            return noise + frame[:self._rng.randrange(1, len(frame))]
        return noise

    def stream(self) -> None:
        """Every streamed message of every device, to every line."""
        for device in self.devices:
            if device.fault == "silence":
                continue
            for message in device.profile.messages:
                if message.request is None:
                    frame = self.faulty(device, device.reply(message))
                    for line in self.lines:
                        line.transport.write(frame)

    def open(self) -> None:
        if self.connection.serial is not None:
            from twisted.internet.serialport import SerialPort
            SerialPort(_Line(self), self.connection.serial, self._reactor, baudrate=self.connection.baudrate)
        else:
            factory = Factory.forProtocol(lambda: _Line(self))
            self._listening = self._reactor.listenTCP(self.connection.port, factory, interface=self.connection.host)

    def close(self) -> None:
        if self._listening is not None:
            self._listening.stopListening()
        for line in list(self.lines):
            line.transport.loseConnection()


@implementer(ISimulator)
class FramedSimulator:
    """Every framed-serial device of a site, on the port or address its connection names."""

    def __init__(self, devices: Sequence[Device], reactor: Any, period_s: float = 0.5, seed: int = 0) -> None:
        self._reactor = reactor
        rng = random.Random(seed)
        self._endpoints: dict[tuple, Endpoint] = {}
        self._devices: dict[str, SimulatedFramedDevice] = {}
        for device in devices:
            connection: FramedConnection = device.connection  # type: ignore[assignment]
            profile: FramedProfile = device.profile  # type: ignore[assignment]
            endpoint = self._endpoints.setdefault(connection.bus, Endpoint(connection, reactor, rng))
            texts = {p.id: "" for p in profile.points if p.type == "ascii"}  # the engine's numbers are no text
            simulated = SimulatedFramedDevice(device, ValueEngine(profile, seed, texts), profile.framing.frame_format())
            endpoint.add(simulated)
            self._devices[device.name] = simulated
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = reactor
        self._period_s = period_s

    def start(self) -> Deferred:
        """Serve the first values, open every port and listener, tick."""
        self._step()
        for endpoint in self._endpoints.values():
            endpoint.open()
        self._ticker.start(self._period_s, now=False)
        return succeed(None)

    def stop(self) -> Deferred:
        """Stop ticking, close every port and listener."""
        if self._ticker.running:
            self._ticker.stop()
        for endpoint in self._endpoints.values():
            endpoint.close()
        return succeed(None)

    def _step(self) -> None:
        now = self._reactor.seconds()
        for simulated in self._devices.values():
            simulated.served.update(simulated.engine.step(now))

    def _tick(self) -> None:
        self._step()
        for endpoint in self._endpoints.values():
            endpoint.stream()

    def fault(self, device: str, kind: str, **options: Any) -> Deferred:
        """Make a device misbehave (module docstring); ValueError for an unknown kind."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; kinds: {', '.join(FAULT_KINDS)}")
        self._devices[device].fault = kind
        self._devices[device].delay_s = float(options.get("delay_s", 0.5))
        self._devices[device].chunks = int(options.get("chunks", 1))
        return succeed(None)

    def garbage_sent(self, device: str) -> int:
        """Chunks of noise the ``garbage`` fault has sent for ``device`` so far."""
        return self._devices[device].garbage_chunks

    def value(self, device: str, point: str) -> Value:
        """The engineering value served now."""
        return self._devices[device].served[point]

    def set_value(self, device: str, point: str, value: Value) -> None:
        """Serve ``value`` from now on; ValueError when the point's field cannot carry it."""
        simulated = self._devices[device]
        spec = simulated.profile.point(point)
        simulated.profile.layout(spec.message).payload({point: value})  # raises when it does not fit
        simulated.engine.set(point, value)
        simulated.served[point] = value
