"""1,000 monitored items at 100 ms publishing on one OPC UA device: every item subscribed, every
change published, in batches (not one publish per notification)."""

import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from drivers.opcua.profile import OpcUaConnection, OpcUaOptions, OpcUaPoint, OpcUaProfile
from drivers.opcua.sim.server import OpcUaSimulator
from gateway.config.profile import SimBehaviour
from gateway.model import Device, Quality
from tests.integration.test_opcua_driver import Running
from tests.aio import on_asyncio, until
from tests.ports import next_ports

pytestmark = pytest.mark.integration

ITEMS = 1000
PROFILE = OpcUaProfile(
    model="big", kind="other", protocol="opcua", opcua=OpcUaOptions(namespace="urn:gridgate:test:big", sampling_ms=100),
    points=[OpcUaPoint(id=f"t{n:04d}", node=f"i={10_000 + n}", data_type="Float",
                       sim=SimBehaviour(kind="ramp", value=float(n % 100), step=1.0, min=0, max=1000))
            for n in range(ITEMS)])


@pytest_twisted.async_yield_fixture(scope="module")
async def big(tmp_path_factory: pytest.TempPathFactory) -> Any:
    [port] = next_ports(1)
    device = Device("big", PROFILE, Path("x.yaml"),
                    OpcUaConnection(endpoint=f"opc.tcp://127.0.0.1:{port}", publishing_interval_ms=100), {})
    simulator = OpcUaSimulator([device], reactor, period_s=0.5, cert_dir=tmp_path_factory.mktemp("big"))
    await simulator.start()
    try:
        yield device
    finally:
        await simulator.stop()


@on_asyncio
async def test_a_thousand_items_at_100_ms_all_arrive_and_keep_arriving(big: Device) -> None:
    async with Running(big) as run:
        ids = [p.id for p in PROFILE.points]
        await until(lambda: run.good(*ids), 30, "all 1,000 items good")
        first = {p: run.sample(p).value for p in ids}
        started, batches = time.monotonic(), run.driver.stats()["batches"]["batches"]
        await until(lambda: all(run.sample(p).value != first[p] for p in ids), 10, "every item changed again")
        stats = run.driver.stats()
        assert stats["not_served"] == {} and stats["notifications"] >= 2 * ITEMS
        assert stats["batches"]["largest"] >= 100  # one publish per reactor turn, not per notification
        assert stats["batches"]["batches"] - batches < stats["notifications"] / 10
        assert all(run.sample(p).quality == Quality.GOOD for p in ids)
        assert time.monotonic() - started < 10
