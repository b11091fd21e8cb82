"""The shipped DTS profile, written with point arrays, over Modbus RTU: the simulator on one end of a
socat pty pair, the gateway's Modbus driver polling the other."""

from pathlib import Path
from typing import Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor

from drivers.modbus import DRIVER
from drivers.modbus.profile import ModbusProfile
from drivers.modbus.sim.server import ModbusSimulator
from gateway.config.loader import SHIPPED_PROFILES, ProfileLoader
from gateway.model import Quality
from tests.devices import modbus_device, socat_cable
from tests.sinks import RecordingSink

pytestmark = pytest.mark.integration

PROFILE = SHIPPED_PROFILES / "sensor" / "gridgate-dts-modbus.yaml"
FAULTY_ZONE = "ch2_z05_status"
QUANTUM = 0.05 + 1e-9  # half of the 0.1 degC register step
TMAX = {f"ch{ch}_z{zone:02d}_tmax": 20 + 10 * ch + 0.1 * zone for ch in range(1, 5) for zone in range(1, 65)}


def _shipped() -> ModbusProfile:
    profile, problems = ProfileLoader({"modbus": DRIVER}).load(PROFILE)
    assert profile is not None and isinstance(profile, ModbusProfile), problems
    return profile


def _as_the_device_serves_it(profile: ModbusProfile) -> ModbusProfile:
    """The device's own view: raw 65535 in a zone status is just a value to it; only the gateway's
    profile reads it as the fault marker (the simulator refuses to serve its own sentinels)."""
    points = [p.model_copy(update={"invalid": ()}) if p.id == FAULTY_ZONE else p for p in profile.points]
    return profile.model_copy(update={"points": points})


@pytest.fixture
def dts_line(tmp_path: Path) -> Iterator[tuple]:
    """The DTS simulated on one end of an RTU line (values still until a test sets them), the
    driver with the shipped profile on the other; both stopped afterwards."""
    cable = socat_cable(tmp_path)
    device_end, gateway_end = next(cable)
    profile = _shipped()
    simulator = ModbusSimulator([modbus_device("dts", _as_the_device_serves_it(profile), serial=device_end, unit=1)],
                                reactor, period_s=3600)
    pytest_twisted.blockon(simulator.start())
    sink = RecordingSink()
    [driver] = DRIVER.build([modbus_device("dts", profile, serial=gateway_end, unit=1, poll_s=0.2, timeout_s=0.5)],
                            sink, reactor)
    driver.start()
    yield simulator, sink
    pytest_twisted.blockon(driver.stop())
    pytest_twisted.blockon(simulator.stop())
    next(cable, None)


def _arrived(sink: RecordingSink, point: str, value: float) -> bool:
    sample = sink.get(f"dts.{point}")
    return sample is not None and sample.quality == Quality.GOOD and abs(sample.value - value) <= QUANTUM


def test_the_shipped_profile_expands_to_every_zone() -> None:
    """4 channels x 64 zones of six zone values, 4 x 4 channel values and 3 device values; zone tables 256 apart."""
    profile = _shipped()
    assert len(profile.points) == 6 * 256 + 16 + 3
    assert profile.point("ch3_z17_tmax").address == 1000 + 2 * 256 + 16
    assert profile.point("ch4_z63_status").address == 3000 + 3 * 256 + 62
    assert (profile.point("ch2_z01_alarm").address, profile.point("ch2_z01_alarm").bit) == (4256, 1)
    assert profile.point("ch4_fiber_length").address == 124


@pytest_twisted.inlineCallbacks
def test_zones_arrive_as_served_fault_is_iv_alarm_bit_is_true(dts_line: tuple) -> Iterator:
    """Every zone maximum arrives good at the simulator's value; status 65535 gives IV; alarm bits arrive True."""
    simulator, sink = dts_line
    for point, value in TMAX.items():
        simulator.set_value("dts", point, value)
    yield sink.wait_for(lambda: all(_arrived(sink, p, v) for p, v in TMAX.items()), reactor, timeout_s=10)
    for point in TMAX:
        assert abs(sink.get(f"dts.{point}").value - simulator.value("dts", point)) <= QUANTUM, point
    assert _arrived(sink, "ch4_z64_status", 3176) and sink.get("dts.ch4_z64_alarm").value is True, "the simulated hot spot"

    simulator.set_value("dts", FAULTY_ZONE, 65535)
    simulator.set_value("dts", "ch1_z07_rate_alarm", True)
    yield sink.wait_for(lambda: sink.get(f"dts.{FAULTY_ZONE}").quality == Quality.IV
                        and _arrived(sink, "ch1_z07_rate_alarm", True), reactor, timeout_s=5)
    assert _arrived(sink, "ch2_z06_status", 0) and _arrived(sink, "ch1_z07_alarm", False), "neighbours untouched"
