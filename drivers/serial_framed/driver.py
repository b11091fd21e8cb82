"""The IDriver of one framed-serial bus: each device's messages polled (request, matching reply)
or taken as the device streams them, decoded by the profile's fields, published through
``DeviceHealth``.

A polled device runs its messages in profile order every ``poll_s`` (a message with ``every: N``
every Nth poll), each alone on the line, retried ``retries`` times; one poll is one batch. A reply
too short for the fields is garbage (the poll fails, nothing published from it): a frame that
passed its checksum can still be the wrong one. A device whose messages are all streamed has no
requests: each frame is published as it comes, and ``poll_s + timeout_s`` without one is a
silence failure (NT, then IV after ``offline_after``).
"""

import asyncio
import logging
from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from drivers.serial_framed.fbg import grating_values
from drivers.serial_framed.fields import MessageLayout, PayloadError
from drivers.serial_framed.framing import Frame, FrameFormat, build
from drivers.serial_framed.link import FramedLink
from drivers.serial_framed.profile import FramedConnection, FramedProfile, MessageSpec, octets, text_octets
from gateway.aio import as_deferred
from gateway.errors import CommandRejected, DeviceError, DeviceGarbage, DeviceTimeout
from gateway.health import DeviceHealth
from gateway.interfaces import IDriver, ISampleSink
from gateway.metrics import Metrics
from gateway.model import Command, Device, Quality, Value
from gateway.pollschedule import PollSchedule
from gateway.retry import Backoff

log = logging.getLogger(__name__)

PROBE_MAX_S = 10.0


def _substituted(text: str, address: int) -> str:
    return text.format(address=address)


def request_frame(fmt: FrameFormat, message: MessageSpec, address: int) -> bytes:
    """What goes on the line for a polled message: the framed payload; for ``length_prefixed``
    devices (an ASCII command answered with a length-prefixed binary body) the command as is."""
    assert message.request is not None
    text = _substituted(message.request, address)
    if fmt.encoding == "length_prefixed":
        return text_octets(text)
    return build(fmt, octets(text) if fmt.encoding in ("binary", "ascii_hex") else text_octets(text))


def match_octets(fmt: FrameFormat, message: MessageSpec, address: int) -> bytes:
    """The octets a reply to ``message`` holds at ``match.at`` (none without a match)."""
    if message.match is None:
        return b""
    text = _substituted(message.match.value, address)
    return octets(text) if fmt.encoding in ("binary", "ascii_hex") else text_octets(text)


def matcher(fmt: FrameFormat, message: MessageSpec, address: int) -> Callable[[Frame], bool]:
    """Whether a frame is this message's: its payload holds the match octets (and has the match's
    length, when given); any frame is, for a message without a match."""
    if message.match is None:
        return lambda frame: True
    expected = match_octets(fmt, message, address)
    start, end, length = message.match.at, message.match.at + len(expected), message.match.length
    if length is None:
        return lambda frame: frame.payload[start:end] == expected
    return lambda frame: len(frame.payload) == length and frame.payload[start:end] == expected


def failure_cause(exc: BaseException) -> str:
    """The health cause of a failed poll."""
    for kind, cause in ((DeviceTimeout, "timeout"), (DeviceGarbage, "garbage"), (DeviceError, "connection")):
        if isinstance(exc, kind):
            return cause
    return "internal"


class FramedPoller:
    """One device of a bus: its polled messages on a schedule, its streamed ones as they come."""

    def __init__(self, device: Device, link: FramedLink, fmt: FrameFormat, sink: ISampleSink, reactor: Any,
                 metrics: Metrics) -> None:
        self.device = device
        self.profile: FramedProfile = device.profile  # type: ignore[assignment]
        self.connection: FramedConnection = device.connection  # type: ignore[assignment]
        self.link = link
        address = self.connection.address
        self._layouts: dict[str, MessageLayout] = {m.name: self.profile.layout(m.name) for m in self.profile.messages}
        self._gratings = {m.name: self.profile.gratings(m.name) for m in self.profile.messages}
        self._metrics = metrics
        self._unmatched: dict[str, str] = {}  # fbg points IV now, with the reason logged
        self._polled = [(m, request_frame(fmt, m, address), matcher(fmt, m, address))
                        for m in self.profile.messages if m.request is not None]
        self.streamed = [(m, matcher(fmt, m, address)) for m in self.profile.messages if m.request is None]
        poll_s = self.connection.poll_s
        self.health = DeviceHealth(
            device.name, [p.id for p in self.profile.points], sink, reactor, self.connection.offline_after,
            Backoff(reactor, poll_s, max(PROBE_MAX_S, poll_s), spread=0.0),
            silence_s=None if self._polled else self.connection.value_age_s, metrics=metrics)
        self._round = 0
        skipped = metrics.counter("gridgate_skipped_polls_total",
                                  "ticks skipped because the previous poll still ran (overload)", device=device.name)
        self._schedule = PollSchedule(device.name, poll_s, self.poll, self.health, skipped, reactor)

    def start(self) -> None:
        """Streamed messages: listen now; polled ones: on their schedule (``PollSchedule``)."""
        self.health.start()
        if self._polled:
            self._schedule.start()

    async def stop(self) -> None:
        """Stop the schedule and wait for a poll in flight."""
        self.health.stop()
        await self._schedule.stop()

    async def poll(self) -> None:
        """Every message due this round, then one batch; never raises."""
        due = [entry for entry in self._polled if self._round % entry[0].every == 0]
        self._round += 1
        values: dict[str, tuple[Value, Quality]] = {}
        try:
            for message, request, matches in due:
                values.update(await self._transact(message, request, matches))
        except Exception as exc:  # pylint: disable=broad-except  # a device's octets must not kill the schedule
            self.health.failed(failure_cause(exc), exc)
            return
        self.health.good(values)

    async def _transact(self, message: MessageSpec, request: bytes,
                        matches: Callable[[Frame], bool]) -> dict[str, tuple[Value, Quality]]:
        for _ in range(self.connection.retries):
            try:
                return self.decoded(message.name, await self.link.transact(request, matches, self.connection.timeout_s))
            except DeviceTimeout:
                continue
        return self.decoded(message.name, await self.link.transact(request, matches, self.connection.timeout_s))

    def decoded(self, message: str, frame: Frame) -> dict[str, tuple[Value, Quality]]:
        """The message's point values from a frame (fields, then FBG gratings); DeviceGarbage for
        a payload too short."""
        try:
            values = self._layouts[message].values(frame.payload)
            gratings = self._gratings[message]
            if gratings is not None:
                table, points = gratings
                temperatures, reasons = grating_values(points, table.peaks(frame.payload))
                values.update(temperatures)
                self._note_unmatched(reasons)
            return values
        except PayloadError as exc:
            raise DeviceGarbage(self.device.name, f"message {message}: {exc}") from None

    def _note_unmatched(self, reasons: dict[str, str]) -> None:
        """Count each grating IV by its reason; log it once per episode."""
        for point, reason in reasons.items():
            self._metrics.counter("gridgate_fbg_unmatched_total", "grating readings IV, by reason",
                                  device=self.device.name, reason=reason).inc()
            if self._unmatched.get(point) != reason:
                log.warning("%s.%s: grating IV (%s)", self.device.name, point, reason.replace("_", " "))
        for point in set(self._unmatched) - set(reasons):
            log.info("%s.%s: grating matched again", self.device.name, point)
        self._unmatched = dict(reasons)

    def take(self, frame: Frame) -> bool:
        """A streamed frame: published if it is one of this device's messages."""
        for message, matches in self.streamed:
            if matches(frame):
                try:
                    self.health.good(self.decoded(message.name, frame))
                except DeviceGarbage as exc:
                    self.health.failed("garbage", exc)
                return True
        return False


@implementer(IDriver)
class FramedBusDriver:
    """Every device of one bus."""

    def __init__(self, link: FramedLink, fmt: FrameFormat, devices: Sequence[Device], sink: ISampleSink,
                 reactor: Any, metrics: Metrics | None = None) -> None:
        self.link = link
        metrics = metrics or Metrics()
        self.pollers = {d.name: FramedPoller(d, link, fmt, sink, reactor, metrics) for d in devices}
        self.devices = list(self.pollers)
        if any(p.streamed for p in self.pollers.values()):
            link.on_frame = self._streamed

    def _streamed(self, frame: Frame) -> None:
        if not any(poller.take(frame) for poller in self.pollers.values()):
            log.debug("%s: a frame no device of the bus claims: %s", self.link.name, frame.raw[:32].hex())

    def start(self) -> Deferred:
        """Open the line and start every device."""
        self.link.open()
        for poller in self.pollers.values():
            poller.start()
        return succeed(None)

    def stop(self) -> Deferred:
        """Stop every device, then close the line."""
        async def stop_all() -> None:
            await asyncio.gather(*(p.stop() for p in self.pollers.values()))
            self.link.close()
        return as_deferred(stop_all())

    def execute(self, command: Command) -> Deferred:
        """Framed-serial points are read-only (the profile refuses ``writable``): refused."""
        return fail(CommandRejected(f"{command.device}.{command.point}: framed-serial points are read-only"))

    def stats(self) -> dict[str, Any]:
        """The line's frame counters and each device's state."""
        return {"endpoint": self.link.name, "connected": self.link.is_open,
                "frames": self.link.stats(),
                "devices": {name: {"offline": p.health.offline, "failures": dict(p.health.causes)}
                            for name, p in self.pollers.items()}}
