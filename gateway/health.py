"""The quality of one device's points as communication with it fails and recovers.

A dispatch centre cannot tell which protocol sits behind a point, and must not have to: every
device, polled (Modbus) or pushing (104 master, streaming sensors), has to show the same story:

* the first failed exchange publishes every point once with its last value and NT;
* ``offline_after`` consecutive failures declare the device offline: every point IV|NT (last
  value kept) and ``<device>._online`` False;
* the first good exchange publishes fresh values and ``_online`` True, without a restart.

Each driver used to write these rules itself, and each copy would differ in some corner (which
values survive an IV sample, when ``_online`` is repeated, how often a failure is logged). So
they live here, once; a driver reports ``good``/``failed`` and publishes through ``DeviceHealth``.
Logging follows the episode rule: one WARNING per failure cause from the first failure to the
next good exchange, which logs one INFO, so a device failing every 100 ms writes a few lines.

An offline device is probed with a ``Backoff`` (``probe_due``) so it stops costing the bus time
its neighbours need. A device that pushes has no failed request to report; ``silence_s`` makes
a watchdog report ``failed("silence")`` for each ``silence_s`` in which nothing was heard.
"""

import logging
from typing import Any, Mapping, Sequence

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from gateway.errors import DeviceTimeout
from gateway.interfaces import ISampleSink
from gateway.metrics import Metrics
from gateway.model import ONLINE_POINT, Quality, Sample, Value, point_id
from gateway.retry import Backoff

log = logging.getLogger(__name__)

GOOD = int(Quality.GOOD)
SILENCE_CHECKS = 4  # watchdog checks per silence_s: silence is noticed at most silence_s / 4 late

Values = Mapping[str, tuple[Value, Quality]]


class DeviceHealth:
    """Failure counting, NT/IV/_online publication and offline probing for one device."""

    def __init__(self, device: str, points: Sequence[str], sink: ISampleSink, clock: IReactorTime,
                 offline_after: int | None, probe: Backoff | None = None, silence_s: float | None = None,
                 metrics: Metrics | None = None, offline_after_s: float | None = None) -> None:
        if (offline_after is None and offline_after_s is None) or (offline_after is not None and offline_after < 1) \
                or (silence_s is not None and silence_s <= 0) or (offline_after_s is not None and offline_after_s <= 0):
            raise ValueError(f"{device}: give offline_after >= 1 or offline_after_s > 0, and silence_s > 0; "
                             f"got {offline_after}, {offline_after_s}, {silence_s}")
        self.device = device
        self.offline_after = offline_after
        self._offline_after_s = offline_after_s
        self._gave_up = False  # declared offline by time (offline_after_s), not by count
        self._give_up_call: Any = None
        self._ids = {p: point_id(device, p) for p in points}
        self._online_id = point_id(device, ONLINE_POINT)
        self._sink = sink
        self._clock = clock
        self._probe = probe
        self._online: bool | None = None
        self._last: dict[str, Value] = {}
        self.failures = 0  # consecutive failed exchanges
        self._metrics = metrics or Metrics()
        self._metrics.gauge("gridgate_device_offline", "1 while the device is declared offline",
                            read=lambda: float(self.offline), device=device)
        self.causes: dict[str, int] = {}  # failed exchanges by cause, lifetime
        self._episode: dict[str, int] = {}  # the same, since the last good exchange
        self._silence_s = 0.0 if silence_s is None else silence_s  # 0.0: no watchdog
        self._heard_at = 0.0
        self._watchdog: LoopingCall | None = None
        if silence_s is not None:
            self._watchdog = LoopingCall(self._check_silence)
            self._watchdog.clock = clock

    @property
    def offline(self) -> bool:
        """Declared offline: ``offline_after`` consecutive exchanges failed, or failures lasted ``offline_after_s``."""
        return self._gave_up or (self.offline_after is not None and self.failures >= self.offline_after)

    def probe_due(self) -> bool:
        """Whether the driver may talk to the device now (an offline device only when its probe is due)."""
        return not self.offline or self._probe is None or self._probe.due()

    def last(self, point: str) -> Value:
        """The last value of ``point`` published without IV; None before the first."""
        return self._last.get(point)

    def publish(self, values: Values, source_time: float | None = None,
                source_times: Mapping[str, float] | None = None) -> None:
        """Publish one batch (point id -> value, quality); values without IV become the last ones.

        The source time of each value: ``source_times[point]`` (a device that stamps each value
        itself), else ``source_time``, else now."""
        now = self._clock.seconds()
        source = now if source_time is None else source_time
        times = source_times or {}
        ids, last = self._ids, self._last
        batch = []
        for point, (value, quality) in values.items():
            batch.append(Sample(ids[point], value, quality, times.get(point, source), now))
            if quality == GOOD or not quality & Quality.IV:  # int compare first: IntFlag ops are slow
                last[point] = value
        self._sink.publish(batch)

    def good(self, values: Values, source_time: float | None = None,
             source_times: Mapping[str, float] | None = None) -> None:
        """A successful exchange: end the failure episode, publish ``values``, and ``_online`` True if needed."""
        self.heard()
        if self.failures:
            log.info("%s: answering again after %d failed poll(s) (%s)", self.device, self.failures,
                     ", ".join(f"{cause} {n}" for cause, n in self._episode.items()),
                     extra={"episode": "recovered"})
        self.failures = 0
        self._episode.clear()
        self._gave_up = False
        if self._give_up_call is not None and self._give_up_call.active():
            self._give_up_call.cancel()
        if self._probe is not None:
            self._probe.succeeded()
        self.publish(values, source_time, source_times)
        if self._online is not True:
            self._publish_online(True)

    def failed(self, cause: str, exc: BaseException | None = None) -> None:
        """A failed exchange: NT at the first, IV|NT and ``_online`` False at ``offline_after``."""
        self.causes[cause] = self.causes.get(cause, 0) + 1
        self._metrics.counter("gridgate_device_failures_total", "failed exchanges by cause",
                              device=self.device, cause=cause).inc()
        self.failures += 1
        if cause not in self._episode:
            log.warning("%s: poll failed (%s), points %s: %s", self.device, cause, "IV" if self.offline else "NT",
                        "no detail" if exc is None else exc, exc_info=exc if cause == "internal" else None,
                        extra={"episode": "failed", "cause": cause})
        self._episode[cause] = self._episode.get(cause, 0) + 1
        if self.failures == 1:
            self._publish_stale(Quality.NT)
            if self._offline_after_s is not None:
                self._give_up_call = self._clock.callLater(self._offline_after_s, self._time_out)
        if self.failures == self.offline_after and not self._gave_up:
            log.warning("%s: declared offline after %d failed polls, points IV", self.device, self.failures)
            self._go_offline()
        if self.offline and self._probe is not None:
            self._probe.failed()

    def _time_out(self) -> None:
        if self.failures and not self.offline:
            log.warning("%s: declared offline after %g s without a good exchange, points IV", self.device,
                        self._offline_after_s)
            self._gave_up = True
            self._go_offline()

    def _go_offline(self) -> None:
        self._publish_stale(Quality.IV | Quality.NT)
        self._publish_online(False)

    def heard(self) -> None:
        """Something arrived from the device (the silence watchdog's notion of alive); publishes nothing."""
        self._heard_at = self._clock.seconds()

    def start(self) -> None:
        """Start the silence watchdog (when ``silence_s`` was given); the first window starts now."""
        if self._watchdog is not None and not self._watchdog.running:
            self.heard()
            self._watchdog.start(self._silence_s / SILENCE_CHECKS, now=False).addErrback(self._watchdog_died)

    def stop(self) -> None:
        """Stop the silence watchdog."""
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()

    def _check_silence(self) -> None:
        if self._clock.seconds() - self._heard_at >= self._silence_s:
            self.heard()  # the next silence failure needs another silence_s without a word
            self.failed("silence", DeviceTimeout(self.device, f"nothing heard for {self._silence_s:g} s"))

    def _watchdog_died(self, failure: Failure) -> None:
        """A sink that raised stopped the loop: say so, a silent device would otherwise never go offline."""
        log.error("%s: silence watchdog stopped by an unexpected error", self.device, exc_info=failure.value)

    def _publish_stale(self, quality: Quality) -> None:
        now = self._clock.seconds()
        self._sink.publish([Sample(pid, self._last.get(p), quality, now, now) for p, pid in self._ids.items()])

    def _publish_online(self, online: bool) -> None:
        self._online = online
        now = self._clock.seconds()
        self._sink.publish([Sample(self._online_id, online, Quality.GOOD, now, now)])


class TurnValues:
    """The values a pushing device sent in one reactor turn, as DeviceHealth batches: no batch may
    hold a point twice, so a point's second value in the turn starts the next round (none is
    lost, the order kept); each value with its own source time."""

    def __init__(self) -> None:
        self.rounds: list[dict[str, tuple[Value, Quality]]] = [{}]
        self.times: list[dict[str, float]] = [{}]

    def put(self, point: str, value: Value, quality: Quality, source_time: float | None) -> None:
        if point in self.rounds[-1]:
            self.rounds.append({})
            self.times.append({})
        self.rounds[-1][point] = (value, quality)
        if source_time is not None:
            self.times[-1][point] = source_time

    def last_valid(self, point: str, before: Value) -> Value:
        """The point's latest value without IV in this turn; ``before`` (the one published earlier) if none."""
        for values in reversed(self.rounds):
            if point in values and not values[point][1] & Quality.IV:
                return values[point][0]
        return before

    def publish(self, health: DeviceHealth) -> None:
        """Every round as a good exchange (the device answered, whatever each value's quality)."""
        for values, stamps in zip(self.rounds, self.times):
            health.good(values, source_times=stamps)

