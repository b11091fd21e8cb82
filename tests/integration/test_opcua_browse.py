"""`gridgate opcua browse` drafts a profile from what a server serves: the simulator serving the
shipped EMS profile is browsed, and the draft names the same nodes, types, units and limits; a
server offering only SignAndEncrypt with a user is browsed through the driver's security rules
(trust folder, user, the model's checks of the options)."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

import pytest
import pytest_twisted
import yaml
from twisted.internet import reactor

from drivers.opcua.profile import OpcUaConnection, OpcUaPoint, OpcUaProfile, Security, User
from drivers.opcua.sim.server import OpcUaSimulator
from gateway.certs import issue, make_ca, write_pair
from gateway.config.loader import SHIPPED_PROFILES
from gateway.model import Device
from tests.aio import on_asyncio
from tests.integration.sites import wait_until
from tests.ports import next_ports

pytestmark = pytest.mark.integration
EMS = OpcUaProfile.model_validate(yaml.safe_load((SHIPPED_PROFILES / "ems" / "gridgate-ems-opcua.yaml").read_text()))
PASSWORD_ENV = "GRIDGATE_TEST_BROWSE_PASSWORD"
CLIENT_URI = "urn:gridgate:test:browse"


def _gridgate(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)


async def _browse(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real CLI, in a thread: the simulator under test runs on this process's loop."""
    return await asyncio.to_thread(_gridgate, "opcua", "browse", *args, cwd=cwd, env=env)


def _nodes(points: Iterable[OpcUaPoint]) -> set[tuple[Any, ...]]:
    return {(p.node, p.data_type, p.unit, (p.writable.min, p.writable.max) if p.writable else None) for p in points}


def _drafted(file: Path) -> set[tuple[Any, ...]]:
    return _nodes(OpcUaProfile.model_validate(yaml.safe_load(file.read_text())).points)


class Served:
    """The EMS profile served in-process twice: with security None, and with Basic256Sha256
    SignAndEncrypt for a user only; the client's certificate, and a trust folder holding the server's."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.plain_port, self.secure_port = next_ports(2)
        self.plain, self.secure = (f"opc.tcp://127.0.0.1:{port}" for port in (self.plain_port, self.secure_port))
        self.trusted = folder / "trusted"
        write_pair(issue(make_ca("browse CA", use_rsa=True), "gateway", "opcua", dns=["localhost"], uri=CLIENT_URI),
                   folder / "gateway.crt", folder / "gateway.key")
        security = Security(policy="Basic256Sha256", mode="SignAndEncrypt", certificate=str(folder / "gateway.crt"),
                            private_key_file=str(folder / "gateway.key"), trust=str(self.trusted))
        secured = OpcUaConnection(endpoint=self.secure, security=security,
                                  user=User(name="operator", password_env=PASSWORD_ENV))
        self.sim = OpcUaSimulator([Device("plain", EMS, Path("x.yaml"), OpcUaConnection(endpoint=self.plain)),
                                   Device("secure", EMS, Path("x.yaml"), secured)],
                                  reactor, period_s=0.5, cert_dir=folder / "server")

    def server_certificate(self) -> Path:
        """The certificate the secured endpoint shows."""
        return self.sim.server_certificate(("127.0.0.1", self.secure_port))

    def options(self, trust: Path, password_env: str = PASSWORD_ENV) -> list[str]:
        """The CLI options that reach the secured endpoint, trusting the folder ``trust``."""
        return ["--policy", "Basic256Sha256", "--mode", "SignAndEncrypt",
                "--certificate", str(self.folder / "gateway.crt"), "--private-key", str(self.folder / "gateway.key"),
                "--trust", str(trust), "--user", "operator", "--password-env", password_env]


@pytest_twisted.async_yield_fixture(scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    os.environ[PASSWORD_ENV] = "s3cret"  # the simulator reads it here, the CLI in its subprocess
    running = Served(tmp_path_factory.mktemp("opcua-browse"))
    try:
        await running.sim.start()
        running.trusted.mkdir()
        (running.trusted / "server.der").write_bytes(running.server_certificate().read_bytes())
        yield running
    finally:
        await running.sim.stop()
        del os.environ[PASSWORD_ENV]


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
    """Security None: the draft names the shipped profile's nodes, types, units and limits."""
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
    """Nothing listening: exit 1 naming the endpoint, no traceback."""
    [port] = next_ports(1)
    result = _gridgate("opcua", "browse", f"opc.tcp://127.0.0.1:{port}", cwd=tmp_path)
    assert result.returncode == 1 and f"opc.tcp://127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


@on_asyncio
async def test_a_sign_and_encrypt_server_with_a_user_drafts_the_same_nodes_as_security_none(
        served: Served, tmp_path: Path) -> None:
    """SignAndEncrypt, a trusted server and a password from a variable: the nodes security None drafts."""
    secured = await _browse(served.secure, *served.options(served.trusted), "--out", "secured.yaml", cwd=tmp_path)
    assert secured.returncode == 0, secured.stderr
    plain = await _browse(served.plain, "--out", "plain.yaml", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert _drafted(tmp_path / "secured.yaml") == _drafted(tmp_path / "plain.yaml") == _nodes(EMS.points)
    anonymous = await _browse(served.secure, cwd=tmp_path)
    assert anonymous.returncode == 1 and served.secure in anonymous.stderr  # so the draft came through security


@on_asyncio
async def test_an_untrusted_server_is_refused_naming_its_certificate_and_the_trust_folder(
        served: Served, tmp_path: Path) -> None:
    """A server certificate not in --trust DIR: exit 1, one line naming the kept certificate and DIR."""
    empty = tmp_path / "empty-trust"
    empty.mkdir()
    result = await _browse(served.secure, *served.options(empty), "--out", "draft.yaml", cwd=tmp_path)
    assert result.returncode == 1 and not (tmp_path / "draft.yaml").exists()
    [rejected] = (empty / "rejected").iterdir()
    assert rejected.read_bytes() == served.server_certificate().read_bytes()
    [line] = result.stderr.splitlines()
    assert line.startswith(f"gridgate opcua browse: server certificate of {served.secure} is not trusted")
    assert line.endswith(f"move {rejected} into {empty}")


@on_asyncio
async def test_a_wrong_password_is_one_line_naming_the_endpoint(served: Served, tmp_path: Path) -> None:
    """The server refuses the user's password: exit 1, one line naming the endpoint, no draft."""
    env = {**os.environ, "GRIDGATE_TEST_BROWSE_WRONG": "guess"}
    result = await _browse(served.secure, *served.options(served.trusted, "GRIDGATE_TEST_BROWSE_WRONG"),
                           "--out", "draft.yaml", cwd=tmp_path, env=env)
    assert result.returncode == 1 and not (tmp_path / "draft.yaml").exists()
    [line] = result.stderr.splitlines()
    assert line.startswith(f"gridgate opcua browse: {served.secure}: ") and "BadUserAccessDenied" in line, line


@pytest.mark.parametrize(("options", "said"), [
    (["--policy", "Basic256Sha256", "--mode", "Sign", "--private-key", "k.pem", "--trust", "."],
     "Basic256Sha256 needs certificate and private_key_file"),
    (["--policy", "Basic256Sha256", "--mode", "Sign", "--certificate", "missing.crt", "--private-key", "k.pem",
      "--trust", "."], "security.certificate: missing.crt does not exist"),
    (["--user", "operator", "--password-env", "GRIDGATE_TEST_BROWSE_UNSET"],
     "--password-env: GRIDGATE_TEST_BROWSE_UNSET is not set"),
])
def test_options_that_cannot_work_exit_2_before_connecting(tmp_path: Path, options: list[str], said: str) -> None:
    """A policy without --certificate, a missing file, an unset password variable: exit 2, one line."""
    (tmp_path / "k.pem").write_text("")
    [port] = next_ports(1)
    result = _gridgate("opcua", "browse", f"opc.tcp://127.0.0.1:{port}", *options, cwd=tmp_path)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"gridgate opcua browse: {said}"), line
