"""The OPC UA simulator against asyncua's own Client: nodes, types, scaling, writes, security, users, faults.

The peer is asyncua's ``Client`` (not the gateway's driver), so these tests pin what the simulator
puts on the wire. Nodes are found as the driver finds them: namespace URI -> index, plus the
profile's identifier. One simulator (four endpoints, built once: each asyncua server takes ~1.5 s
to build) serves the whole module; tests that fault a point clear the fault again.
"""

import asyncio
import datetime
import os
import socket
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
import pytest_twisted
from asyncua import Client, ua
from asyncua.crypto import cert_gen
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.uaerrors import BadIdentityTokenRejected, BadUserAccessDenied, UaStatusCodeError
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from twisted.internet import reactor

from drivers.opcua.profile import OpcUaConnection, OpcUaOptions, OpcUaPoint, OpcUaProfile, Security, User
from drivers.opcua.sim.server import FAULT_KINDS, OpcUaSimulator
from gateway.aio import await_deferred
from gateway.config.profile import Limits, SimBehaviour
from gateway.interfaces import ISimulator
from gateway.model import Device
from tests.aio import on_asyncio
from tests.ports import next_ports

pytestmark = pytest.mark.integration

PERIOD_S = 0.1
RATE = 400.0  # kW/s the power follows its setpoint at
NS = "urn:gridgate:test:bess"
VENDOR_NS = "urn:gridgate:test:vendor"
GUID = "72962b91-fa75-4ae6-8d28-b404dc7daf63"
PASSWORD_ENV = "GRIDGATE_TEST_OPCUA_SIM_PASSWORD"
CLIENT_URI = "urn:gridgate:test:client"
BAD_OUT_OF_SERVICE = 0x808D0000
UNCERTAIN_LAST_USABLE = 0x40900000

PROFILE = OpcUaProfile(
    model="sim-test-bess", kind="pcs", protocol="opcua", opcua=OpcUaOptions(namespace=NS),
    points=[
        OpcUaPoint(id="soc", node="s=BESS.SOC", data_type="Float", unit="%",
                   sim=SimBehaviour(kind="sine", value=50.0, amplitude=10.0, period_s=3600, min=0, max=100)),
        OpcUaPoint(id="temperature", node="i=1001", data_type="Int16", scale=0.1, unit="degC",
                   sim=SimBehaviour(kind="constant", value=-12.3)),
        OpcUaPoint(id="running", node="s=BESS.Running", data_type="Boolean",
                   sim=SimBehaviour(kind="constant", value=1)),
        OpcUaPoint(id="p_set", node="s=BESS.PSet", data_type="Float", unit="kW",
                   writable=Limits(min=-500, max=500)),
        OpcUaPoint(id="p", node=f"g={GUID}", data_type="Double", unit="kW",
                   sim=SimBehaviour(kind="follow", source="p_set", rate_per_s=RATE)),
        OpcUaPoint(id="serial", node="b=U04tMDAx", namespace=VENDOR_NS, data_type="String"),
    ])
METER = OpcUaProfile(
    model="sim-test-meter", kind="meter", protocol="opcua",
    opcua=OpcUaOptions(namespace="urn:gridgate:test:meter"),
    points=[OpcUaPoint(id="f", node="i=1001", data_type="Double", unit="Hz", sim=SimBehaviour(value=50.02))])


def device(name: str, port: int, profile: OpcUaProfile = PROFILE, **connection: Any) -> Device:
    connection_model = OpcUaConnection(endpoint=f"opc.tcp://127.0.0.1:{port}", **connection)
    return Device(name, profile, Path("x.yaml"), connection_model, {})


def client_certificate(folder: Path) -> tuple[Path, Path]:
    """An RSA client certificate whose SAN URI is CLIENT_URI (made by asyncua's generator, not ours)."""
    key = cert_gen.generate_private_key()
    names = [x509.UniformResourceIdentifier(CLIENT_URI), x509.DNSName(socket.gethostname())]
    cert = cert_gen.generate_self_signed_app_certificate(key, "gridgate test client", {}, names,
                                                         [ExtendedKeyUsageOID.CLIENT_AUTH])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "client.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
    (folder / "client.pem").write_bytes(cert_gen.dump_private_key_as_pem(key))
    return folder / "client.der", folder / "client.pem"


class Site:
    """The module's simulator and where its endpoints are."""

    def __init__(self, folder: Path) -> None:
        self.plain, self.secure, self.users, self.restarting = next_ports(4)
        secure = Security(policy="Basic256Sha256", mode="SignAndEncrypt", certificate="c.der",
                          private_key_file="c.pem", trust="trust")
        self.sim = OpcUaSimulator([
            device("bess1", self.plain), device("meter1", self.plain, METER),
            device("bess2", self.secure, security=secure),
            device("bess3", self.users, user=User(name="operator", password_env=PASSWORD_ENV)),
            device("bess4", self.restarting),
        ], reactor, period_s=PERIOD_S, cert_dir=folder / "server-certs")
        self.client_files = client_certificate(folder / "client")

    def url(self, port: int) -> str:
        return f"opc.tcp://127.0.0.1:{port}"


@pytest_twisted.async_yield_fixture(scope="module")
async def site(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The simulator, listening; the user endpoint's password in PASSWORD_ENV meanwhile."""
    os.environ[PASSWORD_ENV] = "s3cret"
    running = Site(tmp_path_factory.mktemp("opcua-sim"))
    try:
        await running.sim.start()
        yield running
    finally:
        await running.sim.stop()
        del os.environ[PASSWORD_ENV]


async def read(client: Client, uri: str, identifier: str) -> ua.DataValue:
    """One node's DataValue, found by namespace URI and identifier as the driver finds it."""
    index = await client.get_namespace_index(uri)
    return (await client.read_attributes([client.get_node(f"ns={index};{identifier}")]))[0]


class Notifications:
    """What a subscriber was told, per node identifier: (value, StatusCode) in order."""

    def __init__(self) -> None:
        self.seen: dict[str, list[tuple[Any, int]]] = {}

    def datachange_notification(self, node: Any, value: Any, data: Any) -> None:
        status = data.monitored_item.Value.StatusCode.value
        identifier = node.nodeid.to_string().split(";", 1)[1]
        self.seen.setdefault(identifier, []).append((value, status))

    async def has(self, count: int) -> bool:
        return sum(len(changes) for changes in self.seen.values()) >= count


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout_s: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(PERIOD_S / 2)


@on_asyncio
async def test_nodes_carry_the_profile_ids_types_and_scaled_values(site: Site) -> None:
    """Each point at its NodeId in its namespace's index, in its data type, raw = (value - offset) / scale."""
    assert ISimulator.providedBy(site.sim)
    async with Client(site.url(site.plain)) as client:
        soc = await read(client, NS, "s=BESS.SOC")
        temperature = await read(client, NS, "i=1001")
        running = await read(client, NS, "s=BESS.Running")
        power = await read(client, NS, f"g={GUID}")
        serial = await read(client, VENDOR_NS, "b=U04tMDAx")
        meter = await read(client, "urn:gridgate:test:meter", "i=1001")
        index = await client.get_namespace_index(NS)
        soc_node = client.get_node(f"ns={index};s=BESS.SOC")
        soc_range = await (await soc_node.get_child("0:EURange")).read_value()
        soc_units = await (await soc_node.get_child("0:EngineeringUnits")).read_value()
        setpoint_range = await (await client.get_node(f"ns={index};s=BESS.PSet").get_child("0:EURange")).read_value()
        devices = {node.BrowseName.Name for node in await client.nodes.objects.get_children_descriptions()}
    assert soc.Value.VariantType == ua.VariantType.Float and soc.StatusCode.is_good()
    assert 40.0 <= soc.Value.Value <= 60.0
    assert soc.Value.Value == pytest.approx(site.sim.value("bess1", "soc"), abs=0.05)
    assert soc.SourceTimestamp is not None
    assert abs(soc.SourceTimestamp.timestamp() - reactor.seconds()) < 2.0
    assert (temperature.Value.VariantType, temperature.Value.Value) == (ua.VariantType.Int16, -123)
    assert site.sim.value("bess1", "temperature") == pytest.approx(-12.3)
    assert (running.Value.VariantType, running.Value.Value) == (ua.VariantType.Boolean, True)
    assert (power.Value.VariantType, power.Value.Value) == (ua.VariantType.Double, 0.0)
    assert (serial.Value.VariantType, serial.Value.Value) == (ua.VariantType.String, "")
    assert (meter.Value.VariantType, meter.Value.Value) == (ua.VariantType.Double, 50.02)
    assert (soc_range.Low, soc_range.High) == (0.0, 100.0)
    assert (setpoint_range.Low, setpoint_range.High) == (-500.0, 500.0)
    assert soc_units.DisplayName.Text == "%"
    assert {"bess1", "meter1"} <= devices, "two devices share the endpoint, one Object each"


@on_asyncio
async def test_a_client_write_reaches_the_engine_and_read_only_nodes_refuse(site: Site) -> None:
    """A Float write of the setpoint is served and followed; a read-only node and a wrong type are refused."""
    async with Client(site.url(site.plain)) as client:
        index = await client.get_namespace_index(NS)
        setpoint = client.get_node(f"ns={index};s=BESS.PSet")
        power = client.get_node(f"ns={index};g={GUID}")
        await setpoint.write_value(ua.DataValue(ua.Variant(120.0, ua.VariantType.Float)))
        assert site.sim.value("bess1", "p_set") == 120.0
        assert site.sim.engine("bess1").get("p_set") == 120.0
        seen = [await power.read_value()]

        async def followed() -> bool:
            seen.append(await power.read_value())
            return seen[-1] == 120.0
        await wait_for(followed)
        with pytest.raises(BadUserAccessDenied):
            await client.get_node(f"ns={index};i=1001").write_value(ua.DataValue(ua.Variant(5, ua.VariantType.Int16)))
        with pytest.raises(UaStatusCodeError) as mismatch:
            await setpoint.write_value(ua.DataValue(ua.Variant(7.0, ua.VariantType.Double)))
        served = await setpoint.read_data_value()
    assert seen[0] < 120.0 and seen == sorted(seen), f"p jumped or went back: {seen}"
    assert site.sim.value("bess1", "temperature") == pytest.approx(-12.3)
    assert mismatch.value.code == ua.StatusCodes.BadTypeMismatch
    assert served.Value.Value == 120.0 and served.StatusCode.is_good() and served.SourceTimestamp is not None
    assert site.sim.value("bess1", "p_set") == 120.0
    refused = r"temperature: 4000.0 does not fit the node's Int16 \(scale 0.1, offset 0.0\)"
    with pytest.raises(ValueError, match=refused):
        site.sim.set_value("bess1", "temperature", 4000.0)  # raw 40000 > 32767
    with pytest.raises(KeyError):
        site.sim.value("nobody", "p")
    assert site.sim.value("bess1", "temperature") == pytest.approx(-12.3)
    site.sim.set_value("bess1", "p_set", 0.0)
    site.sim.set_value("bess1", "p", 0.0)  # as the other tests expect it, without waiting for the slew


@on_asyncio
async def test_basic256sha256_sign_and_encrypt(site: Site) -> None:
    """The secured endpoint offers exactly its policy, refuses an unsecured channel, serves a secured one."""
    cert, key = site.client_files
    async with Client(site.url(site.plain)) as probe:  # the plain endpoint offers None only
        plain_offer = {(e.SecurityPolicyUri, e.SecurityMode) for e in await probe.get_endpoints()}
    unsecured = Client(site.url(site.secure), timeout=2)
    with pytest.raises(ua.UaError, match="No matching endpoints: 1, .*#None"):  # the offer has no None
        await unsecured.connect()
    client = Client(site.url(site.secure), timeout=4)
    client.application_uri = CLIENT_URI
    await client.set_security(SecurityPolicyBasic256Sha256, str(cert), str(key),
                              server_certificate=str(site.sim.server_certificate(("127.0.0.1", site.secure))),
                              mode=ua.MessageSecurityMode.SignAndEncrypt)
    async with client:
        offer = {(e.SecurityPolicyUri, e.SecurityMode) for e in await client.get_endpoints()}
        temperature = await read(client, NS, "i=1001")
    assert offer == {(SecurityPolicyBasic256Sha256.URI, ua.MessageSecurityMode.SignAndEncrypt)}
    assert plain_offer == {("http://opcfoundation.org/UA/SecurityPolicy#None", ua.MessageSecurityMode.None_)}
    assert temperature.Value.Value == -123


@on_asyncio
async def test_a_user_endpoint_takes_only_the_right_password(site: Site) -> None:
    """Anonymous and a wrong password are refused; the named user with the variable's password reads."""
    anonymous = Client(site.url(site.users), timeout=2)
    with pytest.raises(BadIdentityTokenRejected):
        await anonymous.connect()
    wrong = Client(site.url(site.users), timeout=2)
    wrong.set_user("operator")
    wrong.set_password("guess")
    with pytest.raises(BadUserAccessDenied):
        await wrong.connect()
    stranger = Client(site.url(site.users), timeout=2)
    stranger.set_user("admin")
    stranger.set_password("s3cret")
    with pytest.raises(BadUserAccessDenied):
        await stranger.connect()
    right = Client(site.url(site.users), timeout=2)
    right.set_user("operator")
    right.set_password("s3cret")
    async with right:
        running = await read(right, NS, "s=BESS.Running")
    assert running.Value.Value is True


@on_asyncio
async def test_status_and_remove_node_faults(site: Site) -> None:
    """A status fault is served as that StatusCode; a removed node is BadNodeIdUnknown; healthy undoes both.

    A subscriber is told each status too, the removal included.
    """
    assert set(FAULT_KINDS) == {"status", "remove_node", "restart", "stall", "healthy"}
    async with Client(site.url(site.plain)) as client:
        notified = Notifications()
        index = await client.get_namespace_index(NS)
        subscription = await client.create_subscription(50, notified)
        await subscription.subscribe_data_change([client.get_node(f"ns={index};i=1001"),
                                                  client.get_node(f"ns={index};s=BESS.Running")], queuesize=10)
        await wait_for(lambda: notified.has(2))
        await await_deferred(site.sim.fault("bess1", "status", "temperature", status=UNCERTAIN_LAST_USABLE))
        uncertain = await read(client, NS, "i=1001")
        await await_deferred(site.sim.fault("bess1", "status", "temperature", status=BAD_OUT_OF_SERVICE))
        bad = await read(client, NS, "i=1001")
        await await_deferred(site.sim.fault("bess1", "status", "temperature", status=0))
        good = await read(client, NS, "i=1001")
        await await_deferred(site.sim.fault("bess1", "status", "soc", status=BAD_OUT_OF_SERVICE))
        await await_deferred(site.sim.fault("bess1", "remove_node", "running"))
        removed = await read(client, NS, "s=BESS.Running")
        other = await read(client, NS, "i=1001")
        await await_deferred(site.sim.fault("bess1", "healthy"))
        back = await read(client, NS, "s=BESS.Running")
        soc = await read(client, NS, "s=BESS.SOC")
        await wait_for(lambda: notified.has(6))
    assert notified.seen["i=1001"] == [(-123, 0), (-123, UNCERTAIN_LAST_USABLE), (None, BAD_OUT_OF_SERVICE), (-123, 0)]
    assert notified.seen["s=BESS.Running"] == [(True, 0), (None, ua.StatusCodes.BadNodeIdUnknown)]
    assert (uncertain.StatusCode.value, uncertain.Value.Value) == (UNCERTAIN_LAST_USABLE, -123)
    assert bad.StatusCode.value == BAD_OUT_OF_SERVICE and bad.Value.Value is None
    assert (good.StatusCode.value, good.Value.Value) == (0, -123)
    assert removed.StatusCode.value == ua.StatusCodes.BadNodeIdUnknown
    assert (other.StatusCode.value, other.Value.Value) == (0, -123)
    assert (back.StatusCode.value, back.Value.Value) == (0, True)
    assert soc.StatusCode.value == 0 and 40.0 <= soc.Value.Value <= 60.0


@on_asyncio
async def test_restart_with_a_new_certificate(site: Site) -> None:
    """The server goes away, comes back after down_s with a new certificate, serving the same nodes."""
    endpoint = ("127.0.0.1", site.restarting)
    before = site.sim.server_certificate(endpoint).read_bytes()
    async with Client(site.url(site.restarting)) as client:
        shown_before = (await client.get_endpoints())[0].ServerCertificate
    loop = asyncio.get_running_loop()
    started = loop.time()
    restarted = site.sim.fault("bess4", "restart", down_s=2.0, new_certificate=True)
    await asyncio.sleep(0.3)
    with pytest.raises((OSError, asyncio.TimeoutError)):
        await Client(site.url(site.restarting), timeout=1).connect()
    await await_deferred(restarted)
    down = loop.time() - started
    after = site.sim.server_certificate(endpoint).read_bytes()
    async with Client(site.url(site.restarting)) as client:
        shown_after = (await client.get_endpoints())[0].ServerCertificate
        temperature = await read(client, NS, "i=1001")
    assert shown_before == before and shown_after == after and after != before
    assert x509.load_der_x509_certificate(after).not_valid_after_utc > datetime.datetime.now(datetime.timezone.utc)
    assert down >= 2.0
    assert temperature.Value.Value == -123


def test_two_devices_naming_one_node_on_one_endpoint_are_refused(tmp_path: Path) -> None:
    """Same profile twice on one endpoint: the second device's NodeIds are taken."""
    port = next_ports(1)[0]
    with pytest.raises(ValueError, match="node s=BESS.SOC of urn:gridgate:test:bess .* already served for a"):
        OpcUaSimulator([device("a", port), device("b", port)], reactor, cert_dir=tmp_path)
