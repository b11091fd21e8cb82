"""Real peers for integration tests, each on a free 127.0.0.1 port in the test's temp dir."""

import shutil
from pathlib import Path
from typing import Iterator

import pytest

from tests import tsdb


def _running(server: tsdb.TsdbProcess) -> Iterator[tsdb.TsdbProcess]:
    """Start ``server``, hand it to the test, stop it by PID whatever happened."""
    if shutil.which(server.argv[0]) is None:
        pytest.fail(f"{server.argv[0]} is not installed: apt-get install victoria-metrics influxdb")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def victoria_metrics(tmp_path: Path) -> Iterator[tsdb.TsdbProcess]:
    """A VictoriaMetrics instance (accepts the InfluxDB v2 and v1 write APIs); ``.url``, ``.restart()``."""
    yield from _running(tsdb.victoria_metrics(tmp_path / "victoria-metrics"))


@pytest.fixture
def influxdb_v1(tmp_path: Path) -> Iterator[tsdb.TsdbProcess]:
    """An InfluxDB 1.x instance (v1 ``/write`` and ``/query`` only); create databases with ``tsdb.influx_query``."""
    yield from _running(tsdb.influxd(tmp_path / "influxd"))
