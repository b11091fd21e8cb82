"""DevicePoller with a scripted link (no sockets): failures are contained, counted by cause, logged once."""

import logging
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from drivers.modbus.poller import PROBE_MAX_S, DevicePoller, failure_cause
from drivers.modbus.profile import ModbusPoint, ModbusProfile
from gateway.aio import as_deferred
from gateway.errors import BadReply, DeviceError, DeviceException, DeviceGarbage, DeviceTimeout
from gateway.model import Quality
from tests.devices import modbus_device
from tests.sinks import RecordingSink

PROFILE = ModbusProfile(model="one", kind="meter", protocol="modbus", points=[
    ModbusPoint(id="soc", table="input", address=0, type="uint16")])


class ScriptedLink:
    """Answers each call with the next outcome: a reply, or an exception to raise."""

    def __init__(self, *outcomes: Any) -> None:
        self.outcomes = list(outcomes)

    async def call(self, device: str, timeout_s: float, retries: int, priority: bool, request: Any) -> Any:
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return SimpleNamespace(registers=outcome, bits=[])


def _poller(link: ScriptedLink, sink: RecordingSink) -> DevicePoller:
    device = modbus_device("m", PROFILE, offline_after=2, host="127.0.0.1", port=1502)
    clock = Clock()
    clock.advance(1000.0)
    return DevicePoller(device, link, sink, clock)  # type: ignore[arg-type]


@pytest.mark.parametrize(("exc", "cause"), [
    (BadReply("m", "byte_count", "x"), "byte_count"), (DeviceTimeout("m", "x"), "timeout"),
    (DeviceException("m", 4), "exception"), (DeviceGarbage("m", "x"), "garbage"),
    (DeviceError("m", "not connected"), "connection"), (IndexError("list index out of range"), "internal")])
def test_failure_cause_names_the_counter(exc: Exception, cause: str) -> None:
    """Each typed failure, and anything unexpected, maps to the counter it is counted under."""
    assert failure_cause(exc) == cause


@pytest_twisted.inlineCallbacks
def test_unexpected_error_is_contained_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> Iterator:
    """An IndexError in a poll fails it like a timeout (NT, then IV), is counted, and logs once per episode."""
    caplog.set_level(logging.INFO, logger="gateway.health")
    sink = RecordingSink()
    poller = _poller(ScriptedLink([5], IndexError("short"), IndexError("short"),
                                  BadReply("m", "function_code", "FC3, expected FC4"), [6]), sink)
    qualities = []
    for _ in range(5):
        yield as_deferred(poller.poll())  # never raises
        qualities.append((sink.get("m.soc").value, sink.get("m.soc").quality))
    assert qualities == [(5, Quality.GOOD), (5, Quality.NT), (5, Quality.IV | Quality.NT),
                         (5, Quality.IV | Quality.NT), (6, Quality.GOOD)]
    assert poller.causes == {"internal": 2, "function_code": 1}
    failed = [r for r in caplog.records if getattr(r, "episode", None) == "failed"]
    assert [r.cause for r in failed] == ["internal", "function_code"]
    assert failed[0].exc_info is not None and "m: poll failed (internal)" in failed[0].getMessage()
    recovered = [r.getMessage() for r in caplog.records if getattr(r, "episode", None) == "recovered"]
    assert recovered == ["m: answering again after 3 failed poll(s) (internal 2, function_code 1)"]


def test_probe_interval_survives_a_long_outage() -> None:
    """Thousands of failed probes keep the probe interval at its cap (2 ** n once overflowed a float)."""
    poller = _poller(ScriptedLink(), RecordingSink())
    for _ in range(5000):
        poller.health.failed("timeout", DeviceTimeout("m", "no answer"))
    assert poller.health._probe.next_at == 1000.0 + PROBE_MAX_S
