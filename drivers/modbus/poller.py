"""Polling one Modbus device: its schedule, its reads, and the quality of its points.

Quality follows what a dispatch centre expects of an RTU:

* a poll that fails (no answer, connection down, garbage) publishes every point once with its
  last value and NT, at the first failure;
* after ``offline_after`` consecutive failed polls the device is declared offline and every
  point is published IV (last value kept); an offline device is then probed with backoff
  (poll period doubling up to ``PROBE_MAX_S``) so that it stops costing bus time its neighbours need;
* the first good poll publishes fresh values with good quality again, without a restart.

A block answered with a Modbus exception makes its own points IV while the device stays
online; an "illegal data address" on a merged read is retried point group by point group.

Nothing a device sends can escape a poll: a reply that fails its check (``replycheck``) fails
the poll like silence does, and so does any unexpected exception (a decoder meeting data it
did not expect, a bug): the poll task never dies with an exception nobody retrieves. Failed
polls are counted by cause (``failure_cause``). Each cause logs one WARNING per episode (an
episode runs from the first failed poll to the next good one, which logs one INFO), so a device
that fails every 100 ms for an hour writes a handful of lines, not 36,000.

A tick that finds the previous poll still running is counted as skipped: under overload the
gateway polls less often, it never builds a backlog.
"""

import asyncio
import logging
import random
from typing import Any, Callable, Sequence

from twisted.internet.task import LoopingCall

from drivers.modbus.codec import make_decoder
from drivers.modbus.link import ModbusLink, read_request
from drivers.modbus.plan import ReadBlock, plan_reads, split_block
from drivers.modbus.profile import BIT_TABLES, ModbusProfile
from gateway.errors import BadReply, DeviceError, DeviceException, DeviceGarbage, DeviceTimeout
from gateway.interfaces import ONLINE_POINT, Device, ISampleSink
from gateway.model import Quality, Sample, Value, point_id

log = logging.getLogger(__name__)

PROBE_MAX_S = 10.0
GOOD = int(Quality.GOOD)
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
                 clock: Callable[[], float]) -> None:
        self.device = device
        self.profile: ModbusProfile = device.profile  # type: ignore[assignment]
        self.unit: int = device.connection.unit  # type: ignore[attr-defined]
        self.link = link
        self._sink = sink
        self._reactor = reactor
        self._clock = clock
        self._blocks = plan_reads(self.profile)
        self._decoders = {p.id: make_decoder(p, self.profile.order_of(p)) for p in self.profile.points}
        self._ids = {p.id: point_id(device.name, p.id) for p in self.profile.points}
        self._online_id = point_id(device.name, ONLINE_POINT)
        self._online: bool | None = None
        self._last: dict[str, Value] = {}
        self._loop = LoopingCall(self._tick)
        self._loop.clock = reactor
        self._task: asyncio.Future | None = None
        self.failures = 0
        self._next_probe = 0.0
        self.counters = {"polls": 0, "good_polls": 0, "failed_polls": 0, "skipped_polls": 0, "points": 0,
                         "exception_replies": 0}
        self.causes: dict[str, int] = {}  # failed polls by failure_cause
        self._episode: dict[str, int] = {}  # the same, since the last good poll
        self._ended_badly = False

    @property
    def offline(self) -> bool:
        """Declared offline: ``offline_after`` consecutive polls failed."""
        return self.failures >= self.device.offline_after

    def start(self) -> None:
        """Begin polling after a random phase, so devices of a site do not poll in lockstep."""
        phase = random.uniform(0, self.device.poll_s)
        self._reactor.callLater(phase, self._begin)

    def _begin(self) -> None:
        if not self._loop.running:
            self._loop.start(self.device.poll_s, now=True)

    async def stop(self) -> None:
        """Stop the schedule and wait for a poll in flight to end."""
        if self._loop.running:
            self._loop.stop()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _tick(self) -> None:
        if self._task is not None and not self._task.done():
            self.counters["skipped_polls"] += 1
            return
        if self.offline and self._clock() < self._next_probe:
            return
        self._task = asyncio.ensure_future(self.poll())
        self._task.add_done_callback(self._poll_ended)

    def _poll_ended(self, task: asyncio.Future) -> None:
        """The last net: ``poll`` contains read failures, this catches a failing sink too."""
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.causes["internal"] = self.causes.get("internal", 0) + 1
            if not self._ended_badly:  # a bug, not a device: once per process is enough
                self._ended_badly = True
                log.error("%s: poll ended with an unexpected error", self.device.name, exc_info=exc)

    async def poll(self) -> None:
        """Read every block once and publish the outcome as one batch; never raises."""
        self.counters["polls"] += 1
        try:
            values = await self._read_all()
        except Exception as exc:  # pylint: disable=broad-except  # a peer's bytes must not kill the task
            self._failed(exc)
            return
        if self.failures:
            log.info("%s: answering again after %d failed poll(s) (%s)", self.device.name, self.failures,
                     ", ".join(f"{cause} {n}" for cause, n in self._episode.items()),
                     extra={"episode": "recovered"})
        self.failures = 0
        self._episode.clear()
        self.counters["good_polls"] += 1
        self._publish(values)
        if self._online is not True:
            self._publish_online(True)

    async def _read_all(self) -> dict[str, tuple[Value, Quality]]:
        values: dict[str, tuple[Value, Quality]] = {}
        for block in self._blocks:
            await self._read_block(block, values)
        return values

    async def _read_block(self, block: ReadBlock, values: dict[str, tuple[Value, Quality]]) -> None:
        try:
            words = await self.read(block, priority=False)
        except DeviceException as exc:
            self.counters["exception_replies"] += 1
            if exc.code == ILLEGAL_DATA_ADDRESS and len(block.points) > 1 and len(split_block(block)) > 1:
                for part in split_block(block):
                    await self._read_block(part, values)
                return
            for point, _ in block.points:
                values[point.id] = (self._last.get(point.id), Quality.IV)
            return
        for point, offset in block.points:
            values[point.id] = self._decoders[point.id](words, offset)

    async def read(self, block: ReadBlock, priority: bool) -> list:
        """The registers (or bits) of one block, read alone on the bus; the link checked the count."""
        response = await self.link.call(self.device.name, self.device.timeout_s, self.device.retries,
                                        priority, read_request(block.table, block.start, block.count, self.unit))
        return response.bits if block.table in BIT_TABLES else response.registers

    def decode(self, point: str, words: Sequence[Any]) -> tuple[Value, Quality]:
        """Decode one point from its own registers (or bits)."""
        return self._decoders[point](words, 0)

    def _publish(self, values: dict[str, tuple[Value, Quality]]) -> None:
        now = self._clock()
        ids, last = self._ids, self._last
        batch = []
        for pid, (value, quality) in values.items():
            batch.append(Sample(ids[pid], value, quality, now, now))
            if quality == GOOD or not quality & Quality.IV:  # int compare first: IntFlag ops are slow
                last[pid] = value
        self.counters["points"] += len(batch)
        self._sink.publish(batch)

    def _failed(self, exc: Exception) -> None:
        cause = failure_cause(exc)
        self.counters["failed_polls"] += 1
        self.causes[cause] = self.causes.get(cause, 0) + 1
        self.failures += 1
        if cause not in self._episode:
            log.warning("%s: poll failed (%s), points %s: %s", self.device.name, cause,
                        "IV" if self.offline else "NT", exc, exc_info=exc if cause == "internal" else None,
                        extra={"episode": "failed", "cause": cause})
        self._episode[cause] = self._episode.get(cause, 0) + 1
        if self.failures == 1:
            self._publish_stale(Quality.NT)
        if self.failures == self.device.offline_after:
            log.warning("%s: declared offline after %d failed polls, points IV",
                        self.device.name, self.failures)
            self._publish_stale(Quality.IV | Quality.NT)
            self._publish_online(False)
        if self.offline:  # the exponent is capped: 0.1 * 2 ** 1030 raises OverflowError (~3 h offline)
            doublings = min(self.failures - self.device.offline_after, 32)
            interval = self.device.poll_s * 2 ** doublings
            self._next_probe = self._clock() + min(interval, max(PROBE_MAX_S, self.device.poll_s))

    def _publish_stale(self, quality: Quality) -> None:
        now = self._clock()
        self._sink.publish([Sample(self._ids[p.id], self._last.get(p.id), quality, now, now)
                            for p in self.profile.points])

    def _publish_online(self, online: bool) -> None:
        self._online = online
        now = self._clock()
        self._sink.publish([Sample(self._online_id, online, Quality.GOOD, now, now)])

    def publish_readback(self, point: str, value: Value, quality: Quality) -> None:
        """Publish a value read back after a command, so the table shows it at once."""
        if not quality & Quality.IV:
            self._last[point] = value
        now = self._clock()
        self._sink.publish([Sample(self._ids[point], value, quality, now, now)])
