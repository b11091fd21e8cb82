"""Real peers for integration tests, each on 127.0.0.1 (a port of the run's block, ``tests.ports``), its data in the test's temp dir."""

import shutil
from pathlib import Path
from typing import Iterator

import pytest
import pytest_twisted

from gateway.commissioning.recordingmaster import RecordingMaster
from tests import tsdb
from tests.integration.sites import Running


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


@pytest.fixture
def running():
    """Factory: start a site written by the test (simulators + gateway); everything stopped afterwards."""
    started: list[Running] = []

    def start(site_path: Path):
        run = Running(site_path)
        started.append(run)
        return run.start().addCallback(lambda _: run)

    yield start
    for run in started:
        pytest_twisted.blockon(run.stop())


@pytest.fixture
def master_factory():
    """Factory of dispatch masters (c104) for a port and common address; closed afterwards."""
    masters: list[RecordingMaster] = []

    def make(port: int, common_address: int, timeout_s: float = 10.0) -> RecordingMaster:
        master = RecordingMaster("127.0.0.1", port, common_address, timeout_s)
        masters.append(master)
        return master

    yield make
    for master in masters:
        master.close()
