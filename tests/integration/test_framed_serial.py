"""The framed-serial driver against its simulator, both built from the same profiles: over a socat
pseudo-terminal pair (two addresses sharing the line) and over TCP (a serial server), a binary
CRC-framed protocol and a YD/T 1363.3 ASCII-hex one; garbage between frames, broken checksums,
truncated answers and silence."""

from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest
import pytest_twisted
import yaml
from twisted.internet import reactor

from drivers.serial_framed.profile import FramedProfile
from drivers.serial_framed.sim.server import FramedSimulator
from gateway.aio import await_deferred
from gateway.model import Quality
from tests.aio import on_asyncio, until
from tests.devices import socat_cable
from tests.framed import FramedGateway, framed_device
from tests.ports import next_ports

pytestmark = pytest.mark.integration

BINARY = FramedProfile.model_validate(yaml.safe_load("""
model: T-DTS
kind: sensor
protocol: serial_framed
framing:   # AA 55 | ADDR CMD LEN(2, data octets) | DATA | CRC-16/MODBUS (low octet first) over ADDR..DATA
  encoding: binary
  start: "AA 55"
  length: {offset: 4, size: 2, adjust: 8}
  checksum: {algorithm: crc16_modbus, start: 2, byteorder: little}
  max_length: 512
messages:
  - {name: zones, request: "{address:02X} 21 00 00", match: {at: 0, value: "{address:02X} A1"}}
points:
  - {id: z1_tmax, message: zones, at: 4, type: i16, scale: 0.1, unit: "°C", sim: {value: 31.5}}
  - {id: z1_pre_alarm, message: zones, at: 6, type: u8, bit: 0}
  - {id: z1_alarm, message: zones, at: 6, type: u8, bit: 1}
  - {id: break_m, message: zones, at: 7, type: u16, invalid: [65535], sim: {value: 65535}}
  - {id: laser_t, message: zones, at: 9, type: f32, order: DCBA, sim: {value: 41.25}}
  - {id: state, message: zones, at: 13, type: u8, enum: {0: normal, 1: fault}}
"""))

YDT = FramedProfile.model_validate(yaml.safe_load("""
model: T-CABINET
kind: bms
protocol: serial_framed
framing: {encoding: ascii_hex, start: "~", end: "\\\\r", checksum: {algorithm: ydt1363}}
messages:   # VER ADR CID1 CID2 | INFO; the reply's CID2 is RTN 00
  - {name: analog, request: "20 {address:02X} 46 42 01", match: {at: 0, value: "20 {address:02X} 46 00"}}
points:
  - {id: cell_max_mv, message: analog, at: 4, type: u16, sim: {value: 3350}}
  - {id: cabinet_t, message: analog, at: 6, type: i16, scale: 0.1, sim: {value: 27.4}}
  - {id: smoke, message: analog, at: 8, type: u8, bit: 0}
"""))


@pytest.fixture
def cable(tmp_path: Path) -> Iterator[tuple[str, str]]:
    yield from socat_cable(tmp_path)


@pytest_twisted.async_yield_fixture
async def shared_line(cable: tuple[str, str]) -> AsyncIterator[FramedSimulator]:
    """Two DTS units, addresses 1 and 2, on the far end of one pty pair."""
    simulator = FramedSimulator([framed_device("dts1", BINARY, serial=cable[1], address=1),
                                 framed_device("dts2", BINARY, serial=cable[1], address=2)], reactor, period_s=0.1)
    await await_deferred(simulator.start())
    try:
        yield simulator
    finally:
        await await_deferred(simulator.stop())


FIELDS = ["z1_tmax", "z1_pre_alarm", "z1_alarm", "laser_t", "state"]


@on_asyncio
async def test_two_addresses_share_a_serial_line_and_every_field_type_arrives(
        shared_line: FramedSimulator, cable: tuple[str, str]) -> None:
    simulator = shared_line
    simulator.set_value("dts2", "z1_tmax", 55.5)
    simulator.set_value("dts2", "z1_alarm", True)
    simulator.set_value("dts2", "state", "fault")
    devices = [framed_device("dts1", BINARY, serial=cable[0], address=1), framed_device("dts2", BINARY, serial=cable[0], address=2)]
    async with FramedGateway(devices) as gateway:
        points = [f"{d}.{p}" for d in ("dts1", "dts2") for p in FIELDS]
        await until(lambda: gateway.quality(*points) == {Quality.GOOD}, 10, "every point good")
        assert [gateway.value(f"dts1.{p}") for p in FIELDS] == [31.5, False, False, 41.25, "normal"]
        assert [gateway.value(f"dts2.{p}") for p in FIELDS] == [55.5, False, True, 41.25, "fault"]
        assert gateway.quality("dts1.break_m") == {Quality.IV}  # 65535: no break position
        simulator.set_value("dts1", "break_m", 1234)
        await until(lambda: gateway.value("dts1.break_m") == 1234, 5, "a break position arrives")


@on_asyncio
async def test_garbage_between_frames_is_skipped_and_no_wrong_value_is_published(
        shared_line: FramedSimulator, cable: tuple[str, str]) -> None:
    simulator = shared_line
    async with FramedGateway([framed_device("dts1", BINARY, serial=cable[0], address=1)]) as gateway:
        await until(lambda: gateway.quality("dts1.z1_tmax") == {Quality.GOOD}, 10, "good")
        await await_deferred(simulator.fault("dts1", "garbage"))
        await until(lambda: gateway.counter("garbage_octets") > 500, 15, "garbage seen")
        good = [s for s in gateway.sink.samples_of("dts1.z1_tmax") if s.quality == Quality.GOOD]
        assert len(good) > 10 and {s.value for s in good} == {31.5}
        assert {s.value for s in gateway.sink.samples_of("dts1.laser_t") if s.quality == Quality.GOOD} == {41.25}


@on_asyncio
async def test_bad_checksums_and_truncated_answers_are_counted_never_decoded(
        shared_line: FramedSimulator, cable: tuple[str, str]) -> None:
    simulator = shared_line
    async with FramedGateway([framed_device("dts1", BINARY, serial=cable[0], address=1)]) as gateway:
        await until(lambda: gateway.quality("dts1.z1_tmax") == {Quality.GOOD}, 10, "good")
        for fault, counter in (("bad_checksum", "bad_checksum"), ("truncated", "truncated")):
            await await_deferred(simulator.fault("dts1", fault))
            await until(lambda: gateway.counter(counter) >= 2, 5, f"{fault} counted")
            await until(lambda: gateway.quality("dts1.z1_tmax") == {Quality.NT | Quality.IV}, 5, "IV when offline")
            await await_deferred(simulator.fault("dts1", "healthy"))
            await until(lambda: gateway.quality("dts1.z1_tmax") == {Quality.GOOD}, 10, f"good after {fault}")
        assert {s.value for s in gateway.sink.samples_of("dts1.z1_tmax")} == {31.5}


@on_asyncio
async def test_a_silent_device_goes_nt_then_iv_and_recovers(shared_line: FramedSimulator,
                                                            cable: tuple[str, str]) -> None:
    simulator = shared_line
    async with FramedGateway([framed_device("dts1", BINARY, serial=cable[0], address=1)]) as gateway:
        await until(lambda: gateway.quality("dts1.z1_tmax") == {Quality.GOOD}, 10, "good")
        await await_deferred(simulator.fault("dts1", "silence"))
        await until(lambda: gateway.quality("dts1.z1_tmax") == {Quality.NT}, 5, "NT")
        await until(lambda: gateway.quality("dts1.z1_tmax") == {Quality.NT | Quality.IV}, 5, "IV")
        assert gateway.value("dts1._online") is False
        await await_deferred(simulator.fault("dts1", "healthy"))
        await until(lambda: gateway.quality("dts1.z1_tmax") == {Quality.GOOD}, 10, "good again")


@on_asyncio
async def test_a_ydt1363_cabinet_over_a_tcp_serial_server() -> None:
    [port] = next_ports(1)
    simulator = FramedSimulator([framed_device("cab", YDT, host="127.0.0.1", port=port, address=3)], reactor)
    await await_deferred(simulator.start())
    try:
        async with FramedGateway([framed_device("cab", YDT, host="127.0.0.1", port=port, address=3)]) as gateway:
            points = ["cab.cell_max_mv", "cab.cabinet_t", "cab.smoke"]
            await until(lambda: gateway.quality(*points) == {Quality.GOOD}, 10, "every point good")
            assert [gateway.value(p) for p in points] == [3350, pytest.approx(27.4), False]
            simulator.set_value("cab", "smoke", True)
            await until(lambda: gateway.value("cab.smoke") is True, 5, "smoke alarm arrives")
    finally:
        await await_deferred(simulator.stop())


FBG = FramedProfile.model_validate(yaml.safe_load("""
model: T-FBG
kind: sensor
protocol: serial_framed
framing: {encoding: length_prefixed, length: {offset: 0, size: 10}, max_length: 8192}
order: DCBA
messages:   # the ASCII command, answered by 10 digits of length and a little-endian body
  - name: peaks
    request: "#GET_PEAKS_AND_LEVELS\\\\n"
    peaks: {counts_at: 12, channels: 4, wavelengths_at: 32, scale: 0.0001}
points:
  - {id: serial_no, message: peaks, at: 8, type: u32, sim: {value: 7001}}
  - {id: cab1_t1, message: peaks, type: fbg, unit: "°C", sim: {value: 31.0},
     grating: {channel: 1, window: [1529.0, 1531.0], base_nm: 1530.0, coefficients: [25.0, 100.0], reference: cab1_ref}}
  - {id: cab1_t2, message: peaks, type: fbg, unit: "°C", sim: {value: 28.5},
     grating: {channel: 1, window: [1539.0, 1541.0], base_nm: 1540.0, coefficients: [25.0, 95.0, 2.0]}}
  - {id: cab1_ref, message: peaks, type: fbg, sim: {value: 25.4},
     grating: {channel: 1, window: [1549.0, 1551.0], base_nm: 1550.0, coefficients: [25.0, 100.0]}}
  - {id: cab3_t1, message: peaks, type: fbg, unit: "°C", sim: {value: 40.0},
     grating: {channel: 3, window: [1529.0, 1531.0], base_nm: 1530.0, coefficients: [25.0, 100.0]}}
"""))
GRATINGS = ["fbg.cab1_t1", "fbg.cab1_t2", "fbg.cab1_ref", "fbg.cab3_t1"]


@on_asyncio
async def test_an_fbg_interrogator_gives_grating_temperatures_and_iv_for_a_missing_or_double_peak() -> None:
    """Length-prefixed binary replies over TCP: each grating's temperature from its peak (the
    reference's shift subtracted where named), to the wavelength resolution; the first grating's
    peak gone or doubled: that grating IV with the reason counted, the others unaffected."""
    [port] = next_ports(1)
    simulator = FramedSimulator([framed_device("fbg", FBG, host="127.0.0.1", port=port)], reactor)
    await await_deferred(simulator.start())
    try:
        async with FramedGateway([framed_device("fbg", FBG, host="127.0.0.1", port=port)]) as gateway:
            await until(lambda: gateway.quality(*GRATINGS, "fbg.serial_no") == {Quality.GOOD}, 10, "all good")
            assert [gateway.value(p) for p in GRATINGS] == pytest.approx([31.0, 28.5, 25.4, 40.0], abs=0.02)
            assert gateway.value("fbg.serial_no") == 7001
            for fault, reason in (("missing_peak", "missing_peak"), ("double_peak", "ambiguous_peak")):
                await await_deferred(simulator.fault("fbg", fault))
                await until(lambda: gateway.quality("fbg.cab1_t1") == {Quality.IV}, 5, f"IV on {fault}")
                assert gateway.quality("fbg.cab1_t2", "fbg.cab3_t1") == {Quality.GOOD}
                assert gateway.metrics.value("gridgate_fbg_unmatched_total", device="fbg", reason=reason) > 0
                await await_deferred(simulator.fault("fbg", "healthy"))
                await until(lambda: gateway.quality("fbg.cab1_t1") == {Quality.GOOD}, 5, "matched again")
    finally:
        await await_deferred(simulator.stop())


LINE = FramedProfile.model_validate(yaml.safe_load("""
model: T-LINE
kind: sensor
protocol: serial_framed
framing: {encoding: ascii_line, start: "$", end: "\\\\r\\\\n", checksum: {algorithm: xor8}, checksum_separator: "*"}
messages:   # streamed by the device: $TMP,+031.50,0*HH
  - {name: temperature, match: {at: 0, value: "TMP,"}}
points:
  - {id: cable_t, message: temperature, at: 4, type: decimal, length: 7, unit: "°C", sim: {value: 31.5}}
  - {id: alarm, message: temperature, at: 12, type: decimal, length: 1, sim: {value: 0}}
"""))


@on_asyncio
async def test_a_streaming_ascii_line_device_is_published_as_it_talks_and_its_silence_noticed() -> None:
    """No requests: each streamed line is published; a silent device goes NT, then IV; back: good."""
    [port] = next_ports(1)
    simulator = FramedSimulator([framed_device("line", LINE, host="127.0.0.1", port=port)], reactor, period_s=0.1)
    await await_deferred(simulator.start())
    try:
        async with FramedGateway([framed_device("line", LINE, host="127.0.0.1", port=port)]) as gateway:
            await until(lambda: gateway.quality("line.cable_t", "line.alarm") == {Quality.GOOD}, 10, "good")
            assert (gateway.value("line.cable_t"), gateway.value("line.alarm")) == (31.5, 0.0)
            simulator.set_value("line", "cable_t", -4.25)
            await until(lambda: gateway.value("line.cable_t") == -4.25, 5, "a new line arrives")
            await await_deferred(simulator.fault("line", "silence"))
            await until(lambda: gateway.quality("line.cable_t") == {Quality.NT}, 5, "NT on silence")
            await until(lambda: gateway.quality("line.cable_t") == {Quality.NT | Quality.IV}, 5, "IV")
            await await_deferred(simulator.fault("line", "healthy"))
            await until(lambda: gateway.quality("line.cable_t") == {Quality.GOOD}, 5, "good again")
    finally:
        await await_deferred(simulator.stop())


TWINS = FramedProfile.model_validate(yaml.safe_load("""
model: T-TWINS
kind: bms
protocol: serial_framed
framing: {encoding: ascii_hex, start: "~", end: "\\\\r", checksum: {algorithm: ydt1363}}
messages:   # both replies start 20 ADR 46 00 and have the same length: only the turn tells them apart
  - {name: analog, request: "20 {address:02X} 46 42 01", match: {at: 0, value: "20 {address:02X} 46 00"}}
  - {name: alarms, request: "20 {address:02X} 46 44 01", match: {at: 0, value: "20 {address:02X} 46 00"}}
points:
  - {id: cell_mv, message: analog, at: 4, type: u16, sim: {value: 3350}}
  - {id: alarm_word, message: alarms, at: 4, type: u16, sim: {value: 5}}
"""))


@on_asyncio
async def test_a_late_reply_is_never_taken_for_the_next_requests_reply() -> None:
    """Every answer comes after the timeout: the polls fail, and no reply to one request is
    published as the other's (without the quiet after a timeout, 3350 would appear as the alarm
    word); answering in time again: good."""
    [port] = next_ports(1)
    simulator = FramedSimulator([framed_device("cab", TWINS, host="127.0.0.1", port=port, address=3)], reactor)
    await await_deferred(simulator.start())
    try:
        async with FramedGateway([framed_device("cab", TWINS, host="127.0.0.1", port=port, address=3, timeout_s=0.2)]) as gateway:
            await until(lambda: gateway.quality("cab.cell_mv", "cab.alarm_word") == {Quality.GOOD}, 10, "good")
            await await_deferred(simulator.fault("cab", "late", delay_s=0.3))
            await until(lambda: gateway.quality("cab.cell_mv") == {Quality.NT | Quality.IV}, 10, "IV when offline")
            await until(lambda: gateway.metrics.total("gridgate_framed_late_total") >= 3, 10, "late replies dropped")
            await await_deferred(simulator.fault("cab", "healthy"))
            await until(lambda: gateway.quality("cab.cell_mv", "cab.alarm_word") == {Quality.GOOD}, 10, "good again")
            assert {s.value for s in gateway.sink.samples_of("cab.alarm_word") if s.quality == Quality.GOOD} == {5}
            assert {s.value for s in gateway.sink.samples_of("cab.cell_mv") if s.quality == Quality.GOOD} == {3350}
    finally:
        await await_deferred(simulator.stop())


@on_asyncio
async def test_a_serial_server_that_goes_away_is_redialled_and_read_again() -> None:
    """The TCP serial server closes and stops listening: NT, IV; listening again: the link is
    dialled again (backoff) and every point good."""
    [port] = next_ports(1)
    served = [framed_device("cab", YDT, host="127.0.0.1", port=port, address=3)]
    simulator = FramedSimulator(served, reactor)
    await await_deferred(simulator.start())
    async with FramedGateway([framed_device("cab", YDT, host="127.0.0.1", port=port, address=3)]) as gateway:
        points = ["cab.cell_max_mv", "cab.cabinet_t", "cab.smoke"]
        await until(lambda: gateway.quality(*points) == {Quality.GOOD}, 10, "good")
        await await_deferred(simulator.stop())
        await until(lambda: gateway.quality(*points) == {Quality.NT | Quality.IV}, 10, "IV when gone")
        simulator = FramedSimulator(served, reactor)
        await await_deferred(simulator.start())
        try:
            await until(lambda: gateway.quality(*points) == {Quality.GOOD}, 15, "good again")
        finally:
            await await_deferred(simulator.stop())


@pytest.mark.parametrize("profile", [BINARY, YDT, FBG, LINE], ids=["binary", "ascii_hex", "length_prefixed",
                                                                   "ascii_line"])
@on_asyncio
async def test_every_encoding_over_a_pty_line(profile: FramedProfile, cable: tuple[str, str]) -> None:
    """Each encoding on a serial line (the TCP cases are above): every point good."""
    simulator = FramedSimulator([framed_device("d", profile, serial=cable[1], address=3)], reactor, period_s=0.1)
    await await_deferred(simulator.start())
    try:
        async with FramedGateway([framed_device("d", profile, serial=cable[0], address=3)]) as gateway:
            points = [f"d.{p.id}" for p in profile.points if p.id not in ("break_m",)]
            await until(lambda: gateway.quality(*points) == {Quality.GOOD}, 10, "every point good")
            assert gateway.counter("bad_checksum") == 0
    finally:
        await await_deferred(simulator.stop())


@on_asyncio
async def test_a_serial_port_that_cannot_be_opened_is_named_with_why(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """No such port (a USB adapter unplugged): the device goes NT then IV, the failure names the
    port and the operating system's reason; it is tried again (backoff), not given up."""
    missing = str(tmp_path / "ttyUSB9")
    async with FramedGateway([framed_device("cab", YDT, serial=missing, address=3)]) as gateway:
        await until(lambda: gateway.quality("cab.cell_max_mv") == {Quality.NT | Quality.IV}, 10, "IV")
    failures = [r.getMessage() for r in caplog.records if "poll failed" in r.getMessage()]
    assert failures and f"{missing}: not open (" in failures[0] and "No such file" in failures[0], failures
