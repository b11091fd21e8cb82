"""The shipped framed-serial profiles, read whole: each loaded through the site loader (arrays
expanded), served by the framed simulator and polled by the plugin's drivers, every point GOOD and
equal to the served value within its field's quantisation (IV where the served value is the
field's invalid sentinel); and ``gridgate check`` accepting a site that uses each of them.

- sensor/gridgate-dts-framed: two units, addresses 1 and 2, sharing one socat pty pair
- sensor/gridgate-fbg-4c16: an FBG interrogator over TCP (length-prefixed, 64 gratings)
- bms/gridgate-cabinet-ydt1363: a YD/T 1363.3 cabinet over TCP (ASCII hex)
"""

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from twisted.internet import reactor

from drivers.serial_framed.profile import FramedPoint
from drivers.serial_framed.sim.server import FramedSimulator
from gateway.aio import await_deferred
from gateway.config.loader import load_site
from gateway.model import Device, Quality
from gateway.registry import load_plugins
from tests.aio import on_asyncio, until
from tests.devices import socat_cable
from tests.framed import FramedGateway
from tests.ports import next_ports

pytestmark = pytest.mark.integration

DTS, FBG, CABINET = "sensor/gridgate-dts-framed", "sensor/gridgate-fbg-4c16", "bms/gridgate-cabinet-ydt1363"
FAST = {"poll_s": 0.2, "timeout_s": 0.5, "retries": 1, "offline_after": 3}


def _site_file(folder: Path, name: str, devices: list[dict[str, Any]]) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"site": name, "devices": devices}, sort_keys=False))
    return path


def _devices(folder: Path, name: str, devices: list[dict[str, Any]]) -> list[Device]:
    """The devices of a site file using the shipped profiles, through the real loader."""
    return load_site(_site_file(folder, name, devices), load_plugins()).devices


def expected(point: FramedPoint, served: Any) -> tuple[Any, Quality]:
    """What the driver must publish for a served engineering value: the value the field carries
    and GOOD, or None and IV for the field's invalid sentinel."""
    if point.bit is not None:
        return bool(served), Quality.GOOD
    if point.enum is not None:
        return (served if isinstance(served, str) else point.enum[int(served)]), Quality.GOOD
    if point.type == "fbg":
        return served, Quality.GOOD
    raw = round((float(served) - point.offset) / point.scale)
    if raw in point.invalid:
        return None, Quality.IV
    if point.value_kind() == "int":
        return raw, Quality.GOOD
    return raw * point.scale + point.offset, Quality.GOOD


def tolerance(point: FramedPoint) -> float:
    """How far a value may be from the served one: half a step of an integer field; for a grating,
    two wavelengths (its own and its reference's) each rounded to the table's 1e-4 nm."""
    if point.grating is not None:
        c = list(point.grating.coefficients) + [0.0]
        return 1e-4 * (c[1] + 2 * abs(c[2]) * 0.2) + 1e-9
    return 1e-6


class Polled(FramedGateway):
    """The plugin's drivers for some devices, compared with what the simulator serves."""

    def mismatches(self, simulator: FramedSimulator) -> list[str]:
        """Every point whose published value or quality is not what the simulator serves now."""
        wrong = []
        for device in self.devices:
            for point in device.profile.points:
                assert isinstance(point, FramedPoint)
                value, quality = expected(point, simulator.value(device.name, point.id))
                sample = self.sink.get(f"{device.name}.{point.id}")
                if sample is None or sample.quality != quality:
                    wrong.append(f"{device.name}.{point.id}: {sample and sample.quality} != {quality}")
                elif isinstance(value, float) and sample.value != pytest.approx(value, abs=tolerance(point)):
                    wrong.append(f"{device.name}.{point.id}: {sample.value} != {value}")
                elif not isinstance(value, float) and (sample.value != value or type(sample.value) is not type(value)):
                    wrong.append(f"{device.name}.{point.id}: {sample.value!r} != {value!r}")
        return wrong

    async def all_as_served(self, simulator: FramedSimulator, timeout_s: float = 10) -> None:
        """Until every point is as served (the simulator moves its values every second, so a
        moment right after a whole poll is awaited); the first mismatches named otherwise."""
        last: list[str] = []

        def as_served() -> bool:
            last[:] = self.mismatches(simulator)
            return not last
        try:
            await until(as_served, timeout_s, "every point as served")
        except AssertionError:
            assert last[:10] == []
            raise



@pytest.fixture
def cable(tmp_path: Path) -> Iterator[tuple[str, str]]:
    yield from socat_cable(tmp_path)


@on_asyncio
async def test_two_framed_dts_units_share_a_line_and_every_zone_arrives(tmp_path: Path,
                                                                       cable: tuple[str, str]) -> None:
    """Two GG-DTS-B4 on one pty pair: all 2 x 1294 points as served, the hot zone in alarm, no
    break position while the fibre is whole (IV), then one that arrives."""
    def units(port: str) -> list[dict[str, Any]]:
        return [{"name": f"dts{a}", "profile": DTS, **FAST, "connection": {"serial": port, "address": a}}
                for a in (1, 2)]
    polled_side = _devices(tmp_path, "gateway", units(cable[0]))
    served_side = [dataclasses.replace(d, connection=d.connection.model_copy(update={"serial": cable[1]}))
                   for d in polled_side]
    assert [len(d.profile.points) for d in polled_side] == [1294, 1294]
    simulator = FramedSimulator(served_side, reactor, period_s=1.0)
    await await_deferred(simulator.start())
    try:
        async with Polled(polled_side) as polled:
            await polled.all_as_served(simulator)
            for unit in ("dts1", "dts2"):
                assert polled.value(f"{unit}.ch4_z64_alarm") is True
                assert polled.value(f"{unit}.ch4_z64_prealarm") is True
                assert polled.value(f"{unit}.ch4_z64_tmax") > 70
                assert polled.value(f"{unit}.ch4_z63_alarm") is False
                assert polled.value(f"{unit}.unit_state") == "normal"
                assert polled.sink.get(f"{unit}.ch3_break_position").quality == Quality.IV
            simulator.set_value("dts2", "ch3_fiber_break", True)
            simulator.set_value("dts2", "ch3_break_position", 1234)
            await until(lambda: polled.value("dts2.ch3_break_position") == 1234, 5, "a break position arrives")
            assert polled.value("dts2.ch3_fiber_break") is True and polled.value("dts1.ch3_fiber_break") is False
    finally:
        await await_deferred(simulator.stop())


@on_asyncio
async def test_the_fbg_interrogator_gives_all_64_gratings(tmp_path: Path) -> None:
    """GG-FBG-4C16 over TCP: every grating's temperature (its reference's shift subtracted) within
    the wavelength resolution, the header fields exact."""
    [port] = next_ports(1)
    devices = _devices(tmp_path, "fbg", [{"name": "fbg", "profile": FBG, **FAST,
                                          "connection": {"host": "127.0.0.1", "port": port}}])
    gratings = [p for p in devices[0].profile.points if p.type == "fbg"]
    assert len(gratings) == 64 and sum(p.grating.reference is None for p in gratings) == 4
    simulator = FramedSimulator(devices, reactor, period_s=1.0)
    await await_deferred(simulator.start())
    try:
        async with Polled(devices) as polled:
            await polled.all_as_served(simulator)
            assert polled.value("fbg.serial_no") == 416001
    finally:
        await await_deferred(simulator.stop())


@on_asyncio
async def test_the_ydt1363_cabinet_gives_its_analog_values_and_alarms(tmp_path: Path) -> None:
    """GG-CAB-Y1363 over TCP at address 3: every analog value and alarm bit as served; a smoke
    alarm and an over-voltage cell arrive."""
    [port] = next_ports(1)
    devices = _devices(tmp_path, "cabinet", [{"name": "cab", "profile": CABINET, **FAST,
                                              "connection": {"host": "127.0.0.1", "port": port, "address": 3}}])
    simulator = FramedSimulator(devices, reactor, period_s=1.0)
    await await_deferred(simulator.start())
    try:
        async with Polled(devices) as polled:
            await polled.all_as_served(simulator)
            assert polled.value("cab.cell_count") == 16 and polled.value("cab.temperature_count") == 4
            assert 25 <= polled.value("cab.temperature1") <= 35
            simulator.set_value("cab", "smoke", True)
            simulator.set_value("cab", "cell07_overvoltage", True)
            await until(lambda: polled.value("cab.smoke") is True, 5, "smoke arrives")
            await polled.all_as_served(simulator)
            assert polled.value("cab.cell07_overvoltage") is True and polled.value("cab.cell07_undervoltage") is False
            assert polled.value("cab.door_open") is False
    finally:
        await await_deferred(simulator.stop())


@pytest.mark.parametrize("profile,connection", [
    (DTS, {"serial": "/dev/ttyUSB0", "baudrate": 115200, "address": 1}),
    (FBG, {"host": "192.0.2.10", "port": 4001}),
    (CABINET, {"host": "192.0.2.11", "port": 4001, "address": 1}),
])
def test_gridgate_check_accepts_a_site_with_the_profile(tmp_path: Path, profile: str,
                                                        connection: dict[str, Any]) -> None:
    site = _site_file(tmp_path, "site", [{"name": "dev1", "profile": profile, "poll_s": "5s",
                                          "connection": connection}])
    gridgate = Path(sys.executable).with_name("gridgate")
    result = subprocess.run([str(gridgate), "check", str(site)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "site.yaml: OK" in result.stdout and Path(profile).name in result.stdout
