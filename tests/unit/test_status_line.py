"""The status line reads the metrics registry, whichever drivers registered in it."""

import math
from types import SimpleNamespace

from twisted.internet.task import Clock

from gateway.health import DeviceHealth
from gateway.metrics import Metrics
from gateway.runner import status_line
from tests.sinks import RecordingSink


def _core(metrics: Metrics, quality: dict[str, int], depth: int, age: float) -> None:
    for name, count in quality.items():
        metrics.gauge("gridgate_points", "", read=lambda c=count: c, quality=name)
    metrics.gauge("gridgate_spool_depth", "", read=lambda: depth)
    metrics.gauge("gridgate_spool_oldest_age_seconds", "", read=lambda: age)


def test_status_line_counts_offline_devices_and_skipped_polls_from_metrics() -> None:
    metrics, clock = Metrics(), Clock()
    _core(metrics, {"good": 7, "NT": 1, "IV": 2, "unseen": 0}, depth=42, age=3.4)
    for name in ("pcs1", "bms1"):
        DeviceHealth(name, ["p"], RecordingSink(), clock, offline_after=1, metrics=metrics)
    down = DeviceHealth("meter1", ["p"], RecordingSink(), clock, offline_after=1, metrics=metrics)
    down.failed("timeout")
    metrics.counter("gridgate_skipped_polls_total", "", device="pcs1").inc(3)
    metrics.counter("gridgate_skipped_polls_total", "", device="bms1").inc(2)
    metrics.gauge("gridgate_influx_up", "", read=lambda: 0.0)
    metrics.gauge("gridgate_influx_sent", "", read=lambda: 1500)
    line = status_line(SimpleNamespace(metrics=metrics, writer=object()))  # type: ignore[arg-type]
    assert line == ("points good 7 NT 1 IV 2 unseen 0; offline ['meter1']; skipped polls 5; spool depth 42 "
                    "oldest 3 s; influx DOWN, sent 1500")


def test_status_line_without_writer_or_waiting_samples() -> None:
    metrics = Metrics()
    _core(metrics, {"good": 3, "NT": 0, "IV": 0, "unseen": 1}, depth=0, age=math.nan)
    line = status_line(SimpleNamespace(metrics=metrics, writer=None))  # type: ignore[arg-type]
    assert line == "points good 3 NT 0 IV 0 unseen 1; offline none; skipped polls 0; spool depth 0 oldest -; no influx"
