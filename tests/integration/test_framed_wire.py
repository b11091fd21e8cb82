"""The framed-serial driver against its simulator on every checksum of the catalogue and every
field type (TCP), and through 1,000 chunks of line noise on a pty line with no wrong value
published."""

from pathlib import Path
from typing import Iterator

import pytest
import yaml
from twisted.internet import reactor

from drivers.serial_framed.checksums import ALGORITHMS
from drivers.serial_framed.profile import FramedProfile
from drivers.serial_framed.sim.server import FramedSimulator
from gateway.aio import await_deferred
from gateway.model import Quality
from tests.aio import on_asyncio, until
from tests.devices import socat_cable
from tests.framed import FramedGateway, framed_device
from tests.ports import next_ports

pytestmark = pytest.mark.integration

WIDE = """
model: T-WIDE
kind: sensor
protocol: serial_framed
framing:
  encoding: binary
  start: "7E"
  length: {offset: 1, size: 1, adjust: 3}    # LEN covers ADDR..DATA; + start + checksum
  checksum: {algorithm: crc16_modbus, start: 1, byteorder: little}
  max_length: 250
messages:
  - {name: all, request: "00 {address:02X} 01", match: {at: 1, value: "{address:02X} 81"}}
points:
  - {id: a_u8, message: all, at: 3, type: u8, sim: {value: 250}}
  - {id: a_i8, message: all, at: 4, type: i8, sim: {value: -7}}
  - {id: a_u16, message: all, at: 5, type: u16, order: DCBA, sim: {value: 65000}}
  - {id: a_i16, message: all, at: 7, type: i16, scale: 0.1, offset: -25, sim: {value: -12.5}}
  - {id: a_u32, message: all, at: 9, type: u32, order: CDAB, sim: {value: 4000000000}}
  - {id: a_i32, message: all, at: 13, type: i32, order: BADC, sim: {value: -123456789}}
  - {id: a_u64, message: all, at: 17, type: u64, sim: {value: 18000000000000000000}}
  - {id: a_i64, message: all, at: 25, type: i64, order: DCBA, sim: {value: -9000000000000000000}}
  - {id: a_f32, message: all, at: 33, type: f32, sim: {value: 1.5}}
  - {id: a_f64, message: all, at: 37, type: f64, order: CDAB, sim: {value: -2.25}}
  - {id: a_bcd, message: all, at: 45, type: bcd, length: 3, sim: {value: 240901}}
  - {id: a_ascii, message: all, at: 48, type: ascii, length: 6}
  - {id: a_decimal, message: all, at: 54, type: decimal, length: 6, sim: {value: -3.75}}
  - {id: a_bit, message: all, at: 60, type: u16, bit: 9, sim: {value: 1}}
  - {id: a_enum, message: all, at: 62, type: u8, enum: {0: "off", 1: "on"}, sim: {value: 1}}
  - {id: a_poly, message: all, at: 63, type: u16, polynomial: [1.0, 0.5, 0.001], sim: {value: 61}}
  - {id: a_invalid, message: all, at: 65, type: i16, invalid: [32767], sim: {value: 32767}}
"""
EXPECTED = {"a_u8": 250, "a_i8": -7, "a_u16": 65000, "a_i16": -12.5, "a_u32": 4000000000, "a_i32": -123456789,
            "a_u64": 18000000000000000000, "a_i64": -9000000000000000000, "a_f32": 1.5, "a_f64": -2.25,
            "a_bcd": 240901, "a_ascii": "GG-1", "a_decimal": -3.75, "a_bit": True, "a_enum": "on", "a_poly": 61.0}


def wide(algorithm: str) -> FramedProfile:
    tree = yaml.safe_load(WIDE)
    tree["framing"]["checksum"]["algorithm"] = algorithm
    return FramedProfile.model_validate(tree)


@pytest.mark.parametrize("algorithm", sorted(set(ALGORITHMS) - {"ydt1363"}))
@on_asyncio
async def test_every_checksum_and_field_type_round_trips_over_tcp(algorithm: str) -> None:
    """The driver reads exactly what the simulator serves, for each checksum the catalogue names
    (YD/T 1363's is ASCII-hex only: the cabinet tests cover it)."""
    [port] = next_ports(1)
    profile = wide(algorithm)
    simulator = FramedSimulator([framed_device("w", profile, host="127.0.0.1", port=port, address=9)], reactor)
    simulator.set_value("w", "a_ascii", "GG-1")
    await await_deferred(simulator.start())
    try:
        async with FramedGateway([framed_device("w", profile, host="127.0.0.1", port=port, address=9)]) as gateway:
            points = [f"w.{p}" for p in EXPECTED]
            await until(lambda: gateway.quality(*points) == {Quality.GOOD}, 10, "every point good")
            got = {p: gateway.value(f"w.{p}") for p in EXPECTED}
            assert got == EXPECTED | {"a_i16": pytest.approx(-12.5), "a_decimal": pytest.approx(-3.75)}
            assert gateway.quality("w.a_invalid") == {Quality.IV}
            assert gateway.counter("bad_checksum") == 0 and gateway.counter("frames") > 0
    finally:
        await await_deferred(simulator.stop())


@pytest.fixture
def cable(tmp_path: Path) -> Iterator[tuple[str, str]]:
    yield from socat_cable(tmp_path)


@on_asyncio
async def test_a_thousand_chunks_of_line_noise_publish_no_wrong_value(cable: tuple[str, str]) -> None:
    """Ten chunks of noise (random octets, stray start octets, heads of real frames) before every
    answer on a pty line, until 1,000 were sent: the driver keeps finding the real frames, and every
    value it published is one the simulator served."""
    profile = wide("crc16_modbus")
    simulator = FramedSimulator([framed_device("w", profile, serial=cable[1], address=9)], reactor)
    simulator.set_value("w", "a_ascii", "GG-1")
    await await_deferred(simulator.start())
    try:
        async with FramedGateway([framed_device("w", profile, serial=cable[0], address=9, poll_s=0.02, timeout_s=0.3,
                                   offline_after=1000)]) as gateway:
            await until(lambda: gateway.quality(*[f"w.{p}" for p in EXPECTED]) == {Quality.GOOD}, 10, "good")
            before = len(gateway.sink.history)
            await await_deferred(simulator.fault("w", "garbage", chunks=10))
            await until(lambda: simulator.garbage_sent("w") >= 1000, 60, "1,000 chunks sent")
            await await_deferred(simulator.fault("w", "healthy"))
            published = [s for s in gateway.sink.history[before:] if s.quality == Quality.GOOD]
            wrong = [s for s in published if s.point.split(".")[1] in EXPECTED and
                     s.value != pytest.approx(EXPECTED[s.point.split(".")[1]])]
            assert len(published) >= 50 * len(EXPECTED) and wrong == []  # most answers found behind the noise
            assert gateway.counter("garbage_octets") > 1000 and gateway.counter("frames") > 100
    finally:
        await await_deferred(simulator.stop())


