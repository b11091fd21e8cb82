"""The simulator's ``stall`` fault: an in-process server that hangs (connections open, nothing
answered, values moving inside) and answers again, as test_opcua_hang.py's stopped process does
but without a second process, so the demo and other tests can use it."""

import asyncio
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from asyncua import Client
from twisted.internet import reactor

from drivers.opcua.profile import OpcUaConnection
from drivers.opcua.sim.server import OpcUaSimulator
from gateway.aio import await_deferred
from gateway.model import Device, Quality
from tests.aio import on_asyncio, until
from tests.integration.test_opcua_driver import NS, PROFILE, SUBSCRIBED, Running
from tests.ports import next_ports

pytestmark = pytest.mark.integration

OFFLINE_AFTER_S = 3.0


def device(port: int) -> Device:
    """ems1 on 127.0.0.1:``port``, with a 1 s request timeout like the hang test's."""
    connection = OpcUaConnection(endpoint=f"opc.tcp://127.0.0.1:{port}", publishing_interval_ms=100,
                                 timeout_s=1.0, offline_after_s=OFFLINE_AFTER_S)
    return Device("ems1", PROFILE, Path("x.yaml"), connection, {})


class Stalling:
    """One simulated device on its own endpoint; each test leaves it healthy."""

    def __init__(self, folder: Path) -> None:
        [self.port] = next_ports(1)
        self.url = f"opc.tcp://127.0.0.1:{self.port}"
        self.sim = OpcUaSimulator([device(self.port)], reactor, period_s=0.1, cert_dir=folder)


@pytest_twisted.async_yield_fixture(scope="module")
async def stalling(tmp_path_factory: pytest.TempPathFactory) -> Any:
    running = Stalling(tmp_path_factory.mktemp("opcua-stall"))
    await running.sim.start()
    try:
        yield running
    finally:
        await running.sim.stop()


async def read_soc(client: Client) -> float:
    """The SOC the server serves, found by namespace URI as the driver finds it."""
    index = await client.get_namespace_index(NS)
    return await client.get_node(f"ns={index};s=BESS.SOC").read_value()


@on_asyncio
async def test_a_stalled_server_is_nt_then_iv_then_good_again_once_healthy(stalling: Stalling) -> None:
    """A stall is seen within 3 s (NT), is IV and offline after offline_after_s, and the same driver is good after healthy."""
    loop = asyncio.get_running_loop()
    async with Running(device(stalling.port)) as run:
        await until(lambda: run.good(*SUBSCRIBED) and run.sample("_online").value is True, 20, "good before the stall")
        before = stalling.sim.value("ems1", "soc")
        try:
            await await_deferred(stalling.sim.fault("ems1", "stall"))
            stalled = loop.time()
            await until(lambda: run.sample("soc").quality == Quality.NT, 5, "NT once the stall is seen")
            seen = loop.time() - stalled
            await until(lambda: run.sample("_online").value is False, OFFLINE_AFTER_S + 5, "offline")
            offline = loop.time() - stalled
            assert run.sample("soc").quality == Quality.IV | Quality.NT
            assert stalling.sim.value("ems1", "soc") > before  # the value engine kept running
        finally:
            await await_deferred(stalling.sim.fault("ems1", "healthy"))
        await until(lambda: run.good(*SUBSCRIBED) and run.sample("_online").value is True, 30, "good after healthy")
        assert abs(run.sample("soc").value - stalling.sim.value("ems1", "soc")) <= 1.0
    assert seen < 3.0, f"the stall was seen after {seen:.1f} s"
    assert offline >= OFFLINE_AFTER_S


@on_asyncio
async def test_a_new_client_is_accepted_by_tcp_but_not_answered_until_for_s_has_passed(stalling: Stalling) -> None:
    """During a stall TCP accepts a new client but its connect times out; once for_s has passed it connects."""
    loop = asyncio.get_running_loop()
    try:
        await await_deferred(stalling.sim.fault("ems1", "stall", for_s=3.0))
        stalled = loop.time()
        _, writer = await asyncio.open_connection("127.0.0.1", stalling.port)  # refused if it had stopped listening
        writer.close()
        with pytest.raises(asyncio.TimeoutError):
            await Client(stalling.url, timeout=1).connect()
        assert loop.time() - stalled < 3.0
        await asyncio.sleep(3.0 - (loop.time() - stalled))
        async with Client(stalling.url, timeout=2) as client:
            assert 0.0 <= await read_soc(client) <= 100.0
    finally:
        await await_deferred(stalling.sim.fault("ems1", "healthy"))


class Heard:
    """An asyncua subscription handler counting data change notifications."""

    def __init__(self) -> None:
        self.count = 0

    def datachange_notification(self, *_: Any) -> None:
        self.count += 1

    async def next(self) -> None:
        """Return once the next notification has arrived."""
        count = self.count
        await until(lambda: self.count > count, 3, "a notification")


@on_asyncio
async def test_a_subscriber_hears_nothing_during_a_stall_and_its_session_goes_on_after(stalling: Stalling) -> None:
    """What the server publishes during a stall is held, not sent, and arrives after it on the same session."""
    heard = Heard()
    async with Client(stalling.url, timeout=5, watchdog_intervall=10) as client:  # its probe would end the session
        subscription = await client.create_subscription(1000, heard)
        index = await client.get_namespace_index(NS)
        await subscription.subscribe_data_change(client.get_node(f"ns={index};s=BESS.SOC"))
        await until(lambda: heard.count >= 2, 5, "notifications before the stall")
        await heard.next()
        await asyncio.sleep(0.2)  # the client's next PublishRequest is read, and answered at the next cycle
        try:
            await await_deferred(stalling.sim.fault("ems1", "stall"))
            before = heard.count
            await asyncio.sleep(2.5)
            during = heard.count - before
        finally:
            await await_deferred(stalling.sim.fault("ems1", "healthy"))
        await until(lambda: heard.count >= before + 2, 5, "notifications after the stall")
        assert 0.0 <= await read_soc(client) <= 100.0
    assert during == 0


@on_asyncio
async def test_a_stalled_simulator_stops_at_once(tmp_path: Path) -> None:
    """Stopping during a stall closes the held connections, old and new, without waiting for an answer."""
    loop = asyncio.get_running_loop()
    [port] = next_ports(1)
    sim = OpcUaSimulator([device(port)], reactor, period_s=0.1, cert_dir=tmp_path)
    await await_deferred(sim.start())
    client = Client(f"opc.tcp://127.0.0.1:{port}", timeout=1)
    await client.connect()
    try:
        await await_deferred(sim.fault("ems1", "stall"))
        with pytest.raises(asyncio.TimeoutError):
            await read_soc(client)
        late = asyncio.ensure_future(Client(f"opc.tcp://127.0.0.1:{port}", timeout=10).connect())
        await asyncio.sleep(0.3)  # accepted and held
    finally:
        stopping = loop.time()
        try:
            await asyncio.wait_for(await_deferred(sim.stop()), 5)
        finally:
            client.disconnect_socket()
    stopped = loop.time() - stopping
    with pytest.raises(ConnectionError):
        await late
    assert stopped < 2.0, f"stopping took {stopped:.1f} s"
