"""The OPC UA driver against the simulator (asyncua's server) on 127.0.0.1: values pushed with
their source time and quality, writes read back, security and trust, users, a server restarted
with a node missing, a server absent at start.

The simulator is asyncua's server, built from the same profile; the driver under test is the
gateway's, publishing into a recording PointTable.
"""

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from drivers.opcua.driver import OpcUaDriver
from drivers.opcua.profile import OpcUaConnection, OpcUaOptions, OpcUaPoint, OpcUaProfile, Security, User
from drivers.opcua.sim.server import OpcUaSimulator
from gateway.aio import await_deferred
from gateway.certs import issue, make_ca, write_pair
from gateway.config.profile import Limits, SimBehaviour
from gateway.errors import CommandFailed, CommandRejected
from gateway.model import Command, Device, Quality
from tests.aio import on_asyncio, until
from tests.ports import next_ports
from tests.sinks import RecordingSink


pytestmark = pytest.mark.integration

NS = "urn:gridgate:test:ems"
PASSWORD_ENV = "GRIDGATE_TEST_OPCUA_PASSWORD"
CLIENT_URI = "urn:gridgate:test:gateway"
UNCERTAIN_LAST_USABLE, BAD_OUT_OF_SERVICE = 0x40900000, 0x808D0000

PROFILE = OpcUaProfile(
    model="ems-test", kind="ems", protocol="opcua", opcua=OpcUaOptions(namespace=NS, sampling_ms=50),
    points=[
        OpcUaPoint(id="soc", node="s=BESS.SOC", data_type="Float", unit="%",
                   sim=SimBehaviour(kind="ramp", value=50.0, step=1.0, min=0, max=100)),
        OpcUaPoint(id="temp", node="i=1001", data_type="Int16", scale=0.1, unit="degC",
                   sim=SimBehaviour(kind="constant", value=21.5)),
        OpcUaPoint(id="soh", node="s=BESS.SOH", data_type="Float", mode="read", sim=SimBehaviour(value=97.0)),
        OpcUaPoint(id="p_set", node="s=BESS.PSet", data_type="Float", unit="kW",
                   writable=Limits(min=-500, max=500, readback_tolerance=0.01)),
        OpcUaPoint(id="p", node="s=BESS.P", data_type="Double", unit="kW",
                   sim=SimBehaviour(kind="follow", source="p_set", rate_per_s=1000)),
    ])
SUBSCRIBED = ("soc", "temp", "p_set", "p")


class Lab:
    """The simulator's endpoints, the gateway's client certificate, a trust folder with the server's."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.plain, self.secure, self.users, self.restarting, self.absent = next_ports(5)
        ca = make_ca("gateway CA", use_rsa=True)
        write_pair(issue(ca, "gateway", "opcua", dns=["localhost"], uri=CLIENT_URI),
                   folder / "gateway.crt", folder / "gateway.key")
        self.security = Security(policy="Basic256Sha256", mode="SignAndEncrypt", certificate=str(folder / "gateway.crt"),
                                 private_key_file=str(folder / "gateway.key"), trust=str(folder / "trusted"))
        self.sim = OpcUaSimulator([
            self.device("ems1", self.plain), self.device("ems2", self.secure, security=self.security),
            self.device("ems3", self.users, user=User(name="operator", password_env=PASSWORD_ENV)),
            self.device("ems4", self.restarting)], reactor, period_s=0.1, cert_dir=folder / "server")

    @staticmethod
    def device(name: str, port: int, **connection: Any) -> Device:
        model = OpcUaConnection(endpoint=f"opc.tcp://127.0.0.1:{port}", publishing_interval_ms=50, read_s=0.2,
                                timeout_s=2.0, offline_after_s=1.5, **connection)
        return Device(name, PROFILE, Path("x.yaml"), model, {})

    def trust_server(self, port: int) -> None:
        trusted = self.folder / "trusted"
        trusted.mkdir(exist_ok=True)
        (trusted / f"server-{port}.der").write_bytes(self.sim.server_certificate(("127.0.0.1", port)).read_bytes())


@pytest_twisted.async_yield_fixture(scope="module")
async def lab(tmp_path_factory: pytest.TempPathFactory) -> Any:
    os.environ[PASSWORD_ENV] = "s3cret"
    running = Lab(tmp_path_factory.mktemp("opcua-driver"))
    try:
        await running.sim.start()
        yield running
    finally:
        await running.sim.stop()
        del os.environ[PASSWORD_ENV]


class Running:
    """A driver for one device publishing into a recording table; stopped at the end of the test."""

    def __init__(self, device: Device) -> None:
        self.sink = RecordingSink()
        self.driver = OpcUaDriver(device, self.sink, reactor)
        self.name = device.name

    def sample(self, point: str) -> Any:
        return self.sink.get(f"{self.name}.{point}")

    def good(self, *points: str) -> bool:
        return all((s := self.sample(p)) is not None and s.quality == Quality.GOOD for p in points)

    async def __aenter__(self) -> "Running":
        await await_deferred(self.driver.start())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await await_deferred(self.driver.stop())


@on_asyncio
async def test_values_arrive_with_source_time_and_a_setpoint_is_written_and_read_back(lab: Lab) -> None:
    async with Running(lab.device("ems1", lab.plain)) as run:
        await until(lambda: run.good(*SUBSCRIBED, "soh") and run.sample("_online").value is True, 10, "all points good")
        soc = run.sample("soc")
        assert abs(soc.value - lab.sim.value("ems1", "soc")) <= 1.0
        assert abs(soc.source_time - time.time()) < 2 and soc.source_time <= soc.gateway_time + 0.01
        assert run.sample("temp").value == pytest.approx(21.5) and run.sample("soh").value == pytest.approx(97.0)
        result = await await_deferred(run.driver.execute(Command("ems1", "p_set", 120.0, time.time() + 5)))
        assert result.readback == pytest.approx(120.0) and lab.sim.value("ems1", "p_set") == pytest.approx(120.0)
        await until(lambda: run.sample("p").value == pytest.approx(120.0), 5, "power follows the setpoint")
        with pytest.raises(CommandRejected, match="outside"):
            await await_deferred(run.driver.execute(Command("ems1", "p_set", 900.0, time.time() + 5)))
        with pytest.raises(CommandRejected, match="not writable"):
            await await_deferred(run.driver.execute(Command("ems1", "soc", 1.0, time.time() + 5)))
        assert run.driver.stats()["batches"]["largest"] >= 2  # notifications of one turn are published together


@on_asyncio
async def test_status_codes_become_quality_and_a_bad_value_keeps_the_last_one(lab: Lab) -> None:
    async with Running(lab.device("ems1", lab.plain)) as run:
        await until(lambda: run.good("temp"), 10, "temp good")
        await await_deferred(lab.sim.fault("ems1", "status", "temp", status=UNCERTAIN_LAST_USABLE))
        await until(lambda: run.sample("temp").quality == Quality.NT, 5, "Uncertain -> NT")
        assert run.sample("temp").value == pytest.approx(21.5)
        await await_deferred(lab.sim.fault("ems1", "status", "temp", status=BAD_OUT_OF_SERVICE))
        await until(lambda: run.sample("temp").quality == Quality.BL | Quality.IV, 5, "BadOutOfService -> BL IV")
        assert run.sample("temp").value == pytest.approx(21.5)  # the last value, not the null a Bad status carries
        await await_deferred(lab.sim.fault("ems1", "status", "temp", status=0))
        await until(lambda: run.good("temp"), 5, "Good again")
        assert run.good("soc") and run.sample("_online").value is True  # the device stayed online throughout


@on_asyncio
async def test_a_trusted_server_is_reached_with_sign_and_encrypt(lab: Lab) -> None:
    lab.trust_server(lab.secure)
    async with Running(lab.device("ems2", lab.secure, security=lab.security)) as run:
        await until(lambda: run.good(*SUBSCRIBED), 15, "secure session good")


@on_asyncio
async def test_an_untrusted_server_is_refused_naming_its_certificate_and_where_to_put_it(
        lab: Lab, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "gateway.health")
    security = lab.security.model_copy(update={"trust": str(tmp_path / "empty-trust")})
    async with Running(lab.device("ems2", lab.secure, security=security)) as run:
        await until(lambda: run.sample("_online") is not None and run.sample("_online").value is False, 10, "offline")
        assert run.sample("soc").quality == Quality.IV | Quality.NT and run.driver.stats()["connects"] == 0
    [rejected] = (tmp_path / "empty-trust" / "rejected").iterdir()
    assert rejected.read_bytes() == lab.sim.server_certificate(("127.0.0.1", lab.secure)).read_bytes()
    refusal = [r.getMessage() for r in caplog.records if "not trusted" in r.getMessage()]
    assert len(refusal) == 1 and f"move {rejected} into {tmp_path / 'empty-trust'}" in refusal[0]


@on_asyncio
async def test_a_wrong_password_keeps_the_device_offline_and_the_right_one_connects(lab: Lab) -> None:
    wrong = User(name="operator", password_env="GRIDGATE_TEST_OPCUA_WRONG")
    os.environ["GRIDGATE_TEST_OPCUA_WRONG"] = "guess"
    try:
        async with Running(lab.device("ems3", lab.users, user=wrong)) as run:
            await until(lambda: run.sample("_online") is not None and run.sample("_online").value is False, 10, "offline")
            assert run.driver.stats()["devices"]["ems3"]["failures"].get("connection", 0) >= 1
    finally:
        del os.environ["GRIDGATE_TEST_OPCUA_WRONG"]
    async with Running(lab.device("ems3", lab.users, user=User(name="operator", password_env=PASSWORD_ENV))) as run:
        await until(lambda: run.good(*SUBSCRIBED), 10, "good with the right password")


@on_asyncio
async def test_a_server_absent_at_start_is_a_device_offline_not_a_failure(lab: Lab) -> None:
    async with Running(lab.device("nowhere", lab.absent)) as run:
        await until(lambda: run.sample("soc") is not None and run.sample("soc").quality == Quality.NT, 5, "NT at once")
        await until(lambda: run.sample("_online") is not None and run.sample("_online").value is False, 5, "offline")
        assert run.sample("soc").quality == Quality.IV | Quality.NT


@on_asyncio
async def test_restart_without_a_node_keeps_the_rest_live_and_names_the_node(
        lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "drivers.opcua")
    async with Running(lab.device("ems4", lab.restarting)) as run:
        await until(lambda: run.good(*SUBSCRIBED), 10, "good before the restart")
        await await_deferred(lab.sim.fault("ems4", "remove_node", "temp"))
        restarted = lab.sim.fault("ems4", "restart", down_s=2.5)
        await until(lambda: run.sample("soc").quality != Quality.GOOD, 5, "NT once the server is gone")
        assert run.sample("soc").quality == Quality.NT
        await until(lambda: run.sample("_online").value is False, 5, "offline after offline_after_s")
        await await_deferred(restarted)
        await until(lambda: run.good("soc", "p_set", "p") and run.sample("_online").value is True, 15, "back")
        assert run.sample("temp").quality & Quality.IV
        assert any("ems4.temp: node ns=" in r.getMessage() and "BadNodeIdUnknown" in r.getMessage()
                   for r in caplog.records), [r.getMessage() for r in caplog.records]
        assert run.driver.stats()["not_served"] == {"temp": "BadNodeIdUnknown (0x80340000)"}
    await await_deferred(lab.sim.fault("ems4", "healthy"))


@on_asyncio
async def test_a_write_uses_the_nodes_own_data_type_when_the_profile_says_another(
        lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    """The profile says Double, the server's node is Float: the write goes as Float (a Double
    would be BadTypeMismatch), and the mismatch is logged once."""
    caplog.set_level(logging.WARNING, "drivers.opcua")
    points = [p.model_copy(update={"data_type": "Double"}) if p.id == "p_set" else p for p in PROFILE.points]
    device = lab.device("ems1", lab.plain)
    device = Device(device.name, PROFILE.model_copy(update={"points": points}), device.profile_file, device.connection, {})
    async with Running(device) as run:
        await until(lambda: run.good(*SUBSCRIBED), 10, "good")
        result = await await_deferred(run.driver.execute(Command("ems1", "p_set", -75.0, time.time() + 5)))
        assert result.readback == pytest.approx(-75.0)
    assert [r.getMessage() for r in caplog.records if "the profile says Double" in r.getMessage()] == [
        "ems1.p_set: the profile says Double, node ns=2;s=BESS.PSet is Float; writing Float"]


@on_asyncio
async def test_a_write_the_server_refuses_fails_naming_the_node_and_the_status(lab: Lab) -> None:
    """The profile calls a node writable that the server serves read-only: nothing is applied, and
    the failure names the node and BadUserAccessDenied (the gate audits it as not written)."""
    points = [p.model_copy(update={"writable": Limits(min=0, max=100)}) if p.id == "soc" else p for p in PROFILE.points]
    device = lab.device("ems1", lab.plain)
    device = Device(device.name, PROFILE.model_copy(update={"points": points}), device.profile_file, device.connection, {})
    async with Running(device) as run:
        await until(lambda: run.good(*SUBSCRIBED), 10, "good")
        with pytest.raises(CommandFailed) as caught:
            await await_deferred(run.driver.execute(Command("ems1", "soc", 42.0, time.time() + 5)))
    assert caught.value.written is False
    assert str(caught.value) == ("ems1.soc: node ns=2;s=BESS.SOC refused the write: "
                                 "BadUserAccessDenied (0x801F0000)")


@on_asyncio
async def test_a_failing_read_or_notification_loop_ends_the_session_instead_of_dying_silently(lab: Lab) -> None:
    """A loop that raises would leave a live session with stale points still good: it is taken as
    a lost connection (the session is made again, the points go NT)."""
    driver = OpcUaDriver(lab.device("ems1", lab.plain), RecordingSink(), reactor)
    driver._lost = asyncio.Event()

    async def broken() -> None:
        raise ValueError("a value asyncua could not decode")

    await driver._guarded(broken())
    assert driver._lost.is_set()
    assert str(driver._lost_reason).endswith("lost: ValueError a value asyncua could not decode")
