"""The Modbus driver against the real pymodbus-based simulator on 127.0.0.1 and on a socat serial pair."""

import time
from pathlib import Path
from typing import Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from drivers.modbus import DRIVER
from drivers.modbus.profile import ModbusPoint, ModbusProfile
from drivers.modbus.sim.server import ModbusSimulator
from gateway.config.profile import Limits
from gateway.model import Command, Quality
from tests.devices import modbus_device, on_port, socat_cable
from tests.sinks import RecordingSink

pytestmark = pytest.mark.integration

ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
WIDE_TYPES = {"int32": (-123456789, 987654321), "uint32": (3000000000, 17),
              "float32": (-1234.5, 6789.25), "int64": (-(2**62) + 5, 2**40 + 3),
              "uint64": (2**63 + 11, 42), "float64": (-1.0e12 / 3, 2.5e-3)}


def _order_profile() -> ModbusProfile:
    points, address = [], 0
    for dtype in WIDE_TYPES:
        for order in ORDERS:
            points.append(ModbusPoint(id=f"{dtype}_{order.lower()}", address=address, type=dtype, order=order,
                                      writable=Limits(min=-1e19, max=1e19)))
            address += 4
    return ModbusProfile(model="orders", kind="other", protocol="modbus", points=points)


def _close(a: float, b: float) -> bool:
    return a == b or abs(a - b) <= 1e-6 * max(abs(a), abs(b))


@pytest.fixture
def tcp_pair() -> Iterator[tuple]:
    """A simulator on a free TCP port and a driver for the same device, both stopped afterwards."""
    profile = _order_profile()
    device = modbus_device("dev", profile, host="127.0.0.1", port=0, unit=1)
    simulator = ModbusSimulator([device], reactor)
    pytest_twisted.blockon(simulator.start())
    sink = RecordingSink()
    [driver] = DRIVER.build([on_port(device, simulator.port_of("dev"))], sink, reactor)
    driver.start()
    yield simulator, driver, sink, profile
    pytest_twisted.blockon(driver.stop())
    pytest_twisted.blockon(simulator.stop())


@pytest_twisted.inlineCallbacks
def test_every_word_and_byte_order_reads_and_writes(tcp_pair: tuple) -> Iterator:
    """32- and 64-bit types in ABCD/CDAB/BADC/DCBA: the driver reads what the device serves and writes what it means."""
    simulator, driver, sink, profile = tcp_pair
    for point in profile.points:
        simulator.set_value("dev", point.id, WIDE_TYPES[point.type][0])
    yield sink.wait_for(lambda: all(
        (s := sink.get(f"dev.{p.id}")) is not None and _close(s.value, WIDE_TYPES[p.type][0])
        for p in profile.points), reactor)
    for point in profile.points:
        target = WIDE_TYPES[point.type][1]
        result = yield driver.execute(Command("dev", point.id, target, time.time() + 2))
        assert _close(result.readback, target), point.id
        assert _close(simulator.value("dev", point.id), target), point.id


def _bus_profile() -> ModbusProfile:
    return ModbusProfile(model="bus", kind="bms", protocol="modbus", points=[
        ModbusPoint(id="soc", table="input", address=0, type="uint16", scale=0.1, unit="%"),
        ModbusPoint(id="voltage", table="input", address=1, type="float32", order="CDAB", unit="V"),
        ModbusPoint(id="current_limit", address=10, type="int16", scale=0.1, unit="A",
                    writable=Limits(min=0, max=200, readback_tolerance=0.1)),
    ])


@pytest.fixture
def rtu_bus(tmp_path: Path) -> Iterator[tuple]:
    """Two unit ids on one socat RTU line: simulator on one end, the gateway's driver on the other."""
    cable = socat_cable(tmp_path)
    device_end, gateway_end = next(cable)
    profile = _bus_profile()
    sim_devices = [modbus_device(name, profile, serial=device_end, unit=unit) for name, unit in (("a", 1), ("b", 2))]
    gw_devices = [modbus_device(name, profile, serial=gateway_end, unit=unit, poll_s=0.2, timeout_s=0.15,
                                offline_after=3) for name, unit in (("a", 1), ("b", 2))]
    simulator = ModbusSimulator(sim_devices, reactor, period_s=0.1)
    pytest_twisted.blockon(simulator.start())
    sink = RecordingSink()
    [driver] = DRIVER.build(gw_devices, sink, reactor)
    driver.start()
    yield simulator, driver, sink
    pytest_twisted.blockon(driver.stop())
    pytest_twisted.blockon(simulator.stop())
    next(cable, None)


def _good(sink: RecordingSink, point: str) -> bool:
    sample = sink.get(point)
    return sample is not None and sample.quality == Quality.GOOD


@pytest_twisted.inlineCallbacks
def test_silent_unit_goes_nt_then_iv_while_neighbour_keeps_rate(rtu_bus: tuple) -> Iterator:
    """Unit a falls silent: NT at its first failed poll, IV once offline; unit b keeps polling; a recovers."""
    simulator, driver, sink = rtu_bus
    simulator.set_value("a", "soc", 55.5)
    yield sink.wait_for(lambda: _good(sink, "a.soc") and sink.get("a.soc").value == 55.5 and _good(sink, "b.soc"), reactor)
    yield simulator.fault("a", "silence")
    fault_at = time.time()
    yield sink.wait_for(lambda: sink.get("a.soc").quality & Quality.IV, reactor, timeout_s=5)
    marks = [(s.quality, s.value) for s in sink.samples_of("a.soc") if s.gateway_time >= fault_at]
    assert marks[0] == (Quality.NT, 55.5), "the first failed poll gives NT with the last value"
    assert marks[-1] == (Quality.IV | Quality.NT, 55.5), "offline gives IV, last value kept"
    b_before = driver.stats()["devices"]["b"]["good_polls"]
    yield _sleep(2.0)
    b_rate = (driver.stats()["devices"]["b"]["good_polls"] - b_before) / 2.0
    assert b_rate >= 0.8 / 0.2, f"neighbour polled {b_rate:.1f}/s during the fault, wants ~5/s"
    yield simulator.clear_fault("a")
    yield sink.wait_for(lambda: _good(sink, "a.soc"), reactor, timeout_s=12)


@pytest_twisted.inlineCallbacks
def test_exception_answer_makes_points_iv_device_stays_online(rtu_bus: tuple) -> Iterator:
    """A unit answering exception 4 gives IV points but is not declared offline; a write reaches the device."""
    simulator, driver, sink = rtu_bus
    yield sink.wait_for(lambda: _good(sink, "b.soc"), reactor)
    result = yield driver.execute(Command("b", "current_limit", 123.4, time.time() + 1))
    assert result.readback == pytest.approx(123.4)
    assert simulator.value("b", "current_limit") == pytest.approx(123.4)
    yield simulator.fault("b", "exception", code=4)
    yield sink.wait_for(lambda: sink.get("b.soc").quality == Quality.IV, reactor)
    assert not driver.stats()["devices"]["b"]["offline"]


@pytest_twisted.inlineCallbacks
def test_tcp_disconnect_and_reconnect(tcp_pair: tuple) -> Iterator:
    """A TCP device that drops off goes IV; once it listens again the driver reconnects with backoff, no restart."""
    simulator, driver, sink, profile = tcp_pair
    first = f"dev.{profile.points[0].id}"
    yield sink.wait_for(lambda: _good(sink, first), reactor)
    yield simulator.fault("dev", "disconnect")
    yield sink.wait_for(lambda: sink.get(first).quality & Quality.IV, reactor, timeout_s=10)
    yield simulator.clear_fault("dev")
    yield sink.wait_for(lambda: _good(sink, first), reactor, timeout_s=15)


def _sleep(seconds: float) -> Deferred:
    return deferLater(reactor, seconds, lambda: None)


@pytest_twisted.inlineCallbacks
def test_garbage_answers_count_as_failed_polls(rtu_bus: tuple) -> Iterator:
    """Frames with a wrong CRC are never taken as values: NT, then IV once offline; the neighbour stays good."""
    simulator, driver, sink = rtu_bus
    yield sink.wait_for(lambda: _good(sink, "a.voltage") and _good(sink, "b.voltage"), reactor)
    yield simulator.fault("a", "garbage")
    yield sink.wait_for(lambda: sink.get("a.voltage").quality & Quality.IV, reactor, timeout_s=5)
    assert driver.stats()["devices"]["a"]["offline"]
    assert _good(sink, "b.voltage")
