"""`gridgate discover` against the Modbus simulator serving the shipped SunSpec profiles on
127.0.0.1: it finds exactly the profile's models, and its draft passes `gridgate check` and,
polled by the Modbus driver, reads every register as the shipped profile serves it. Scale
factors end to end: a power-limit command encoded with the exponent the driver read, judged on
the wire by a plain pymodbus client; refused while no exponent is known."""

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from pymodbus.client import AsyncModbusTcpClient
from twisted.internet import reactor

from drivers.modbus import DRIVER
from drivers.modbus.profile import ModbusOptions, ModbusPoint, ModbusProfile
from drivers.modbus.sim.server import ModbusSimulator
from drivers.modbus.sunspec.discovery import discover
from gateway.aio import await_deferred
from gateway.config.loader import SHIPPED_PROFILES, ProfileLoader
from gateway.config.profile import SimBehaviour
from gateway.errors import CommandRejected
from gateway.model import Command, Quality
from tests.aio import on_asyncio
from tests.devices import modbus_device, on_port
from tests.sinks import RecordingSink

pytestmark = pytest.mark.integration

GRIDGATE = str(Path(sys.executable).with_name("gridgate"))
INVERTER_MODELS = [(1, 40002, 66), (103, 40070, 50), (120, 40122, 26), (121, 40150, 30), (122, 40182, 44),
                   (123, 40228, 24), (160, 40254, 48)]
METER_MODELS = [(1, 40002, 66), (203, 40070, 105)]


def _load(path: Path) -> ModbusProfile:
    profile, problems = ProfileLoader({"modbus": DRIVER}).load(path)
    assert isinstance(profile, ModbusProfile), problems
    return profile


def _chain(profile: ModbusProfile) -> list[tuple[int, int, int]]:
    """The models the profile serves: each `<model>_id` constant with its `_l` right after it."""
    by_address = {p.address: p for p in profile.points}
    return [(int(p.sim.value), p.address, int(by_address[p.address + 1].sim.value))
            for p in profile.points if p.id.endswith("_id") and p.id != "end_id" and p.sim and p.sim.value
            and by_address.get(p.address + 1, p).id.endswith("_l")]


async def _gridgate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The installed CLI, in a thread: the simulator under test runs on this process's loop."""
    return await asyncio.to_thread(subprocess.run, [GRIDGATE, *args], cwd=cwd, capture_output=True, text=True,
                                   timeout=120)


@pytest.fixture(params=[("pv/gridgate-sunspec-inverter.yaml", INVERTER_MODELS),
                        ("meter/gridgate-sunspec-meter.yaml", METER_MODELS)], ids=["inverter", "meter"])
def served(request: pytest.FixtureRequest) -> Iterator[tuple[ModbusSimulator, ModbusProfile, int, list]]:
    """A shipped SunSpec profile served on a free port; one tick, then values held (a slow tick),
    so the draft's values can be compared with the served ones exactly."""
    file, models = request.param
    profile = _load(SHIPPED_PROFILES / file)
    simulator = ModbusSimulator([modbus_device("dev", profile, host="127.0.0.1", port=0, unit=1)], reactor,
                                period_s=3600)
    pytest_twisted.blockon(simulator.start())
    yield simulator, profile, simulator.port_of("dev"), models
    pytest_twisted.blockon(simulator.stop())


def test_shipped_profiles_serve_the_chain_they_declare() -> None:
    """The shipped profiles' ID/L constants are the SunSpec chain this test expects (guards the fixture)."""
    assert _chain(_load(SHIPPED_PROFILES / "pv" / "gridgate-sunspec-inverter.yaml")) == INVERTER_MODELS
    assert _chain(_load(SHIPPED_PROFILES / "meter" / "gridgate-sunspec-meter.yaml")) == METER_MODELS


@on_asyncio
async def test_discovery_finds_exactly_the_served_models(served: tuple) -> None:
    """The marker at 40000 and every model with its id, address and length, all known."""
    _, _, port, models = served
    found = await discover("127.0.0.1", port, 1, 2.0)
    assert found.base == 40000
    assert [(m.id, m.address, m.length) for m in found.models] == models
    assert all(m.known for m in found.models)


@on_asyncio
async def test_draft_passes_check_and_polls_what_the_simulator_serves(served: tuple, tmp_path: Path) -> None:
    """The CLI's draft passes `gridgate check` from a site's profile_dirs, and the driver polling it
    reads each register as the shipped point there serves it: strings, counters, scale factors."""
    simulator, shipped, port, models = served
    result = await _gridgate("discover", f"127.0.0.1:{port}", "--unit", "1", "--out", "drafts/device.yaml",
                             cwd=_folder(tmp_path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"127.0.0.1:{port} unit 1: SunSpec marker at 40000"
    assert [line.split()[1] for line in lines[1:1 + len(models)]] == [str(m[0]) for m in models]
    site = tmp_path / "site.yaml"
    site.write_text("site: t\nprofile_dirs: [drafts]\ndevices:\n"
                    f"  - {{name: dev, profile: device, connection: {{host: 127.0.0.1, port: {port}, unit: 1}}}}\n")
    checked = await _gridgate("check", str(site), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    draft = _load(tmp_path / "drafts" / "device.yaml")
    assert draft.model == ("GG-PV-100K" if models == INVERTER_MODELS else "GG-SM-3W")
    polled = await _poll(draft, port)
    by_address = {p.address: p for p in shipped.points}
    for point in draft.points:
        value, quality = polled[point.id]
        assert quality == Quality.GOOD and value == simulator.value("dev", by_address[point.address].id), point.id
    engine = simulator.engine("dev").values()
    power = engine["w"]
    assert abs(polled["m103_w" if models == INVERTER_MODELS else "m203_w"][0] - power) <= 5  # W_SF 1: 10 W steps


def _folder(tmp_path: Path) -> Path:
    (tmp_path / "drafts").mkdir()
    return tmp_path


async def _poll(profile: ModbusProfile, port: int) -> dict[str, tuple[Any, Quality]]:
    """One good poll of every point of ``profile`` by the Modbus driver."""
    device = modbus_device("draft", profile, host="127.0.0.1", port=port, unit=1, poll_s=0.2, timeout_s=1.0)
    sink = RecordingSink()
    [driver] = DRIVER.build([device], sink, reactor)
    driver.start()
    try:
        await await_deferred(sink.wait_for(lambda: all(sink.get(f"draft.{p.id}") is not None for p in profile.points),
                                            reactor))
    finally:
        await await_deferred(driver.stop())
    return {p.id: (sink.get(f"draft.{p.id}").value, sink.get(f"draft.{p.id}").quality) for p in profile.points}


@on_asyncio
async def test_no_marker_exits_1_with_one_line(tmp_path: Path) -> None:
    """A Modbus device without 'SunS' at 40000, 50000 or 0: exit 1, one line naming it, no file."""
    plain = ModbusProfile(model="plain", kind="meter", protocol="modbus", modbus=ModbusOptions(max_gap=0), points=[
        ModbusPoint(id="a", address=0, sim=SimBehaviour(value=7)), ModbusPoint(id="b", address=1)])
    simulator = ModbusSimulator([modbus_device("plain", plain, host="127.0.0.1", port=0, unit=1)], reactor)
    await await_deferred(simulator.start())
    try:
        port = simulator.port_of("plain")
        result = await _gridgate("discover", f"127.0.0.1:{port}", "--timeout", "2", cwd=tmp_path)
    finally:
        await await_deferred(simulator.stop())
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"gridgate discover: 127.0.0.1:{port} unit 1: no SunSpec marker 'SunS' (0x5375 0x6E53) in holding "
        "registers 40000, 50000, 0"]
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def inverter() -> Iterator[tuple[ModbusSimulator, Any, RecordingSink, int]]:
    """The shipped inverter served and polled by the driver (not started: the test starts it)."""
    profile = _load(SHIPPED_PROFILES / "pv" / "gridgate-sunspec-inverter.yaml")
    device = modbus_device("inv", profile, host="127.0.0.1", port=0, unit=1, poll_s=0.2, timeout_s=1.0)
    simulator = ModbusSimulator([device], reactor, period_s=0.2)
    pytest_twisted.blockon(simulator.start())
    sink = RecordingSink()
    port = simulator.port_of("inv")
    [driver] = DRIVER.build([on_port(device, port)], sink, reactor)
    yield simulator, driver, sink, port
    pytest_twisted.blockon(driver.stop())
    pytest_twisted.blockon(simulator.stop())


@on_asyncio
async def test_power_limit_is_written_with_the_exponent_read(inverter: tuple) -> None:
    """Before the first poll no exponent is known: refused. After it, 55.5 % is written as raw 555
    (WMaxLimPct_SF -1, read on the wire by a plain client) and read back as 55.5."""
    simulator, driver, sink, port = inverter
    with pytest.raises(CommandRejected, match="scale factor 'controls_wmaxlimpct_sf' is not known"):
        await await_deferred(driver.execute(Command("inv", "controls_wmaxlimpct", 55.5, time.time() + 2)))
    driver.start()
    await await_deferred(sink.wait_for(lambda: (s := sink.get("inv.controls_wmaxlimpct")) is not None
                                       and s.quality == Quality.GOOD, reactor))
    assert sink.get("inv.controls_wmaxlimpct").value == 100.0
    result = await await_deferred(driver.execute(Command("inv", "controls_wmaxlimpct", 55.5, time.time() + 2)))
    assert result.readback == 55.5 and simulator.value("inv", "controls_wmaxlimpct") == 55.5
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    await client.connect()
    try:
        reply = await client.read_holding_registers(40233, count=1, device_id=1)
        exponent = await client.read_holding_registers(40251, count=1, device_id=1)
    finally:
        client.close()
    assert reply.registers == [555] and exponent.registers == [0xFFFF]  # -1 as int16
    await await_deferred(sink.wait_for(lambda: sink.get("inv.w").quality == Quality.GOOD, reactor))
    assert sink.get("inv.common_md").value == "GG-PV-100K" and sink.get("inv.mppt2_idstr").value == "MPPT 2"
