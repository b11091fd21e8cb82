"""The OPC UA driver's security against the simulator: every policy and mode, a server whose
certificate changes (trust folder and trust on first use), on 127.0.0.1."""

import logging
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from drivers.opcua.profile import Security
from drivers.opcua.sim.server import OpcUaSimulator
from gateway.aio import await_deferred
from gateway.certs import issue, make_ca, write_pair
from gateway.model import Quality
from tests.integration.test_opcua_driver import CLIENT_URI, SUBSCRIBED, Lab, Running
from tests.aio import on_asyncio, until
from tests.ports import next_ports

pytestmark = pytest.mark.integration

MATRIX = [(policy, mode) for policy in ("Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss")
          for mode in ("Sign", "SignAndEncrypt")]


class Secured:
    """One endpoint per policy and mode, one that will change its certificate, one pinned on first use."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        ports = next_ports(len(MATRIX) + 2)
        self.ports = dict(zip(MATRIX, ports))
        self.changing, self.first_use = ports[-2:]
        write_pair(issue(make_ca("gateway CA", use_rsa=True), "gateway", "opcua", dns=["localhost"], uri=CLIENT_URI),
                   folder / "gateway.crt", folder / "gateway.key")
        self.sim = OpcUaSimulator(
            [Lab.device(f"ems_{p}_{m}", port, security=self.security(p, m)) for (p, m), port in self.ports.items()]
            + [Lab.device("changing", self.changing, security=self.security("Basic256Sha256", "SignAndEncrypt")),
               Lab.device("first", self.first_use, security=self.security("Basic256Sha256", "Sign"))],
            reactor, period_s=0.1, cert_dir=folder / "server")

    def security(self, policy: str, mode: str, **changes: Any) -> Security:
        settings = {"certificate": str(self.folder / "gateway.crt"), "private_key_file": str(self.folder / "gateway.key"),
                    "trust": str(self.folder / "trusted"), **changes}
        return Security(policy=policy, mode=mode, **settings)

    def trust(self, port: int) -> None:
        trusted = self.folder / "trusted"
        trusted.mkdir(exist_ok=True)
        (trusted / f"server-{port}.der").write_bytes(self.sim.server_certificate(("127.0.0.1", port)).read_bytes())


@pytest_twisted.async_yield_fixture(scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> Any:
    running = Secured(tmp_path_factory.mktemp("opcua-security"))
    await running.sim.start()
    try:
        yield running
    finally:
        await running.sim.stop()


@pytest.mark.parametrize(("policy", "mode"), MATRIX)
@on_asyncio
async def test_every_policy_and_mode_connects_to_a_trusted_server(secured: Secured, policy: str, mode: str) -> None:
    port = secured.ports[(policy, mode)]
    secured.trust(port)
    device = Lab.device(f"ems_{policy}_{mode}", port, security=secured.security(policy, mode))
    async with Running(device) as run:
        await until(lambda: run.good(*SUBSCRIBED), 15, f"{policy} {mode} good")


@on_asyncio
async def test_a_server_restarted_with_a_new_certificate_is_refused_until_it_is_trusted(
        secured: Secured, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "gateway.health")
    secured.trust(secured.changing)
    device = Lab.device("changing", secured.changing, security=secured.security("Basic256Sha256", "SignAndEncrypt"))
    async with Running(device) as run:
        await until(lambda: run.good(*SUBSCRIBED), 15, "good before the change")
        await await_deferred(secured.sim.fault("changing", "restart", down_s=0.5, new_certificate=True))
        await until(lambda: any("not trusted" in r.getMessage() for r in caplog.records), 15, "refused as untrusted")
        await until(lambda: run.sample("_online").value is False, 15, "offline")
        secured.trust(secured.changing)  # the operator moves the new certificate in
        await until(lambda: run.good(*SUBSCRIBED), 20, "good once trusted")


@on_asyncio
async def test_trust_on_first_use_pins_and_then_refuses_a_changed_certificate(
        secured: Secured, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    security = secured.security("Basic256Sha256", "Sign", trust=str(tmp_path / "pinned"), trust_on_first_use=True)
    async with Running(Lab.device("first", secured.first_use, security=security)) as run:
        await until(lambda: run.good(*SUBSCRIBED), 15, "good on first use")
        pinned = tmp_path / "pinned" / f"127.0.0.1_{secured.first_use}.der"
        assert pinned.read_bytes() == secured.sim.server_certificate(("127.0.0.1", secured.first_use)).read_bytes()
        await await_deferred(secured.sim.fault("first", "restart", down_s=0.5, new_certificate=True))
        await until(lambda: any("a different one is pinned for this endpoint" in r.getMessage()
                                for r in caplog.records), 15, "the changed certificate refused")
        await until(lambda: run.sample("soc").quality & Quality.IV, 15, "IV")
