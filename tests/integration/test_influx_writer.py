"""Spool + InfluxWriter against real servers: VictoriaMetrics (v2 API) and InfluxDB 1.x (v1 /write).

Delivery is at-least-once, so a batch whose confirmation was lost is sent twice. InfluxDB
overwrites a point with the same series and timestamp; VictoriaMetrics keeps both copies unless
started with ``-dedup.minScrapeInterval`` (these tests start it without). The read-back is
therefore tolerant of duplicates (identical copies collapse into one expected key) and strict
about missing samples.
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall, deferLater

from gateway.config.site import InfluxSpec
from gateway.influx import InfluxWriter, SeriesKey
from gateway.lineprotocol import series_prefix
from gateway.model import Quality, Sample, Value
from gateway.spool import Spool
from gateway.spoolthread import ThreadedSpool
from tests import tsdb

pytestmark = pytest.mark.integration

MODELS = {"pcs1": "PCS-500", "bms 1": "BMS,v2", "pv1": "SUN2000"}
UNITS = {"p_kw": "kW", "soc": "%", "mode": "", "run": "", "cell temp,max=1": "°C", "state": ""}
OUTAGE_S = 20.0
DRAIN_TIMEOUT_S = 90.0
Key = tuple[str, str, int]  # device, point, timestamp ms


def site_series(site: str) -> SeriesKey:
    """What the service builds: tags site, device, model, point, unit from the point id."""
    def series(point_id: str) -> str:
        device, point = point_id.split(".", 1)
        return series_prefix("gridgate", {"site": site, "device": device, "model": MODELS[device],
                                          "point": point, "unit": UNITS[point]})
    return series


@dataclass
class Target:
    """One server plus how to configure the writer for it and read everything back."""

    server: tsdb.TsdbProcess
    v1: bool

    def spec(self, **overrides: Any) -> InfluxSpec:
        target = {"v1_db": "gw"} if self.v1 else {"bucket": "gw", "org": "gridgate"}
        return InfluxSpec(url=self.server.url, **{"flush_interval_s": 0.1, "timeout_s": 2.0,
                                                  **target, **overrides})

    def read(self, site: str, expected: int) -> dict[Key, dict[str, Any]]:
        """Every stored row of ``site`` keyed by (device, point, ms), merged across fields."""
        if self.v1:
            rows = tsdb.influx_rows(self.server.url, "gw", f"SELECT * FROM gridgate WHERE site='{site}'")
            return {(r["device"], r["point"], r["time"]): r for r in rows}
        match = '{__name__=~"gridgate_.*",site="%s"}' % site
        series = tsdb.vm_export(self.server.url, match,
                                until=lambda s: len(_merge_vm(s)) >= expected)
        return _merge_vm(series)


def _merge_vm(series: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """VictoriaMetrics names a series measurement_field; fold value/quality/text back into rows."""
    rows: dict[Key, dict[str, Any]] = {}
    for s in series:
        labels = dict(s["metric"])
        field = labels.pop("__name__").removeprefix("gridgate_")
        for value, ts in zip(s["values"], s["timestamps"]):
            row = rows.setdefault((labels["device"], labels["point"], ts), dict(labels, time=ts))
            assert row.get(field, value) == value, f"two different {field} values at one time: {row}"
            row[field] = value
    return rows


@pytest.fixture(params=["victoria_metrics", "influxdb_v1"])
def target(request: pytest.FixtureRequest) -> Target:
    """Each test runs against VictoriaMetrics (v2 write API) and InfluxDB 1.x (v1 /write)."""
    server: tsdb.TsdbProcess = request.getfixturevalue(request.param)
    if request.param == "influxdb_v1":
        tsdb.influx_query(server.url, "gw", "CREATE DATABASE gw")
    return Target(server, v1=request.param == "influxdb_v1")


def expected_fields(value: Value, v1: bool) -> dict[str, Any]:
    """What the server should hold for a value (bool/int become float 1/0/n, text its own field)."""
    if value is None:
        return {}
    if isinstance(value, str):
        return {"text": value} if v1 else {}  # VictoriaMetrics stores no strings
    return {"value": float(value)}


def assert_all_arrived(rows: dict[Key, dict[str, Any]], samples: list[Sample], site: str, v1: bool) -> None:
    """Every sample is there at its source time with its value, quality and all its tags."""
    missing = []
    for s in samples:
        device, point = s.point.split(".", 1)
        row = rows.get((device, point, round(s.source_time * 1000)))
        if row is None:
            missing.append(s)
            continue
        assert {k: row.get(k) for k in ("site", "device", "model", "point")} == \
            {"site": site, "device": device, "model": MODELS[device], "point": point}
        assert row.get("unit") == (UNITS[point] or None)
        assert row.get("quality") == int(s.quality)
        for field, value in expected_fields(s.value, v1).items():
            assert row.get(field) == value, (s, row)
        if s.value is None:
            assert row.get("value") is None, row
    assert not missing, f"{len(missing)} of {len(samples)} samples missing, first {missing[:3]}"


def open_spool(tmp_path: Path) -> ThreadedSpool:
    return ThreadedSpool(Spool(str(tmp_path / "spool.db"), 64 << 20, 86400.0, "drop_oldest"), reactor)


def within(d: Deferred, seconds: float) -> Deferred:
    return d.addTimeout(seconds, reactor)


@pytest_twisted.ensureDeferred
async def test_every_sample_arrives_with_value_tags_and_source_time(target: Target, tmp_path: Path) -> None:
    """Samples of every value kind and quality arrive once each, with tags and their original time."""
    site = "alpha"
    now = time.time()
    values: list[tuple[str, Value, Quality]] = [
        ("pcs1.p_kw", -12.25, Quality.GOOD), ("bms 1.soc", 87, Quality.GOOD),
        ("pcs1.run", True, Quality.GOOD), ("pv1.state", False, Quality.SB),
        ("pcs1.mode", 'grid "follow"\\', Quality.GOOD), ("bms 1.cell temp,max=1", 31.5, Quality.NT),
        ("pv1.p_kw", None, Quality.IV | Quality.NT),
    ]
    # source times an hour back, 250 ms apart, unlike the gateway time: proves which one is used
    samples = [Sample(point, value, quality, now - 3600 + 0.25 * i + 0.001 * j, now)
               for i in range(30) for j, (point, value, quality) in enumerate(values)]
    spool = open_spool(tmp_path)
    writer = InfluxWriter(spool, target.spec(batch_size=64), None, site_series(site), reactor)
    spool.append(samples)
    await spool.commit()
    writer.start()
    await within(writer.drained(), DRAIN_TIMEOUT_S)
    await writer.stop()
    rows = await threads.deferToThread(target.read, site, len(samples))
    assert_all_arrived(rows, samples, site, target.v1)
    assert len(rows) == len(samples)
    stats = writer.stats()
    assert (stats["sent"], stats["failures"], stats["connected"]) == (len(samples), 0, True)
    assert stats["batches"] == -(-len(samples) // 64)
    await spool.close()


@pytest_twisted.ensureDeferred
async def test_samples_produced_during_an_outage_arrive_after_it(target: Target, tmp_path: Path, caplog) -> None:
    """With the server down for 20 s while samples keep coming, every one arrives later at its source time.

    The outage is logged once as a WARNING and the recovery once as an INFO, not once per retry.
    """
    caplog.set_level(logging.INFO, "gateway.influx")
    site = "outage"
    spool = open_spool(tmp_path)
    writer = InfluxWriter(spool, target.spec(batch_size=100), None, site_series(site), reactor)
    produced: list[Sample] = []

    def produce() -> Deferred:
        now = time.time()
        batch = [Sample("pcs1.p_kw", round(now % 1000, 3), Quality.GOOD, now - 0.5, now),
                 Sample("bms 1.soc", len(produced), Quality.GOOD, now - 0.5, now),
                 Sample("pv1.state", len(produced) % 2 == 0, Quality.GOOD, now - 0.5, now)]
        spool.append(batch)
        produced.extend(batch)
        return spool.commit()

    producer = LoopingCall(produce)
    producer.clock = reactor
    producer.start(0.1)
    writer.start()
    await within(writer.drained(), 10.0)  # delivered at least once before the outage
    await threads.deferToThread(target.server.stop)
    await deferLater(reactor, OUTAGE_S, lambda: None)
    assert writer.stats()["connected"] is False and spool.depth() > 0
    await threads.deferToThread(target.server.start)
    await deferLater(reactor, 1.0, lambda: None)  # keep producing after the restart, too
    producer.stop()
    await spool.commit()
    await within(writer.drained(), DRAIN_TIMEOUT_S)
    await writer.stop()

    rows = await threads.deferToThread(target.read, site, len(produced))
    assert_all_arrived(rows, produced, site, target.v1)
    assert spool.depth() == 0 and len(produced) > 3 * 10 * OUTAGE_S * 0.9
    stats = writer.stats()
    assert stats["connected"] and stats["failures"] >= 3 and stats["sent"] >= len(produced)
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "gateway.influx"]
    assert [m for level, m in messages if level == logging.WARNING and "unreachable" in m] != []
    assert len([m for level, m in messages if level == logging.WARNING]) == 1, messages
    recovered = [m for level, m in messages if level == logging.INFO]
    assert len(recovered) == 1 and "reachable again" in recovered[0], messages
    await spool.close()


@pytest_twisted.ensureDeferred
async def test_refused_lines_are_isolated_and_dropped_without_blocking_the_queue(
        influxdb_v1: tsdb.TsdbProcess, tmp_path: Path, caplog) -> None:
    """A line InfluxDB refuses (HTTP 400) is found by bisection and dropped with an ERROR naming its
    point; a point no longer in the site is dropped too; every other sample of the batch arrives."""
    tsdb.influx_query(influxdb_v1.url, "gw", "CREATE DATABASE gw")
    target = Target(influxdb_v1, v1=True)
    good = site_series("beta")

    def series(point_id: str) -> str:
        if point_id == "pv1.state":
            return good(point_id) + ",broken"  # a tag without '=': InfluxDB answers 400
        if point_id == "gone.p":
            raise KeyError(point_id)
        return good(point_id)

    now = time.time()
    samples = [Sample(p, float(i), Quality.GOOD, now - 600 + i + 0.01 * j, now)
               for i in range(20) for j, p in enumerate(["pcs1.p_kw", "pv1.state", "bms 1.soc", "gone.p"])]
    spool = open_spool(tmp_path)
    writer = InfluxWriter(spool, target.spec(batch_size=1000), None, series, reactor)
    spool.append(samples)
    await spool.commit()
    caplog.set_level(logging.ERROR, "gateway.influx")
    writer.start()
    await within(writer.drained(), DRAIN_TIMEOUT_S)
    await writer.stop()

    kept = [s for s in samples if s.point in ("pcs1.p_kw", "bms 1.soc")]
    rows = await threads.deferToThread(target.read, "beta", len(kept))
    assert_all_arrived(rows, kept, "beta", v1=True)
    assert len(rows) == len(kept)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("20 sample(s) of point pv1.state" in e for e in errors), errors
    assert any("20 spooled sample(s) of point gone.p" in e for e in errors), errors
    stats = writer.stats()
    assert (stats["rejected"], stats["unmapped"], stats["sent"]) == (20, 20, 40)
    assert spool.depth() == 0
    await spool.close()
