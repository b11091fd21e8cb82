"""The gateway's service tree: what starts in which order, and stops in reverse.

Start: spool (so nothing published is lost), the InfluxDB writer, the audit log, the northbound
sides (plugins: the 104 outstation...), then the drivers. Stop: drivers first (no new samples),
then the northbound sides, the final group commit, the writer, the spool.
"""

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Generator

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, gatherResults, inlineCallbacks, maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from gateway.commands.audit import AuditError, AuditLog
from gateway.commands.gate import CommandGate
from gateway.config.loader import Site
from gateway.influx import InfluxWriter, SeriesKey
from gateway.interfaces import IDriver, IStatsSource
from gateway.lineprotocol import series_prefix
from gateway.metrics import Metrics
from gateway.model import ONLINE_POINT, group_by_protocol, point_id
from gateway.points import PointTable
from gateway.registry import Plugins
from gateway.spool import Spool
from gateway.spoolthread import ThreadedSpool

log = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 0.2
EXPIRE_INTERVAL_S = 60.0


def series_of(site: Site, measurement: str) -> SeriesKey:
    """Each point's line-protocol series: the measurement, the device's tags, point and unit."""
    prefixes = {point_id(d.name, p.id): series_prefix(measurement, {**d.tags, "point": p.id, "unit": p.unit})
                for d in site.devices for p in d.profile.points}
    prefixes.update({point_id(d.name, ONLINE_POINT): series_prefix(measurement, {**d.tags, "point": ONLINE_POINT})
                     for d in site.devices})
    return prefixes.__getitem__


class SpoolService(Service):
    """Group-commits what the PointTable publishes; expires rows past the age limit. Both run on
    the spool's thread; the loops wait for each job, so a slow disk delays the next one instead of
    queueing more."""

    def __init__(self, spool: ThreadedSpool, table: PointTable, reactor: Any) -> None:
        self.spool = spool
        self._table = table
        self._reactor = reactor
        self._loops = [LoopingCall(self._guarded, "commit", spool.commit),
                       LoopingCall(self._guarded, "expiry", spool.expire)]
        self._unsubscribe: Callable[[], None] | None = None
        self._failing: set[str] = set()

    def _guarded(self, part: str, job: Callable[[], Deferred]) -> Deferred:
        """Run one job; a failing disk is logged once per episode and retried next period."""
        return job().addCallbacks(lambda _: self._works(part), lambda failure: self._failed(part, failure))

    def _failed(self, part: str, failure: Failure) -> None:
        if part not in self._failing:  # SpoolError (a full disk) or a bug: the loop must go on either way
            log.error("spool %s: %s failed, samples kept in memory and retried: %s", self.spool.path, part,
                      failure.value)
        self._failing.add(part)

    def _works(self, part: str) -> None:
        if part in self._failing:
            log.info("spool %s: %s works again", self.spool.path, part)
        self._failing.discard(part)

    def startService(self) -> None:
        super().startService()
        self._unsubscribe = self._table.subscribe(self.spool.append)
        for loop, interval in zip(self._loops, (COMMIT_INTERVAL_S, EXPIRE_INTERVAL_S)):
            loop.clock = self._reactor
            loop.start(interval, now=False)

    def stopService(self) -> Deferred:
        super().stopService()
        for loop in self._loops:
            if loop.running:
                loop.stop()
        if self._unsubscribe:
            self._unsubscribe()
        return self.spool.close().addErrback(
            lambda failure: log.error("spool %s: closing failed: %s", self.spool.path, failure.value))


class WriterService(Service):
    """Runs the InfluxDB writer between start and stop; on stop the drivers have already stopped,
    so the last polls are committed and forwarded for up to ``exit_flush_s`` before it closes."""

    def __init__(self, writer: InfluxWriter, spool: ThreadedSpool, exit_flush_s: float) -> None:
        self.writer = writer
        self.spool = spool
        self.exit_flush_s = exit_flush_s

    def startService(self) -> None:
        super().startService()
        self.writer.start()

    def stopService(self) -> Deferred:
        super().stopService()
        committed = self.spool.commit().addErrback(
            lambda failure: log.error("spool %s: last commit before exit failed (kept in memory only): %s",
                                      self.spool.path, failure.value))
        return committed.addCallback(lambda _: self.writer.stop(self.exit_flush_s))


@dataclass(frozen=True)
class NorthboundContext:
    """What a northbound plugin's services are built from."""

    table: PointTable
    gate: CommandGate | None
    audit: AuditLog | None
    spool_path: str
    reactor: Any


class DriverService(Service):
    """Starts and stops every driver of the site."""

    def __init__(self, drivers: list[IDriver]) -> None:
        self.drivers = drivers

    def startService(self) -> None:
        super().startService()
        for driver in self.drivers:
            driver.start()

    def stopService(self) -> Deferred:
        super().stopService()
        return DeferredList([maybeDeferred(d.stop) for d in self.drivers], consumeErrors=True)


class Gateway(MultiService):
    """Everything ``gridgate run`` runs for one site."""

    def __init__(self, site: Site, plugins: Plugins, reactor: Any,
                 spool_path: str | None = None) -> None:
        super().__init__()
        self.site = site
        spec = site.spec
        self.table = PointTable(point_id(d.name, p.id) for d in site.devices for p in d.profile.points)
        self.metrics = Metrics()
        self.spool = ThreadedSpool(Spool(spool_path or spec.spool.path, spec.spool.max_bytes, spec.spool.max_age_s,
                                         spec.spool.overflow), reactor)
        SpoolService(self.spool, self.table, reactor).setServiceParent(self)
        self.writer: InfluxWriter | None = None
        if spec.influx is not None:
            token = os.environ.get(spec.influx.token_env)
            self.writer = InfluxWriter(self.spool, spec.influx, token, series_of(site, spec.influx.measurement), reactor)
            WriterService(self.writer, self.spool, spec.influx.exit_flush_s).setServiceParent(self)
        self.drivers: list[IDriver] = []
        for protocol, devices in group_by_protocol(site.devices).items():
            self.drivers += plugins.drivers[protocol].build(devices, self.table, reactor, self.metrics)
        commanding = any(p.commands(getattr(spec, p.section)) for p in plugins.northbound.values())
        self.audit, self.gate = _command_path(site, self.table, self.drivers) if commanding else (None, None)
        if self.audit is not None:
            AuditService(self.audit, reactor).setServiceParent(self)
        context = NorthboundContext(self.table, self.gate, self.audit, self.spool.path, reactor)
        self.northbound: dict[str, list[Service]] = {
            name: list(p.build(getattr(spec, p.section), context)) for name, p in plugins.northbound.items()}
        for service in (s for services in self.northbound.values() for s in services):
            service.setServiceParent(self)
        self.ready: Deferred = Deferred()  # see start()
        DriverService(self.drivers).setServiceParent(self)
        self._register_metrics()

    def _register_metrics(self) -> None:
        """The core's gauges: point quality, spool depth and age, the InfluxDB writer."""
        for quality in ("good", "NT", "IV", "unseen"):
            self.metrics.gauge("gridgate_points", "device points by quality",
                               read=lambda q=quality: self.table.count_by_quality()[q], quality=quality)
        self.metrics.gauge("gridgate_spool_depth", "samples committed and not yet forwarded",
                           read=lambda: self.spool.stats()["depth"])
        self.metrics.gauge("gridgate_spool_oldest_age_seconds", "age of the oldest sample waiting (NaN: none)",
                           read=lambda: _or_nan(self.spool.stats().get("oldest_age_s")))
        if self.writer is not None:
            writer = self.writer
            self.metrics.gauge("gridgate_influx_up", "1 once the last InfluxDB write succeeded",
                               read=lambda: float(writer.stats()["connected"]))
            self.metrics.gauge("gridgate_influx_sent", "samples InfluxDB confirmed since start",
                               read=lambda: writer.stats()["sent"])

    def start(self) -> Deferred:
        """Start every service; fires once the gateway is fully up (every northbound service that
        has a ``ready`` fired: each 104 group listening), or fails with the first start-up error
        (a port that cannot be bound)."""
        self.startService()
        waits = [s.ready for services in self.northbound.values() for s in services if hasattr(s, "ready")]
        self.ready = gatherResults(waits, consumeErrors=True)
        self.ready.addErrback(lambda failure: failure.value.subFailure.raiseException())
        return self.ready

    @inlineCallbacks
    def stopService(self) -> Generator[Deferred, Any, None]:
        """Stop children one at a time in reverse order: drivers, writer, then the spool."""
        Service.stopService(self)
        for child in reversed(list(self)):
            yield maybeDeferred(child.stopService)

    def stats(self) -> dict[str, Any]:
        """Spool, writer and driver counters, for status lines and benchmarks."""
        return {"spool": self.spool.stats(), "writer": self.writer.stats() if self.writer else None,
                "northbound": {name: [s.stats() for s in services if IStatsSource.providedBy(s)]
                               for name, services in self.northbound.items()},
                "drivers": [d.stats() for d in self.drivers], "quality": self.table.count_by_quality()}


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else value


def spool_files(site: Site, plugins: Plugins) -> list[str]:
    """Every spool file the gateway opens: the spool, then those of the northbound sides (event buffers)."""
    path = site.spec.spool.path
    return [path, *(f for p in plugins.northbound.values() for f in p.spool_files(getattr(site.spec, p.section), path))]


def _command_path(site: Site, table: PointTable, drivers: list[IDriver]) -> tuple[AuditLog | None, CommandGate | None]:
    """The audit log and the CommandGate (when a northbound side can command)."""
    spec = site.spec
    a = spec.audit
    audit = AuditLog(a.path, a.hash, key=a.key, state=a.state, checkpoint_every=a.checkpoint_every,
                     checkpoint_interval_s=a.checkpoint_interval_s, max_bytes=a.max_bytes, max_age_s=a.max_age_s,
                     background_sync=True)
    if audit.problem:
        log.error("audit log %s cannot be continued, every command will be refused: %s", a.path, audit.problem)
    if a.key is None:
        log.warning("audit log %s is unsigned: a cut at its end cannot be proven; make a key with "
                    "`gridgate audit init --key PATH` and set audit.key", a.path)
    by_device = {name: driver for driver in drivers for name in driver.devices}
    return audit, CommandGate(spec.command_policy, site.devices, table, by_device, audit)


class AuditService(Service):
    """Seals the audit log on time (signed checkpoints, rotation by age) and at shutdown.

    Started before the outstations, so it stops after them: the closing checkpoint comes after
    the last command record."""

    def __init__(self, audit: AuditLog, reactor: Any) -> None:
        self.audit = audit
        self._timer = LoopingCall(self._seal)
        self._timer.clock = reactor
        self._every = min(5.0, audit.checkpoint_interval_s)

    def _seal(self) -> None:
        try:
            self.audit.maybe_checkpoint()
        except AuditError as exc:
            log.error("audit log %s: checkpoint failed: %s", self.audit.path, exc)

    def startService(self) -> None:
        super().startService()
        self._timer.start(self._every, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._timer.running:
            self._timer.stop()
        try:
            self.audit.close()
        except AuditError as exc:
            log.error("audit log %s: closing checkpoint failed: %s", self.audit.path, exc)
