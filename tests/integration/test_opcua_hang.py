"""A hung OPC UA server (the simulator process stopped with SIGSTOP, then continued): NT within
about two seconds (asyncua's watchdog probes every second), IV once offline_after_s has passed,
good again after SIGCONT, with no restart of the gateway."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from drivers.opcua.profile import OpcUaConnection
from gateway.model import Device, Quality
from tests.integration.test_opcua_driver import PROFILE, SUBSCRIBED, Running
from tests.aio import on_asyncio, until
from tests.ports import next_ports

pytestmark = pytest.mark.integration


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int]]:
    """``gridgate simulate`` serving the shipped EMS profile's shape on a free port, in its own process."""
    [port] = next_ports(1)
    profile = {"model": "ems-test", "kind": "ems", "protocol": "opcua", "opcua": {"namespace": PROFILE.opcua.namespace},
               "points": [p.model_dump(exclude_none=True) for p in PROFILE.points]}
    (tmp_path / "ems.yaml").write_text(yaml.safe_dump(profile))
    (tmp_path / "site.yaml").write_text(yaml.safe_dump({"site": "hang", "devices": [
        {"name": "ems1", "profile": "ems.yaml", "connection": {"endpoint": f"opc.tcp://127.0.0.1:{port}"}}]}))
    process = subprocess.Popen([sys.executable, "-m", "gateway", "simulate", str(tmp_path / "site.yaml")],
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline and process.poll() is None, "simulator did not listen"
            time.sleep(0.1)
    yield process, port
    os.kill(process.pid, signal.SIGCONT)
    process.terminate()
    process.wait(20)


@on_asyncio
async def test_a_hung_server_is_nt_then_iv_then_good_again(simulator: tuple[subprocess.Popen, int]) -> None:
    process, port = simulator
    device = Device("ems1", PROFILE, Path("x.yaml"), OpcUaConnection(
        endpoint=f"opc.tcp://127.0.0.1:{port}", publishing_interval_ms=100, timeout_s=1.0, offline_after_s=4.0), {})
    async with Running(device) as run:
        await until(lambda: run.good(*SUBSCRIBED), 20, "good before the hang")
        os.kill(process.pid, signal.SIGSTOP)
        hung = time.monotonic()
        await until(lambda: run.sample("soc").quality == Quality.NT, 5, "NT once the hang is seen")
        seen = time.monotonic() - hung
        await until(lambda: run.sample("_online").value is False, 8, "IV after offline_after_s")
        assert run.sample("soc").quality == Quality.IV | Quality.NT
        os.kill(process.pid, signal.SIGCONT)
        await until(lambda: run.good(*SUBSCRIBED) and run.sample("_online").value is True, 30, "good after SIGCONT")
    assert seen < 3.0, f"the hang was seen after {seen:.1f} s"
