"""`gridgate opcua browse` drafts a profile from what a server serves: the simulator serving the
shipped EMS profile is browsed, and the draft names the same nodes, types, units and limits."""

import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from drivers.opcua.profile import OpcUaProfile
from gateway.config.loader import SHIPPED_PROFILES
from tests.integration.sites import wait_until
from tests.ports import next_ports

pytestmark = pytest.mark.integration
EMS = OpcUaProfile.model_validate(yaml.safe_load((SHIPPED_PROFILES / "ems" / "gridgate-ems-opcua.yaml").read_text()))


def _gridgate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def ems_endpoint(tmp_path: Path) -> Iterator[str]:
    [port] = next_ports(1)
    endpoint = f"opc.tcp://127.0.0.1:{port}"
    (tmp_path / "site.yaml").write_text(yaml.safe_dump({"site": "browse", "devices": [
        {"name": "ems1", "profile": "ems/gridgate-ems-opcua", "connection": {"endpoint": endpoint}}]}))
    process = subprocess.Popen([sys.executable, "-m", "gateway", "simulate", "site.yaml"], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: "OPC UA simulator listening" in _lines(process), 60, "the simulator")
    yield endpoint
    process.terminate()
    process.wait(20)


def _lines(process: subprocess.Popen) -> str:
    line = process.stderr.readline() if process.poll() is None else ""  # type: ignore[union-attr]
    return line


def test_browse_drafts_the_profile_the_server_serves(tmp_path: Path, ems_endpoint: str) -> None:
    result = _gridgate("opcua", "browse", ems_endpoint, "--out", "draft.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"draft.yaml: {len(EMS.points)} point(s) drafted"
    draft = OpcUaProfile.model_validate(yaml.safe_load((tmp_path / "draft.yaml").read_text()))
    assert draft.opcua.namespace == EMS.opcua.namespace
    served = {p.node: (p.data_type, p.unit, p.writable.min if p.writable else None) for p in draft.points}
    shipped = {p.node: (p.data_type, p.unit, p.writable.min if p.writable else None) for p in EMS.points}
    assert served == shipped
    assert "review:" not in result.stderr  # every writable node had an EURange


def test_browse_names_an_endpoint_that_does_not_answer(tmp_path: Path) -> None:
    [port] = next_ports(1)
    result = _gridgate("opcua", "browse", f"opc.tcp://127.0.0.1:{port}", cwd=tmp_path)
    assert result.returncode == 1 and f"opc.tcp://127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
