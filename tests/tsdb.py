"""Start and stop real time-series databases for integration tests.

The Debian packages install ``victoria-metrics`` and ``influxd`` but never start them, so each test
run starts its own instance on 127.0.0.1, on a port of the run's own block (``tests.ports``), with its
data in a temp dir, and stops it by PID. ``restart()`` keeps the port and the data dir, which is what an outage test needs: the
gateway must find the server again where it was, with the data written before the outage.

These helpers are synchronous (subprocess + urllib): call them from fixtures, or from a test
running on the reactor through ``threads.deferToThread`` so the reactor keeps turning meanwhile.
"""

import json
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

from tests.ports import next_port, next_ports

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0
READBACK_TIMEOUT_S = 15.0  # VictoriaMetrics needed up to 9.8 s without a flush on the probe machine


class TsdbError(Exception):
    """A test database did not start, stop or answer as expected."""


def _http(method: str, url: str, data: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """Status and body of one request; HTTP errors are answers here, not exceptions."""
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class TsdbProcess:
    """One database server process with a fixed port and data dir across restarts."""

    def __init__(self, name: str, argv: list[str], port: int, data_dir: Path,
                 health_path: str, healthy: Callable[[int, bytes], bool]) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.data_dir = data_dir
        self.health_path = health_path
        self.healthy = healthy
        self.log_path = data_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:40123``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the process and return once its health endpoint answers."""
        if self.proc is not None and self.proc.poll() is None:
            raise TsdbError(f"{self.name} already running (pid {self.proc.pid})")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        self._wait_healthy(timeout)

    def _wait_healthy(self, timeout: float) -> None:
        """Poll the health endpoint: a child process start is not an event we can await."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise TsdbError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if self.healthy(*_http("GET", self.url + self.health_path, timeout=1.0)):
                    return
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise TsdbError(f"{self.name} not healthy after {timeout} s; see {self.log_path}")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (both flush their buffers on it), SIGKILL if it does not exit in time."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self.proc = None

    def restart(self) -> None:
        """Start again on the same port with the same data dir."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.proc is not None and self.proc.poll() is None


def victoria_metrics(base: Path) -> TsdbProcess:
    """A (not yet started) VictoriaMetrics; it accepts ``/api/v2/write`` and v1 ``/write``."""
    base.mkdir(parents=True, exist_ok=True)
    port = next_port()
    argv = ["victoria-metrics", f"-httpListenAddr=127.0.0.1:{port}",
            f"-storageDataPath={base / 'data'}", "-retentionPeriod=1d",
            "-search.latencyOffset=0s", "-search.disableCache", "-loggerLevel=WARN"]
    return TsdbProcess("victoria-metrics", argv, port, base, "/health",
                       lambda status, body: status == 200 and b"OK" in body)


_INFLUXD_CONF = """\
reporting-enabled = false
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{base}/meta"
[data]
  dir = "{base}/data"
  wal-dir = "{base}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  auth-enabled = false
  log-enabled = false
[continuous_queries]
  enabled = false
[logging]
  level = "warn"
"""


def influxd(base: Path) -> TsdbProcess:
    """A (not yet started) InfluxDB 1.x; it only speaks the v1 ``/write`` and ``/query`` API."""
    base.mkdir(parents=True, exist_ok=True)
    port, rpc_port = next_ports(2)
    conf = base / "influxdb.conf"
    conf.write_text(_INFLUXD_CONF.format(base=base, port=port, rpc_port=rpc_port))
    return TsdbProcess("influxd", ["influxd", "-config", str(conf)], port, base, "/ping",
                       lambda status, body: status == 204)


def influx_query(url: str, db: str, q: str) -> dict[str, Any]:
    """Run an InfluxQL statement (POST, so CREATE/DROP work too); times come back as epoch ms."""
    params = urllib.parse.urlencode({"db": db, "q": q, "epoch": "ms"}).encode()
    status, body = _http("POST", f"{url}/query", data=params)
    if status != 200:
        raise TsdbError(f"query {q!r}: HTTP {status} {body[:300]!r}")
    answer = json.loads(body)
    for result in answer.get("results", []):
        if "error" in result:
            raise TsdbError(f"query {q!r}: {result['error']}")
    return answer


def influx_rows(url: str, db: str, q: str) -> list[dict[str, Any]]:
    """The rows of a SELECT as dicts (column -> value), all series concatenated."""
    rows = []
    for result in influx_query(url, db, q).get("results", []):
        for series in result.get("series", []):
            tags = series.get("tags", {})
            for values in series["values"]:
                rows.append({**tags, **dict(zip(series["columns"], values))})
    return rows


def vm_export(url: str, match: str, until: Callable[[list[dict[str, Any]]], bool] = bool,
              timeout: float = READBACK_TIMEOUT_S) -> list[dict[str, Any]]:
    """Series matching ``match`` from VictoriaMetrics, polled until ``until(series)`` holds.

    Freshly written rows become searchable only after an internal flush, so each attempt
    forces one first; the poll ends at ``timeout`` with whatever was found last.
    """
    deadline = time.monotonic() + timeout
    while True:
        _http("GET", f"{url}/internal/force_flush")
        query = urllib.parse.urlencode({"match[]": match}).encode()
        status, body = _http("POST", f"{url}/api/v1/export", data=query)
        if status != 200:
            raise TsdbError(f"export {match!r}: HTTP {status} {body[:300]!r}")
        series = [json.loads(line) for line in body.splitlines() if line.strip()]
        if until(series) or time.monotonic() >= deadline:
            return series
        time.sleep(0.25)
