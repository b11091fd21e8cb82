"""The simulator refuses what the shipped profiles say their devices refuse, and the driver's
fallbacks run against it.

The PCS profile documents exception 02 for the registers between its blocks, the RTU BMS
profile exception 01 for FC6 (``single_register_write: 16``). Requests and replies are built
and decoded here from the Modbus specifications (``tests.hostile_modbus`` framing, ``struct``),
and a relay between driver and simulator records the bytes each way, so neither pymodbus nor
the driver judges its own traffic (convention 8).
"""

import asyncio
import struct
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from twisted.internet import reactor

from drivers.modbus import DRIVER
from drivers.modbus.profile import ModbusProfile
from drivers.modbus.sim.server import ModbusSimulator
from gateway.aio import await_deferred
from gateway.errors import CommandFailed
from gateway.model import Command, Quality
from tests.devices import modbus_device
from tests.hostile_modbus import crc16, mbap_frame, rtu_frame
from tests.integration.test_modbus_simulator import on_asyncio
from tests.sinks import RecordingSink

pytestmark = pytest.mark.integration

PROFILES = Path(__file__).resolve().parents[2] / "device_profiles"


def shipped(name: str, **modbus: Any) -> ModbusProfile:
    """A profile from device_profiles/, with ``modbus:`` options replaced where given."""
    profile = ModbusProfile.model_validate(yaml.safe_load((PROFILES / f"{name}.yaml").read_text()))
    return profile.model_copy(update={"modbus": profile.modbus.model_copy(update=modbus)}) if modbus else profile


def read(fc: int, address: int, count: int) -> bytes:
    """A read request PDU (FC1-4): function, start address, quantity."""
    return struct.pack(">BHH", fc, address, count)


def exception_code(pdu: bytes) -> int | None:
    """The exception code of a reply PDU (function | 0x80), None for a normal reply."""
    return pdu[1] if pdu[0] & 0x80 else None


async def mbap_call(port: int, unit: int, pdu: bytes) -> bytes:
    """One Modbus TCP request on a fresh connection; the reply PDU after checking its MBAP header."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(mbap_frame(7, unit, pdu))
        head = await asyncio.wait_for(reader.readexactly(7), 2.0)
        body = await asyncio.wait_for(reader.readexactly(int.from_bytes(head[4:6], "big") - 1), 2.0)
    finally:
        writer.close()
    assert struct.unpack(">HHxxB", head) == (7, 0, unit) and body[0] & 0x7F == pdu[0]
    return body


def rtu_reply_length(frame: bytes) -> int:
    """Bytes of an RTU reply whose address and function byte (and byte count) are in ``frame``."""
    fc = frame[1]
    if fc & 0x80:
        return 5
    return 5 + frame[2] if fc in (1, 2, 3, 4) else 8


def rtu_request_length(frame: bytes) -> int:
    """Bytes of an RTU request (FC1-6 fixed, FC15/16 by their byte count)."""
    return 9 + frame[6] if frame[1] in (15, 16) else 8


def rtu_frames(data: bytes, length: Callable[[bytes], int]) -> list[bytes]:
    """``data`` cut into RTU frames (address + PDU), each CRC-checked."""
    frames, at = [], 0
    while at < len(data):
        size = length(data[at:at + 7])
        frame = data[at:at + size]
        assert crc16(frame[:-2]).to_bytes(2, "little") == frame[-2:], f"bad CRC in {frame.hex()}"
        frames.append(frame[:-2])
        at += size
    return frames


async def rtu_call(port: int, unit: int, pdu: bytes) -> bytes:
    """One RTU-framed request over TCP; the reply PDU after checking address and CRC."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(rtu_frame(unit, pdu))
        data = await asyncio.wait_for(reader.readexactly(3), 2.0)
        data += await asyncio.wait_for(reader.readexactly(rtu_reply_length(data) - 3), 2.0)
    finally:
        writer.close()
    [frame] = rtu_frames(data, rtu_reply_length)
    assert frame[0] == unit
    return frame[1:]


class Relay:
    """A TCP relay between a client and the simulator that keeps every byte each way."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.requests, self.replies = bytearray(), bytearray()
        self._tasks: set[asyncio.Task] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        """Listen on a free port; the port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        try:
            await asyncio.gather(self._pipe(reader, up_writer, self.requests),
                                 self._pipe(up_reader, writer, self.replies))
        finally:
            writer.close()
            up_writer.close()

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, kept: bytearray) -> None:
        while data := await source.read(4096):
            kept.extend(data)
            sink.write(data)
        sink.close()

    async def stop(self) -> None:
        """Stop listening and cut every relayed connection."""
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def mbap_pdus(data: bytes) -> list[bytes]:
    """The PDUs of a stream of MBAP frames, cut by each header's length field."""
    pdus, at = [], 0
    while at + 7 <= len(data):
        length = int.from_bytes(data[at + 4:at + 6], "big")
        pdus.append(bytes(data[at + 7:at + 6 + length]))
        at += 6 + length
    return pdus


PCS_CASES = [
    ("the AC block, reserved 1007/1015/1023 inside it", read(3, 1000, 28), None),
    ("a read running from the AC block into the gap 1028..1099", read(3, 1020, 10), 2),
    ("a register between the blocks", read(3, 500, 1), 2),
    ("one gap register before the DC block", read(3, 1099, 2), 2),
    ("the DC block", read(3, 1100, 6), None),
    ("one past the controls", read(3, 2000, 6), 2),
    ("input registers, which the PCS has none of", read(4, 0, 1), 2),
    ("coil 0", read(1, 0, 1), None),
    ("coils 0..1, coil 1 unmapped", read(1, 0, 2), 2),
    ("FC6 to the reserved 1007", struct.pack(">BHH", 6, 1007, 0), 2),
    ("FC6 to a setpoint (single_register_write: 6)", struct.pack(">BHH", 6, 2003, 600), None),
    ("FC15, which no profile promises", struct.pack(">BHHBB", 15, 0, 1, 1, 1), 1),
]


@pytest.mark.parametrize("what, pdu, code", PCS_CASES, ids=[case[0] for case in PCS_CASES])
@on_asyncio
async def test_pcs_serves_its_blocks_and_refuses_the_gaps_between(what: str, pdu: bytes, code: int | None) -> None:
    """The shipped PCS serves its documented blocks, answers 02 for a register between them, 01 for FC15."""
    simulator = ModbusSimulator([modbus_device("pcs1", shipped("pcs/gridgate-pcs-250"), host="127.0.0.1",
                                               port=0, unit=1)], reactor)
    await await_deferred(simulator.start())
    try:
        reply = await mbap_call(simulator.port_of("pcs1"), 1, pdu)
    finally:
        await await_deferred(simulator.stop())
    assert exception_code(reply) == code, what
    if pdu[:5] == read(3, 1000, 28)[:5]:
        registers = struct.unpack(">28H", reply[2:])
        assert reply[1] == 56 and registers[7] == registers[15] == registers[23] == 0, "reserved read 0"


@on_asyncio
async def test_rtu_bms_refuses_fc6_with_exception_1_and_takes_fc16() -> None:
    """The shipped RTU BMS answers FC6 with 01 and keeps its value, takes FC16, answers 02 past input 14."""
    profile = shipped("bms/gridgate-bms-rtu")
    simulator = ModbusSimulator([modbus_device("bms2", profile, host="127.0.0.1", port=0, unit=2,
                                               framer="rtu")], reactor)
    await await_deferred(simulator.start())
    port = simulator.port_of("bms2")
    try:
        fc6 = await rtu_call(port, 2, struct.pack(">BHH", 6, 100, 1200))
        after_fc6 = simulator.value("bms2", "charge_current_limit")
        fc16 = await rtu_call(port, 2, struct.pack(">BHHBH", 16, 100, 1, 2, 1200))
        holding = await rtu_call(port, 2, read(3, 100, 1))
        inputs, beyond = await rtu_call(port, 2, read(4, 0, 14)), await rtu_call(port, 2, read(4, 0, 15))
    finally:
        await await_deferred(simulator.stop())
    assert fc6 == bytes([0x86, 0x01]) and after_fc6 == pytest.approx(140.0)
    assert fc16 == struct.pack(">BHH", 16, 100, 1)
    assert holding == struct.pack(">BBH", 3, 2, 1200)
    assert exception_code(inputs) is None and inputs[1] == 28 and exception_code(beyond) == 2


def _all_good(sink: RecordingSink, device: str, profile: ModbusProfile) -> bool:
    samples = [sink.get(f"{device}.{p.id}") for p in profile.points]
    return all(s is not None and s.quality == Quality.GOOD for s in samples)


@on_asyncio
async def test_driver_rereads_point_groups_when_a_merged_read_meets_a_refused_gap() -> None:
    """A read merged across the PCS's gap is refused 02, re-read point group by point group; all points good."""
    simulator = ModbusSimulator([modbus_device("pcs1", shipped("pcs/gridgate-pcs-250"), host="127.0.0.1",
                                               port=0, unit=1)], reactor, period_s=0.1)
    await await_deferred(simulator.start())
    relay = Relay(simulator.port_of("pcs1"))
    wide = shipped("pcs/gridgate-pcs-250", max_gap=100)
    sink = RecordingSink()
    [driver] = DRIVER.build([modbus_device("pcs1", wide, host="127.0.0.1", port=await relay.start(), unit=1,
                                           poll_s=0.5, timeout_s=1.0)], sink, reactor)
    driver.start()
    try:
        await await_deferred(sink.wait_for(lambda: _all_good(sink, "pcs1", wide), reactor, timeout_s=10))
        stats = driver.stats()["devices"]["pcs1"]
        served = simulator.value("pcs1", "operating_state")
    finally:
        await await_deferred(driver.stop())
        await relay.stop()
        await await_deferred(simulator.stop())
    requests, replies = mbap_pdus(bytes(relay.requests)), mbap_pdus(bytes(relay.replies))
    merged = requests.index(read(3, 1000, 106))
    assert replies[merged] == bytes([0x83, 0x02]), "the merged read is refused with exception 02"
    regroup = {struct.unpack(">H", pdu[1:3])[0] for pdu in requests[merged + 1:] if pdu[0] == 3}
    assert {1000, 1006, 1008, 1014, 1016, 1021, 1022, 1024, 1026, 1100, 1102, 1104} <= regroup
    assert all(exception_code(reply) is None for request, reply in zip(requests, replies)
               if request != read(3, 1000, 106)), "only the merged read is ever refused"
    assert stats["exception_replies"] >= 1 and stats["offline"] is False
    assert sink.get("pcs1.operating_state").value == served == 3


@on_asyncio
async def test_driver_writes_the_rtu_bms_with_fc16_and_a_wrong_fc6_profile_is_refused() -> None:
    """The RTU BMS profile makes the driver write with FC16; a profile claiming FC6 is refused 01, unchanged."""
    profile = shipped("bms/gridgate-bms-rtu")
    simulator = ModbusSimulator([modbus_device("bms2", profile, host="127.0.0.1", port=0, unit=2,
                                               framer="rtu")], reactor, period_s=0.1)
    await await_deferred(simulator.start())
    relay = Relay(simulator.port_of("bms2"))
    relay_port = await relay.start()
    sink = RecordingSink()
    # neither driver is started: no polls, only the commands' own requests cross the relay
    [right] = DRIVER.build([modbus_device("bms2", profile, host="127.0.0.1", port=relay_port, unit=2,
                                          framer="rtu", poll_s=60, timeout_s=1.0)], sink, reactor)
    wrong_profile = shipped("bms/gridgate-bms-rtu", single_register_write=6)
    [wrong] = DRIVER.build([modbus_device("bms2", wrong_profile, host="127.0.0.1", port=relay_port, unit=2,
                                          framer="rtu", poll_s=60, timeout_s=1.0)], sink, reactor)
    try:
        result = await await_deferred(right.execute(Command("bms2", "charge_current_limit", 120.5, time.time() + 2)))
        with pytest.raises(CommandFailed, match="write refused.*exception code 1") as refused:
            await await_deferred(wrong.execute(Command("bms2", "charge_current_limit", 99.0, time.time() + 2)))
        served = simulator.value("bms2", "charge_current_limit")
    finally:
        await await_deferred(right.stop())
        await await_deferred(wrong.stop())
        await relay.stop()
        await await_deferred(simulator.stop())
    assert result.readback == pytest.approx(120.5) and served == pytest.approx(120.5)
    assert refused.value.written is False
    requests = [f[1:] for f in rtu_frames(bytes(relay.requests), rtu_request_length)]
    replies = [f[1:] for f in rtu_frames(bytes(relay.replies), rtu_reply_length)]
    writes = [(pdu, reply) for pdu, reply in zip(requests, replies) if pdu[0] in (6, 16)]
    assert writes == [(struct.pack(">BHHBH", 16, 100, 1, 2, 1205), struct.pack(">BHH", 16, 100, 1)),
                      (struct.pack(">BHH", 6, 100, 990), bytes([0x86, 0x01]))]
