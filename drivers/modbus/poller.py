"""Polling one Modbus device: its schedule, its reads, and the quality of its points.

Quality follows the core's ``DeviceHealth`` (NT at the first failed poll, IV and ``_online``
False after ``offline_after``, fresh values at the first good poll); an offline device is probed
with backoff (poll period doubling up to ``PROBE_MAX_S``, ``gateway.retry``) so that it stops
costing bus time its neighbours need.

A block answered with a Modbus exception makes its own points IV while the device stays
online; an "illegal data address" on a merged read is retried point group by point group.

Nothing a device sends can escape a poll: a reply that fails its check (``replycheck``) fails
the poll like silence does, and so does any unexpected exception (a decoder meeting data it
did not expect, a bug): the poll task never dies with an exception nobody retrieves. Failed
polls are counted by cause (``failure_cause``). Each cause logs one WARNING per episode (an
episode runs from the first failed poll to the next good one, which logs one INFO), so a device
that fails every 100 ms for an hour writes a handful of lines, not 36,000 (``DeviceHealth``).

A tick that finds the previous poll still running is counted as skipped: under overload the
gateway polls less often, it never builds a backlog.

A point with ``scale_factor`` is finished after its poll's blocks are read, with the exponent
read in the same poll: an exponent that is IV (not implemented, or its block refused) makes the
point IV with its last value, never a number scaled by a stale or guessed exponent. Profiles
without scale factors skip that pass entirely; with them it costs one loop over their points.
"""

import logging
from typing import Any, Sequence

from drivers.modbus.codec import make_decoder, with_exponent
from drivers.modbus.link import ModbusLink, read_request
from drivers.modbus.plan import ReadBlock, plan_reads, split_block
from drivers.modbus.profile import BIT_TABLES, ModbusConnection, ModbusProfile
from gateway.errors import BadReply, DeviceError, DeviceException, DeviceGarbage, DeviceTimeout
from gateway.health import DeviceHealth
from gateway.interfaces import ISampleSink
from gateway.metrics import Metrics
from gateway.model import Device, Quality, Value
from gateway.pollschedule import PollSchedule
from gateway.retry import Backoff

log = logging.getLogger(__name__)

PROBE_MAX_S = 10.0
_GOOD = Quality.GOOD
COUNTERS = {"polls": "polls started", "good_polls": "polls answered in full", "failed_polls": "polls that failed",
            "skipped_polls": "ticks skipped because the previous poll still ran (overload)",
            "points": "point values published by good polls", "exception_replies": "Modbus exception replies"}
ILLEGAL_DATA_ADDRESS = 2


def failure_cause(exc: BaseException) -> str:
    """The counter a failed poll or request goes under.

    ``BadReply`` says which check failed (``function_code``, ``unit``, ``transaction``,
    ``byte_count``, ``length``, ``echo``, ``crc``, ``unframed``, ``undecodable``); otherwise
    ``timeout``, ``exception`` (a Modbus exception reply), ``garbage``, ``connection`` (not
    connected, connection lost) or ``internal`` (anything unexpected: a bug, contained).
    """
    if isinstance(exc, BadReply):
        return exc.cause
    for kind, cause in ((DeviceTimeout, "timeout"), (DeviceException, "exception"),
                        (DeviceGarbage, "garbage"), (DeviceError, "connection")):
        if isinstance(exc, kind):
            return cause
    return "internal"


class DevicePoller:
    """Reads every block of one device each poll period and publishes one batch per poll."""

    def __init__(self, device: Device, link: ModbusLink, sink: ISampleSink, reactor: Any,
                 metrics: Metrics | None = None) -> None:
        self.device = device
        self.profile: ModbusProfile = device.profile  # type: ignore[assignment]
        self.connection: ModbusConnection = device.connection  # type: ignore[assignment]
        self.unit = self.connection.unit
        self.link = link
        self._reactor = reactor
        self._blocks = plan_reads(self.profile)
        self._decoders = {p.id: make_decoder(p, self.profile.order_of(p)) for p in self.profile.points}
        self._factored = {p.id: (p.scale_factor, p.scale, p.offset) for p in self.profile.points
                          if p.scale_factor is not None}
        self._exponent_ids = tuple(dict.fromkeys(sf for sf, _, _ in self._factored.values()))
        self._exponents: dict[str, int] = {}  # scale-factor point -> the exponent the last poll read
        poll_s = self.connection.poll_s
        probe = Backoff(reactor, poll_s, max(PROBE_MAX_S, poll_s), spread=0.0)
        metrics = metrics or Metrics()
        self.health = DeviceHealth(device.name, [p.id for p in self.profile.points], sink, reactor,
                                   self.connection.offline_after, probe, metrics=metrics)
        self._count = {key: metrics.counter(f"gridgate_{key}_total", text, device=device.name)
                       for key, text in COUNTERS.items()}
        self._schedule = PollSchedule(device.name, poll_s, self.poll, self.health, self._count["skipped_polls"],
                                      reactor)

    @property
    def counters(self) -> dict[str, int]:
        """Poll counters (``COUNTERS``) by key, for ``stats()``."""
        return {key: int(counter.value) for key, counter in self._count.items()}

    @property
    def offline(self) -> bool:
        """Declared offline: ``offline_after`` consecutive polls failed."""
        return self.health.offline

    @property
    def causes(self) -> dict[str, int]:
        """Failed polls by ``failure_cause``, lifetime."""
        return self.health.causes

    def start(self) -> None:
        """Begin polling (``PollSchedule``: a random phase, one poll at a time)."""
        self._schedule.start()

    async def stop(self) -> None:
        """Stop the schedule and wait for a poll in flight to end."""
        await self._schedule.stop()

    async def poll(self) -> None:
        """Read every block once and publish the outcome as one batch; never raises."""
        self._count["polls"].inc()
        try:
            values = await self._read_all()
        except Exception as exc:  # pylint: disable=broad-except  # a peer's bytes must not kill the task
            self._count["failed_polls"].inc()
            self.health.failed(failure_cause(exc), exc)
            return
        self._count["good_polls"].inc()
        self._count["points"].inc(len(values))
        self.health.good(values)

    async def _read_all(self) -> dict[str, tuple[Value, Quality]]:
        values: dict[str, tuple[Value, Quality]] = {}
        for block in self._blocks:
            await self._read_block(block, values)
        if self._factored:
            self._apply_exponents(values)
        return values

    def _apply_exponents(self, values: dict[str, tuple[Value, Quality]]) -> None:
        """Scale-factored points from their raw numbers and the exponents of the same poll.

        ``with_exponent`` inlined: this runs for every such point of every poll. Decoders return
        the one ``Quality.GOOD`` member, so identity tells a good value."""
        exponents = self._exponents
        for sf_id in self._exponent_ids:
            exponent, quality = values[sf_id]
            if quality is _GOOD:
                exponents[sf_id] = exponent  # type: ignore[assignment]
            else:
                exponents.pop(sf_id, None)
        for point_id, (sf_id, scale, offset) in self._factored.items():
            raw, quality = values[point_id]
            if quality is not _GOOD:
                continue  # a sentinel, or its own block refused: IV already
            exponent = exponents.get(sf_id)
            if exponent is None:
                values[point_id] = (self.health.last(point_id), Quality.IV)
            else:
                value = raw / 10 ** -exponent if exponent < 0 else raw * 10 ** exponent  # type: ignore[operator]
                values[point_id] = (value * scale + offset, _GOOD)

    def exponent(self, point: str) -> int | None:
        """The exponent the last poll read for ``point``'s scale factor; None without one."""
        factor = self._factored.get(point)
        return None if factor is None else self._exponents.get(factor[0])

    async def _read_block(self, block: ReadBlock, values: dict[str, tuple[Value, Quality]]) -> None:
        try:
            words = await self.read(block, priority=False)
        except DeviceException as exc:
            self._count["exception_replies"].inc()
            if exc.code == ILLEGAL_DATA_ADDRESS and len(block.points) > 1 and len(split_block(block)) > 1:
                for part in split_block(block):
                    await self._read_block(part, values)
                return
            for point, _ in block.points:
                values[point.id] = (self.health.last(point.id), Quality.IV)
            return
        for point, offset in block.points:
            values[point.id] = self._decoders[point.id](words, offset)

    async def read(self, block: ReadBlock, priority: bool) -> list:
        """The registers (or bits) of one block, read alone on the bus; the link checked the count."""
        response = await self.link.call(self.device.name, self.connection.timeout_s, self.connection.retries,
                                        priority, read_request(block.table, block.start, block.count, self.unit))
        return response.bits if block.table in BIT_TABLES else response.registers

    def decode(self, point: str, words: Sequence[Any]) -> tuple[Value, Quality]:
        """Decode one point from its own registers (or bits); a scale-factored point with the
        exponent the last poll read (IV without one)."""
        value, quality = self._decoders[point](words, 0)
        factor = self._factored.get(point)
        if factor is None or quality is not _GOOD:
            return value, quality
        exponent = self._exponents.get(factor[0])
        if exponent is None:
            return None, Quality.IV
        return with_exponent(value, exponent, factor[1], factor[2]), _GOOD  # type: ignore[arg-type]

    def publish_readback(self, point: str, value: Value, quality: Quality) -> None:
        """Publish a value read back after a command, so the table shows it at once."""
        self.health.publish({point: (value, quality)})
