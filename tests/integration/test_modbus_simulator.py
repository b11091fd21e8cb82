"""The Modbus simulator against pymodbus' own clients: encodings, writes, behaviours, faults.

The peer is pymodbus' AsyncModbusTcpClient / AsyncModbusSerialClient (not the gateway's driver),
so these tests pin what the simulator puts on the wire. Expected registers are computed here
with ``struct``, independently of ``drivers.modbus.codec``.
"""

import asyncio
import logging
import struct
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from twisted.internet import reactor

from drivers.modbus.profile import ModbusConnection, ModbusOptions, ModbusPoint, ModbusProfile
from drivers.modbus.sim.server import ModbusSimulator
from gateway.aio import await_deferred
from gateway.config.profile import Limits, SimBehaviour
from gateway.interfaces import ISimulator
from gateway.model import Device
from tests.aio import on_asyncio
from tests.devices import socat_cable

pytestmark = pytest.mark.integration

PERIOD_S = 0.05
RATE = 20_000.0  # W/s the PCS power slews at

PROFILE = ModbusProfile(
    model="sim-test-pcs", kind="pcs", protocol="modbus", modbus=ModbusOptions(address_base=0),
    points=[
        ModbusPoint(id="frequency", table="input", address=0, type="float32", order="CDAB",
                    unit="Hz", sim=SimBehaviour(kind="constant", value=50.25)),
        ModbusPoint(id="temperature", table="input", address=2, type="int16", scale=0.1,
                    unit="degC", sim=SimBehaviour(kind="constant", value=-12.3)),
        ModbusPoint(id="p_set", table="holding", address=10, type="int32", unit="W",
                    writable=Limits(min=-50_000, max=50_000)),
        ModbusPoint(id="p", table="holding", address=12, type="int32", unit="W",
                    sim=SimBehaviour(kind="follow", source="p_set", rate_per_s=RATE)),
        ModbusPoint(id="run", table="coil", address=3, type="bool",
                    writable=Limits(min=0, max=1)),
    ])


def device(name: str, connection: ModbusConnection) -> Device:
    return Device(name=name, profile=PROFILE, profile_file=Path("inline"),
                  connection=connection.model_copy(update={"poll_s": 1, "timeout_s": 1.0, "retries": 0}))


def tcp(unit: int, framer: str | None = None) -> ModbusConnection:
    # ModbusConnection validates port >= 1; the simulator also takes 0 (any free port)
    return ModbusConnection(host="127.0.0.1", unit=unit, framer=framer).model_copy(update={"port": 0})


def int32_words(value: int) -> list[int]:
    return list(struct.unpack(">HH", struct.pack(">i", value)))


def int32_of(words: list[int]) -> int:
    return struct.unpack(">i", struct.pack(">HH", *words))[0]


async def tcp_client(port: int, timeout: float = 0.5, framer: FramerType = FramerType.SOCKET,
                     received: list[bytes] | None = None) -> AsyncModbusTcpClient:
    def trace(sending: bool, data: bytes) -> bytes:
        if not sending and received is not None:
            received.append(data)
        return data
    client = AsyncModbusTcpClient("127.0.0.1", port=port, framer=framer, timeout=timeout,
                                  retries=0, reconnect_delay=0, trace_packet=trace)
    assert await client.connect()
    return client


async def read_p(client: AsyncModbusTcpClient) -> int:
    return int32_of((await client.read_holding_registers(12, count=2, device_id=1)).registers)


@pytest_twisted.async_yield_fixture
async def sim() -> Any:
    """Two PCS units (1 and 2) behind one Modbus TCP endpoint on a free port."""
    simulator = ModbusSimulator([device("pcs1", tcp(1)), device("pcs2", tcp(2))], reactor,
                                period_s=PERIOD_S)
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A socat pty pair: the simulator's end and the client's end of one 'RS-485 line'."""
    yield from socat_cable(tmp_path)


@on_asyncio
async def test_values_are_served_with_the_profile_encoding(sim: ModbusSimulator) -> None:
    """float32 CDAB, int16 with scale 0.1 and int32 ABCD read back as the profile says."""
    assert ISimulator.providedBy(sim)
    sim.set_value("pcs1", "p_set", -40_000)
    client = await tcp_client(sim.port_of("pcs1"))
    try:
        inputs = (await client.read_input_registers(0, count=3, device_id=1)).registers
        holding = (await client.read_holding_registers(10, count=2, device_id=1)).registers
    finally:
        client.close()
    assert struct.unpack(">f", struct.pack(">HH", inputs[1], inputs[0]))[0] == pytest.approx(50.25)
    assert inputs[2] == struct.unpack(">H", struct.pack(">h", -123))[0]
    assert int32_of(holding) == -40_000
    assert sim.value("pcs1", "temperature") == pytest.approx(-12.3)
    assert sim.value("pcs1", "frequency") == pytest.approx(50.25)


@on_asyncio
async def test_power_follows_a_setpoint_written_by_a_client(sim: ModbusSimulator) -> None:
    """An FC16 write of p_set reaches the engine; p then slews to it at the configured rate."""
    client = await tcp_client(sim.port_of("pcs1"))
    try:
        response = await client.write_registers(10, int32_words(20_000), device_id=1)
        assert not response.isError()
        assert sim.value("pcs1", "p_set") == 20_000
        seen = [await read_p(client)]
        deadline = asyncio.get_running_loop().time() + 20_000 / RATE + 2.0
        while seen[-1] != 20_000 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(PERIOD_S)
            seen.append(await read_p(client))
    finally:
        client.close()
    assert seen[0] < 20_000, "p jumped instead of slewing"
    assert seen == sorted(seen) and seen[-1] == 20_000
    assert sim.value("pcs2", "p") == 0, "another unit on the endpoint is unaffected"


@on_asyncio
async def test_writes_outside_limits_or_to_read_only_points_are_refused(sim: ModbusSimulator) -> None:
    """Beyond the limits answers exception 3, a read-only register exception 2; nothing changes."""
    client = await tcp_client(sim.port_of("pcs1"))
    try:
        too_big = await client.write_registers(10, int32_words(60_000), device_id=1)
        read_only = await client.write_registers(12, int32_words(1), device_id=1)
        unmapped = await client.read_holding_registers(100, count=1, device_id=1)
    finally:
        client.close()
    assert (too_big.exception_code, read_only.exception_code) == (3, 2)
    assert unmapped.isError() and unmapped.exception_code == 2
    assert sim.value("pcs1", "p_set") == 0


@on_asyncio
async def test_a_coil_write_reaches_the_engine(sim: ModbusSimulator) -> None:
    """FC5 on a writable coil sets the engine's value, and the coil reads back set."""
    client = await tcp_client(sim.port_of("pcs1"))
    try:
        assert not (await client.write_coil(3, True, device_id=1)).isError()
        bits = (await client.read_coils(3, count=1, device_id=1)).bits
    finally:
        client.close()
    assert bits[0] is True
    assert sim.engine("pcs1").get("run") is True and sim.value("pcs1", "run") is True


@on_asyncio
async def test_a_value_the_type_cannot_carry_is_logged_once(sim: ModbusSimulator,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """An engine value beyond int16 (a behaviour run off) is logged once naming device and point; ticks go on."""
    caplog.set_level(logging.WARNING, logger="drivers.modbus.sim.server")
    sim.engine("pcs1").set("temperature", 4000.0)
    sim.set_value("pcs1", "p_set", 1000)
    client = await tcp_client(sim.port_of("pcs1"))
    try:
        deadline = asyncio.get_running_loop().time() + 2.0
        while await read_p(client) != 1000:  # ticks keep running and serving other points
            assert asyncio.get_running_loop().time() < deadline, "ticks stopped"
            await asyncio.sleep(PERIOD_S)
        await asyncio.sleep(3 * PERIOD_S)
    finally:
        client.close()
    records = [r for r in caplog.records if "temperature" in r.getMessage()]
    assert len(records) == 1 and "pcs1" in records[0].getMessage()
    assert sim.value("pcs1", "temperature") == pytest.approx(-12.3), "register keeps last value"


@pytest.mark.parametrize("point, value", [("temperature", 4000.0), ("temperature", -3276.8),
                                          ("p_set", "high"), ("frequency", float("nan")),
                                          ("run", 2)])
def test_set_value_refuses_what_the_registers_cannot_carry(point: str, value: Any) -> None:
    """set_value refuses a value beyond the type, the sentinel, the wrong kind or NaN, naming the point; no change."""
    simulator = ModbusSimulator([device("pcs1", tcp(1))], reactor, period_s=PERIOD_S)
    simulator.set_value("pcs1", "temperature", 21.5)

    def state() -> tuple[dict, dict]:
        return (simulator.engine("pcs1").values(),
                {p.id: simulator.value("pcs1", p.id) for p in PROFILE.points})
    before = state()
    with pytest.raises(ValueError, match=repr(point)):
        simulator.set_value("pcs1", point, value)
    assert state() == before


@on_asyncio
async def test_silence_times_out_while_another_unit_answers(sim: ModbusSimulator) -> None:
    """A silenced unit never answers; unit 2 on the same endpoint does; clearing restores it."""
    await await_deferred(sim.fault("pcs1", "silence"))
    client = await tcp_client(sim.port_of("pcs1"))
    try:
        with pytest.raises(ModbusIOException):
            await client.read_holding_registers(10, count=2, device_id=1)
        assert not (await client.read_holding_registers(10, count=2, device_id=2)).isError()
        await await_deferred(sim.clear_fault("pcs1"))
        assert not (await client.read_holding_registers(10, count=2, device_id=1)).isError()
    finally:
        client.close()


@on_asyncio
async def test_unknown_unit_ids_get_no_answer(sim: ModbusSimulator) -> None:
    """A unit id no device uses is silent, as on a real line (not pymodbus' exception 4)."""
    client = await tcp_client(sim.port_of("pcs1"))
    try:
        with pytest.raises(ModbusIOException):
            await client.read_holding_registers(10, count=2, device_id=9)
    finally:
        client.close()


@pytest.mark.parametrize("kw, code", [({}, 4), ({"code": 6}, 6)])
@on_asyncio
async def test_exception_fault_answers_the_code(sim: ModbusSimulator, kw: dict, code: int) -> None:
    """An exception fault answers every request with its code (4 unless told)."""
    await await_deferred(sim.fault("pcs1", "exception", **kw))
    client = await tcp_client(sim.port_of("pcs1"))
    try:
        read = await client.read_input_registers(0, count=2, device_id=1)
        write = await client.write_coil(3, True, device_id=1)
    finally:
        client.close()
    assert (read.exception_code, write.exception_code) == (code, code)
    assert sim.value("pcs1", "run") is False, "the refused write did not happen"


@on_asyncio
async def test_slow_fault_delays_the_answer(sim: ModbusSimulator) -> None:
    """A slow device answers correctly, but only after delay_s."""
    await await_deferred(sim.fault("pcs1", "slow", delay_s=0.3))
    client = await tcp_client(sim.port_of("pcs1"), timeout=2.0)
    try:
        started = time.monotonic()
        response = await client.read_input_registers(2, count=1, device_id=1)
        elapsed = time.monotonic() - started
        quick = time.monotonic()
        await client.read_input_registers(2, count=1, device_id=2)
        other = time.monotonic() - quick
    finally:
        client.close()
    assert response.registers == [struct.unpack(">H", struct.pack(">h", -123))[0]]
    assert 0.3 <= elapsed < 1.5 and other < 0.2


@on_asyncio
async def test_garbage_fault_sends_an_undecodable_frame(sim: ModbusSimulator) -> None:
    """Garbage arrives as bytes (an MBAP frame with a truncated PDU) that decode to no answer."""
    await await_deferred(sim.fault("pcs1", "garbage"))
    received: list[bytes] = []
    client = await tcp_client(sim.port_of("pcs1"), received=received)
    try:
        with pytest.raises(ModbusIOException):
            await client.read_holding_registers(10, count=2, device_id=1)
    finally:
        client.close()
    frame = b"".join(received)
    assert frame[6] == 1 and frame[7] == 3, "unit 1, function 3"
    assert int.from_bytes(frame[4:6], "big") == len(frame) - 6, "MBAP length is consistent"
    assert frame[8] == 4 and len(frame) - 9 < 4, "byte count 4, fewer data bytes"


@on_asyncio
async def test_disconnect_drops_connections_and_refuses_until_cleared(sim: ModbusSimulator) -> None:
    """Disconnect closes open connections and refuses new ones; clearing listens on the same port."""
    port = sim.port_of("pcs1")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await await_deferred(sim.fault("pcs1", "disconnect"))
    assert await asyncio.wait_for(reader.read(), 2.0) == b""
    writer.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    await await_deferred(sim.clear_fault("pcs1"))
    assert sim.port_of("pcs1") == port
    client = await tcp_client(port)
    try:
        assert not (await client.read_holding_registers(10, count=2, device_id=2)).isError()
    finally:
        client.close()


@on_asyncio
async def test_rtu_over_tcp_endpoint() -> None:
    """A connection with framer rtu on a host is served RTU-framed over TCP."""
    simulator = ModbusSimulator([device("rtu1", tcp(5, framer="rtu"))], reactor, period_s=PERIOD_S)
    await await_deferred(simulator.start())
    try:
        client = await tcp_client(simulator.port_of("rtu1"), framer=FramerType.RTU)
        try:
            inputs = (await client.read_input_registers(2, count=1, device_id=5)).registers
        finally:
            client.close()
    finally:
        await await_deferred(simulator.stop())
    assert inputs == [struct.unpack(">H", struct.pack(">h", -123))[0]]


@on_asyncio
async def test_stop_cancels_delayed_answers_and_leaves_no_tasks() -> None:
    """Stopping while an answer is delayed leaves no simulator task pending on the loop."""
    simulator = ModbusSimulator([device("pcs1", tcp(1))], reactor, period_s=PERIOD_S)
    await await_deferred(simulator.start())
    await await_deferred(simulator.fault("pcs1", "slow", delay_s=30.0))
    client = await tcp_client(simulator.port_of("pcs1"), timeout=5.0)
    request = asyncio.ensure_future(client.read_coils(3, count=1, device_id=1))

    def answers() -> list[asyncio.Task]:
        return [t for t in asyncio.all_tasks()
                if getattr(t.get_coro(), "__qualname__", "").endswith("Handler._answer")]
    try:
        while not answers():
            await asyncio.sleep(0.01)
        await await_deferred(simulator.stop())
        assert answers() == []
    finally:
        request.cancel()
        client.close()


@on_asyncio
async def test_rtu_line_with_two_units_and_a_silent_one(pty_pair: tuple[str, str]) -> None:
    """On one serial line unit 1 goes silent (timeout) while unit 2 keeps answering; garbage
    there is a frame with a wrong CRC."""
    line, peer = pty_pair
    serial = ModbusConnection(serial=line, baudrate=115200)
    simulator = ModbusSimulator([device("bms1", serial.model_copy(update={"unit": 1})),
                                 device("bms2", serial.model_copy(update={"unit": 2}))],
                                reactor, period_s=PERIOD_S)
    await await_deferred(simulator.start())
    received: list[bytes] = []
    client = AsyncModbusSerialClient(peer, framer=FramerType.RTU, baudrate=115200, timeout=0.5,
                                     retries=0, reconnect_delay=0,
                                     trace_packet=lambda s, d: received.append(d) or d if not s else d)
    try:
        assert await client.connect()
        simulator.set_value("bms2", "p_set", 1234)
        assert int32_of((await client.read_holding_registers(10, count=2, device_id=2)).registers) == 1234
        await await_deferred(simulator.fault("bms1", "silence"))
        with pytest.raises(ModbusIOException):
            await client.read_holding_registers(10, count=2, device_id=1)
        assert int32_of((await client.read_holding_registers(10, count=2, device_id=2)).registers) == 1234
        await await_deferred(simulator.fault("bms1", "garbage"))
        received.clear()
        with pytest.raises(ModbusIOException):
            await client.read_holding_registers(10, count=2, device_id=1)
        frame = b"".join(received)
        assert frame[:2] == b"\x01\x03" and len(frame) == 9, "a whole frame arrived"
        await await_deferred(simulator.clear_fault("bms1"))
        assert not (await client.write_registers(10, int32_words(-500), device_id=1)).isError()
        assert simulator.value("bms1", "p_set") == -500 and simulator.value("bms2", "p_set") == 1234
    finally:
        client.close()
        await await_deferred(simulator.stop())
