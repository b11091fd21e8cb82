"""What `gridgate demo` shows on a terminal: no Twisted factory chatter, one count of 104 points."""

import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from tests.ports import next_port

pytestmark = pytest.mark.integration


class _InfluxV1(BaseHTTPRequestHandler):
    """Accepts every v1 /write with 204 and counts it; HTTP/1.0, so each write is a new connection."""

    writes = 0

    def do_POST(self) -> None:  # pylint: disable=invalid-name
        """Take the line protocol, answer 204 No Content."""
        self.rfile.read(int(self.headers.get("content-length", 0)))
        type(self).writes += 1
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        """Quiet: the test reads the demo's output, not this server's."""


@pytest.fixture(scope="module")
def influx_v1() -> Iterator[str]:
    """A stand-in InfluxDB 1.x write endpoint on a free port; its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _InfluxV1)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def terminal(tmp_path_factory: pytest.TempPathFactory, influx_v1: str) -> str:
    """stdout and stderr of a 6 s demo writing to InfluxDB v1, merged as a terminal shows them (one run)."""
    tmp_path = tmp_path_factory.mktemp("demo")
    _InfluxV1.writes = 0
    result = subprocess.run([sys.executable, "-m", "gateway", "demo", "--duration", "6", "--spool",
                             str(tmp_path / "spool.db"), "--iec104-port", str(next_port()),
                             "--influx-url", influx_v1, "--influx-v1-db", "demo"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:]
    assert _InfluxV1.writes >= 2, "the v1 writer's HTTP client (a noisy Twisted factory) really connected"
    return result.stdout


def test_no_twisted_factory_or_port_lines_between_the_table_rows(terminal: str) -> None:
    """Neither 'Starting factory' / 'Stopping factory' nor a port opening or closing reaches the terminal."""
    noise = [line for line in terminal.splitlines()
             if re.search(r"(Starting|Stopping) factory|starting on \d+|Port \d+ Closed", line)]
    assert noise == []
    assert "device   point" in terminal and "offline none" in terminal


def test_header_and_outstation_log_count_the_same_points(terminal: str) -> None:
    """The header's 104 point count is the outstation's logged one: device points plus comm status."""
    header = re.search(r"IEC 104 outstation .*, (\d+) points \((\d+) device points \+ (\d+) comm-status", terminal)
    logged = re.search(r"104 group demo: listening on \S+, (\d+) points", terminal)
    assert header and logged, terminal[:3000]
    total, device_points, status = map(int, header.groups())
    assert total == int(logged.group(1)) == device_points + status
    assert status == 8, "one <device>._online per device (seven on Modbus, the EMS on OPC UA)"
