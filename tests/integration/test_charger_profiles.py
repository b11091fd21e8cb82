"""The shipped EV charger profiles served by the Modbus simulator and polled by the driver:
sessions start, draw power and end, each session's energy counts from zero, the power limit set
through the driver caps the power, and remote stop ends the session. The profiles' session
period is shortened here (the shipped one is 15-20 minutes), nothing else changed."""

import time
from typing import Any, Iterator

import pytest
import pytest_twisted
import yaml
from twisted.internet import reactor

from drivers.modbus import DRIVER
from drivers.modbus.profile import ModbusProfile
from drivers.modbus.sim.server import ModbusSimulator
from gateway.config.loader import SHIPPED_PROFILES
from gateway.model import Command, Quality
from tests.devices import modbus_device, on_port
from tests.sinks import RecordingSink

pytestmark = pytest.mark.integration
PERIOD_S = 4.0


def fast_sessions(name: str) -> ModbusProfile:
    """A shipped charger profile with sessions every PERIOD_S seconds."""
    tree = yaml.safe_load((SHIPPED_PROFILES / "charger" / f"{name}.yaml").read_text())
    for point in tree["points"]:
        if point.get("sim", {}).get("kind") == "session":
            point["sim"]["period_s"] = PERIOD_S
    return ModbusProfile.model_validate(tree)


@pytest.fixture(params=[("gridgate-dc-charger", "connector_state", "dc_power", "session_energy", 160.0),
                        ("gridgate-ac-charger", "charging_state", "active_power", "session_energy", 22080.0)],
                ids=["dc", "ac"])
def charger(request: pytest.FixtureRequest) -> Iterator[tuple[Any, ...]]:
    name, state, power, energy, full = request.param
    profile = fast_sessions(name)
    device = modbus_device("ev1", profile, host="127.0.0.1", port=0, unit=1, poll_s=0.1, timeout_s=0.5)
    simulator = ModbusSimulator([device], reactor, period_s=0.1)
    pytest_twisted.blockon(simulator.start())
    sink = RecordingSink()
    [driver] = DRIVER.build([on_port(device, simulator.port_of("ev1"))], sink, reactor)
    driver.start()
    yield simulator, driver, sink, (state, power, energy, full)
    pytest_twisted.blockon(driver.stop())
    pytest_twisted.blockon(simulator.stop())


def _values(sink: RecordingSink, point: str) -> list[Any]:
    return [s.value for s in sink.samples_of(f"ev1.{point}") if s.quality == Quality.GOOD]


@pytest_twisted.inlineCallbacks
def test_sessions_start_draw_power_and_end_and_the_limit_and_stop_act(charger: tuple[Any, ...]) -> Iterator:
    simulator, driver, sink, (state, power, energy, full) = charger
    yield sink.wait_for(lambda: 0 in _values(sink, power) and any(p > 0 for p in _values(sink, power)) and
                        _values(sink, power)[-1] == 0 and 3 in _values(sink, state), reactor, timeout_s=3 * PERIOD_S)
    states = _values(sink, state)
    assert set(states) <= {1, 3} and {1, 3} <= set(states)
    assert max(_values(sink, power)) == pytest.approx(full, rel=0.01)
    assert max(_values(sink, energy)) > 0
    limit = 11.0
    result = yield driver.execute(Command("ev1", "power_limit", limit, time.time() + 2))
    assert result.readback == pytest.approx(limit)
    cap = limit if power == "dc_power" else limit * 1000
    seen = len(_values(sink, power))
    yield sink.wait_for(lambda: any(p > 0 for p in _values(sink, power)[seen:]), reactor, timeout_s=3 * PERIOD_S)
    assert 0 < max(_values(sink, power)[seen + 2:] or [cap]) <= cap * 1.01
    yield driver.execute(Command("ev1", "remote_enable", 0, time.time() + 2))
    stopped = len(_values(sink, power))
    yield sink.wait_for(lambda: len(_values(sink, power)) > stopped + 1.5 * PERIOD_S / 0.1, reactor,
                        timeout_s=6 * PERIOD_S)
    assert set(_values(sink, power)[stopped + 3:]) == {0} and set(_values(sink, state)[stopped + 3:]) == {1}
    assert simulator.value("ev1", "remote_enable") == 0
