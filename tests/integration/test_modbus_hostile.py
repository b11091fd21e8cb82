"""The Modbus driver against a hostile device (tests/hostile_modbus.py): no bad reply becomes a value.

Every spoilt reading reply carries 0x7777 in its data and the device's true values never do, so
"only true values were ever published" proves that nothing from a bad reply reached the sink.
"""

import asyncio
import gc
import logging
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from drivers.modbus import DRIVER
from drivers.modbus.profile import ModbusPoint, ModbusProfile
from gateway.aio import as_deferred
from gateway.config.profile import Limits
from gateway.errors import BadReply, CommandFailed, DeviceException, DeviceTimeout
from gateway.model import Command, Quality, Sample
from tests.devices import modbus_device, socat_cable
from tests.hostile_modbus import HostileRtuDevice, HostileTcpDevice, Image
from tests.sinks import RecordingSink

pytestmark = pytest.mark.integration

PROFILE = ModbusProfile(model="hostile", kind="meter", protocol="modbus", points=[
    ModbusPoint(id="voltage_l1", table="input", address=0, type="float32", unit="V"),
    ModbusPoint(id="frequency", table="input", address=2, type="uint16", scale=0.01, unit="Hz"),
    ModbusPoint(id="energy", table="input", address=3, type="uint32", unit="Wh"),
    ModbusPoint(id="limit", address=10, type="int16", scale=0.1, unit="A",
                writable=Limits(min=0, max=200, readback_tolerance=0.1)),
])
TRUE = {"voltage_l1": 230.5, "frequency": 50.0, "energy": 123456, "limit": 50.0}
COMMANDED = 75.0
VOLTAGE = "hostile.voltage_l1"


def _image() -> Image:
    high, low = struct.unpack(">HH", struct.pack(">f", TRUE["voltage_l1"]))
    return Image(input={0: high, 1: low, 2: 5000, 3: 123456 >> 16, 4: 123456 & 0xFFFF},
                 holding={10: 500})


@dataclass(frozen=True)
class Case:
    """One malformation, the failure cause it must be counted under, and what the points do."""

    mode: str
    cause: str
    outcome: str = "offline"  # offline: NT, then IV; iv_online: exception answers; intermittent: late


POLL_CASES = [
    Case("wrong_fc", "function_code"),
    Case("fc1_bits", "function_code"),
    Case("exception_wrong_fc", "function_code"),
    Case("wrong_unit", "unit"),
    Case("wrong_tid", "transaction"),
    Case("zero_tid", "transaction"),
    Case("short_byte_count", "byte_count"),
    Case("long_byte_count", "byte_count"),
    Case("odd_byte_count", "byte_count"),
    Case("byte_count_beyond_frame", "length"),
    Case("truncated", "unframed"),
    Case("garbage", "unframed"),
    Case("silence", "timeout"),
    Case("exception", "exception", "iv_online"),
    Case("late", "timeout", "intermittent"),
]
RTU_CASES = [
    Case("bad_crc", "crc"),
    Case("wrong_unit", "unit"),
    Case("wrong_fc", "function_code"),
    Case("short_byte_count", "byte_count"),
]


@pytest.fixture
def loop_errors() -> Iterator[list[dict[str, Any]]]:
    """What reaches the asyncio loop's exception handler ("Task exception was never retrieved", ...)."""
    loop = asyncio.get_event_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield seen
    gc.collect()  # a task that died with an exception reports it when collected
    loop.set_exception_handler(previous)
    assert not seen, f"the loop's exception handler was called: {seen}"


def _start_driver(sink: RecordingSink, **connection: Any) -> Any:
    device = modbus_device("hostile", PROFILE, poll_s=0.1, timeout_s=0.15, offline_after=3, **connection)
    [driver] = DRIVER.build([device], sink, reactor)
    driver.start()
    return driver


@pytest.fixture
def hostile_tcp(loop_errors: list) -> Iterator[tuple[HostileTcpDevice, Any, RecordingSink]]:
    """A hostile Modbus TCP device on a free port and the real driver polling it every 0.1 s."""
    device = HostileTcpDevice(1, _image())
    port = pytest_twisted.blockon(as_deferred(device.start()))
    sink = RecordingSink()
    driver = _start_driver(sink, host="127.0.0.1", port=port, unit=1)
    yield device, driver, sink
    pytest_twisted.blockon(driver.stop())
    pytest_twisted.blockon(as_deferred(device.stop()))


@pytest.fixture
def hostile_rtu(tmp_path: Path, loop_errors: list) -> Iterator[tuple[HostileRtuDevice, Any, RecordingSink]]:
    """A hostile RTU slave (address 1) on one end of a socat pty pair, the real driver on the other."""
    cable = socat_cable(tmp_path)
    device_end, gateway_end = next(cable)
    device = HostileRtuDevice(1, _image(), device_end)
    pytest_twisted.blockon(deferLater(reactor, 0, device.start))  # its reader needs the running loop
    sink = RecordingSink()
    driver = _start_driver(sink, serial=gateway_end, unit=1)
    yield device, driver, sink
    pytest_twisted.blockon(driver.stop())
    device.stop()
    next(cable, None)


def _point(sample: Sample) -> str:
    return sample.point.split(".", 1)[1]


def _all_good(sink: RecordingSink) -> bool:
    return all((s := sink.get(f"hostile.{p}")) is not None and s.quality == Quality.GOOD
               and s.value == pytest.approx(TRUE[p]) for p in TRUE)


def _assert_only_true_values(history: list[Sample], limit: tuple[float, ...] = (TRUE["limit"],)) -> None:
    """No published value came from a spoilt reply: each is None or what the device really holds."""
    for sample in history:
        point = _point(sample)
        if point in TRUE and sample.value is not None:
            allowed = limit if point == "limit" else (TRUE[point],)
            assert any(sample.value == pytest.approx(a) for a in allowed), f"published {sample}"


def _assert_logged_once_per_episode(records: list[logging.LogRecord]) -> None:
    """Each failure cause logs one WARNING per episode; the episode ends with one INFO."""
    seen: set[str] = set()
    for record in records:
        episode = getattr(record, "episode", None)
        if episode == "failed":
            assert record.cause not in seen, f"logged twice in one episode: {record.getMessage()}"
            assert "hostile" in record.getMessage()
            seen.add(record.cause)
        elif episode == "recovered":
            seen.clear()


def _stats(driver: Any) -> dict[str, Any]:
    return driver.stats()["devices"]["hostile"]


def _run_poll_case(setup: tuple, case: Case, caplog: pytest.LogCaptureFixture) -> Iterator[Deferred]:
    device, driver, sink = setup
    caplog.set_level(logging.INFO, logger="drivers.modbus")
    caplog.set_level(logging.INFO, logger="gateway.health")
    yield sink.wait_for(lambda: _all_good(sink), reactor)
    good_before = _stats(driver)["good_polls"]
    device.misbehave(case.mode, fc=4 if case.mode not in ("bad_crc",) else None)
    start = len(sink.history)
    if case.outcome == "offline":
        yield sink.wait_for(lambda: sink.get(VOLTAGE).quality & Quality.IV and _stats(driver)["offline"], reactor)
    elif case.outcome == "iv_online":
        yield sink.wait_for(lambda: _stats(driver)["exception_replies"] >= 3, reactor)
    else:
        yield sink.wait_for(lambda: _stats(driver)["failures"].get(case.cause, 0) >= 2
                            and _stats(driver)["good_polls"] >= good_before + 3, reactor)
    bad_phase = [s for s in sink.history[start:] if s.point == VOLTAGE]
    device.misbehave("good")
    yield sink.wait_for(lambda: _all_good(sink) and not _stats(driver)["offline"], reactor)

    _assert_only_true_values(sink.history)
    counted = _stats(driver)["exception_replies" if case.cause == "exception" else "failures"]
    assert (counted if case.cause == "exception" else counted.get(case.cause, 0)) >= 1, _stats(driver)
    if case.outcome != "intermittent":
        first_bad = next(i for i, s in enumerate(bad_phase) if s.quality != Quality.GOOD)
        after = bad_phase[first_bad:]
        assert all(s.quality != Quality.GOOD for s in after), "a good sample during the bad replies"
        if case.outcome == "offline":
            assert after[0].quality == Quality.NT and after[-1].quality == Quality.IV | Quality.NT
            assert False in [s.value for s in sink.history[start:] if s.point == "hostile._online"]
        else:
            assert after[0].quality == Quality.IV and not _stats(driver)["offline"]
    if case.mode == "late":
        assert driver.stats()["ignored_frames"] >= 1, "the late reply never reached the framer"
    _assert_logged_once_per_episode(caplog.records)
    if case.outcome == "offline":
        assert any(getattr(r, "cause", None) == case.cause for r in caplog.records), caplog.text
    assert "never retrieved" not in caplog.text and "Fatal error" not in caplog.text


@pytest.mark.parametrize("case", POLL_CASES, ids=lambda c: c.mode)
@pytest_twisted.inlineCallbacks
def test_bad_tcp_reply_to_a_poll_is_never_a_value(hostile_tcp: tuple, case: Case,
                                                  caplog: pytest.LogCaptureFixture) -> Iterator:
    """Each malformed TCP reply fails its poll under its cause (NT, then IV), publishes nothing; recovery follows."""
    yield from _run_poll_case(hostile_tcp, case, caplog)


@pytest.mark.parametrize("case", RTU_CASES, ids=lambda c: c.mode)
@pytest_twisted.inlineCallbacks
def test_bad_rtu_reply_to_a_poll_is_never_a_value(hostile_rtu: tuple, case: Case,
                                                  caplog: pytest.LogCaptureFixture) -> Iterator:
    """RTU: bad CRC, another slave's address, wrong FC, short byte count fail the poll under their cause."""
    yield from _run_poll_case(hostile_rtu, case, caplog)


@dataclass(frozen=True)
class CommandCase:
    """A malformation of the reply to one function code of a command, and the typed failure it gives."""

    mode: str
    fc: int
    error: type
    cause: str | None = None
    written: bool | None = True  # what the failure says of the write: acknowledged, unknown (None), not applied


COMMAND_CASES = [
    CommandCase("wrong_echo", 6, BadReply, "echo", None),
    CommandCase("wrong_fc", 6, BadReply, "function_code", None),
    CommandCase("exception_wrong_fc", 6, BadReply, "function_code", None),
    CommandCase("truncated", 6, BadReply, "unframed", None),
    CommandCase("exception", 6, DeviceException, None, False),
    CommandCase("silence", 6, DeviceTimeout, None, None),
    CommandCase("short_byte_count", 3, BadReply, "byte_count"),
    CommandCase("wrong_fc", 3, BadReply, "function_code"),
    CommandCase("fc1_bits", 3, BadReply, "function_code"),
    CommandCase("wrong_tid", 3, BadReply, "transaction"),
]


def _failure_of(d: Deferred) -> Deferred:
    """Fires with [the Failure] (a Failure returned as is would go on failing the chain)."""
    return d.addCallbacks(lambda result: pytest.fail(f"the command succeeded: {result}"), lambda f: [f])


@pytest.mark.parametrize("case", COMMAND_CASES, ids=lambda c: f"{c.mode}-fc{c.fc}")
@pytest_twisted.inlineCallbacks
def test_bad_reply_to_a_write_or_read_back_is_a_typed_failure(hostile_tcp: tuple, case: CommandCase) -> Iterator:
    """A spoilt reply to a command's write or read-back fails the command typed, saying whether the write went out;
    its read-back is never published."""
    device, driver, sink = hostile_tcp
    yield sink.wait_for(lambda: _all_good(sink), reactor)
    device.misbehave(case.mode, fc=case.fc)
    [failure] = yield _failure_of(driver.execute(Command("hostile", "limit", COMMANDED, time.time() + 2)))
    assert isinstance(failure.value, CommandFailed) and failure.value.written is case.written, failure.getTraceback()
    reason = failure.value.__cause__
    assert isinstance(reason, case.error), failure.getTraceback()
    assert getattr(reason, "cause", None) == case.cause
    assert "hostile" in str(failure.value)
    device.misbehave("good")
    yield sink.wait_for(lambda: sink.get("hostile.voltage_l1").quality == Quality.GOOD, reactor)
    _assert_only_true_values(sink.history, limit=(TRUE["limit"], COMMANDED))


@pytest_twisted.inlineCallbacks
def test_a_device_back_after_40_s_down_is_good_within_the_probe_period(hostile_tcp: tuple) -> Iterator:
    """The device's TCP port is gone for 40 s, then back: its points are good again within 10 s (probe period) + polls."""
    device, driver, sink = hostile_tcp
    yield sink.wait_for(lambda: _all_good(sink), reactor)
    port = device.port
    yield as_deferred(device.stop())
    yield sink.wait_for(lambda: sink.get("hostile.voltage_l1").quality & Quality.IV, reactor)
    yield deferLater(reactor, 40, lambda: None)
    yield as_deferred(device.start(port))
    back = time.monotonic()
    yield sink.wait_for(lambda: _all_good(sink), reactor, timeout_s=30)
    assert time.monotonic() - back <= 11.0, f"good again after {time.monotonic() - back:.1f} s"


@pytest_twisted.inlineCallbacks
def test_an_rtu_device_back_after_40_s_of_silence_is_good_within_the_probe_period(hostile_rtu: tuple) -> Iterator:
    """The RTU slave answers nothing for 40 s, then answers again: good again within 10 s (probe period) + polls."""
    device, driver, sink = hostile_rtu
    yield sink.wait_for(lambda: _all_good(sink), reactor)
    device.misbehave("silence")
    yield sink.wait_for(lambda: sink.get("hostile.voltage_l1").quality & Quality.IV, reactor)
    yield deferLater(reactor, 40, lambda: None)
    device.misbehave("good")
    back = time.monotonic()
    yield sink.wait_for(lambda: _all_good(sink), reactor, timeout_s=30)
    assert time.monotonic() - back <= 11.0, f"good again after {time.monotonic() - back:.1f} s"
