"""A Modbus device written from the specification, whose every reply a test can spoil.

It shares no code with pymodbus (convention 8): the framing is written here from *Modbus
Messaging on TCP/IP v1.0b* (MBAP: transaction id, protocol id 0, length = unit + PDU, unit id)
and *Modbus over Serial Line v1.02* (address, PDU, CRC-16/MODBUS low byte first), and the PDUs
from *Modbus Application Protocol v1.1b3* (FC1-6, FC15-16). pymodbus' own server cannot be made
to send a wrong function code, a short byte count or a reply for a transaction long gone, and a
check judged by the library that produced the bytes proves nothing.

``misbehave(mode, fc=None)`` picks how replies are spoilt (``MODES``), optionally only replies to
one function code. Every spoilt reading reply carries ``POISON`` in its data, so a test can prove
that no value from a bad reply ever reached the sink: a true value is never 0x7777.
"""

import asyncio
import os
import struct
import tty
from dataclasses import dataclass, field
from typing import Callable

POISON = 0x77  # every data byte of a spoilt reading reply


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF), as the serial-line spec gives it."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def rtu_frame(address: int, pdu: bytes) -> bytes:
    """Address, PDU, CRC (low byte first)."""
    body = bytes([address]) + pdu
    return body + crc16(body).to_bytes(2, "little")


def mbap_frame(transaction: int, unit: int, pdu: bytes) -> bytes:
    """MBAP header (transaction, protocol 0, length of unit + PDU, unit), then the PDU."""
    return struct.pack(">HHHB", transaction, 0, len(pdu) + 1, unit) + pdu


@dataclass
class Image:
    """The device's four tables; unset addresses read 0."""

    coils: dict[int, bool] = field(default_factory=dict)
    discrete: dict[int, bool] = field(default_factory=dict)
    holding: dict[int, int] = field(default_factory=dict)
    input: dict[int, int] = field(default_factory=dict)

    def answer(self, pdu: bytes) -> bytes:
        """The correct reply PDU to a request PDU (executing writes), or exception 1."""
        fc = pdu[0]
        address, value = struct.unpack(">HH", pdu[1:5])
        if fc in (1, 2):
            table = self.coils if fc == 1 else self.discrete
            packed = bytearray((value + 7) // 8)
            for i in range(value):
                if table.get(address + i):
                    packed[i // 8] |= 1 << (i % 8)
            return bytes([fc, len(packed)]) + bytes(packed)
        if fc in (3, 4):
            table = self.holding if fc == 3 else self.input
            data = b"".join(table.get(address + i, 0).to_bytes(2, "big") for i in range(value))
            return bytes([fc, len(data)]) + data
        if fc == 5:
            self.coils[address] = value == 0xFF00
            return pdu[:5]
        if fc == 6:
            self.holding[address] = value
            return pdu[:5]
        if fc == 16:
            for i in range(value):
                self.holding[address + i] = int.from_bytes(pdu[6 + 2 * i:8 + 2 * i], "big")
            return pdu[:5]
        return bytes([fc | 0x80, 1])


@dataclass(frozen=True)
class Out:
    """One thing the device sends: a framed PDU, possibly spoilt, or raw bytes."""

    pdu: bytes = b""
    unit_delta: int = 0  # answer as another unit/slave address
    transaction: int | None = None  # MBAP transaction id instead of the request's
    cut: int = 0  # bytes missing at the end of the frame (the header still claims them)
    bad_crc: bool = False  # RTU: CRC spoilt
    raw: bytes | None = None  # sent as is, no framing


def _poisoned(good: bytes) -> bytes:
    """The same reply with every data byte poisoned (reads), or unchanged (write echoes)."""
    if good[0] in (1, 2, 3, 4):
        return good[:2] + bytes([POISON]) * good[1]
    return good


def _with_byte_count(fc: int, count: int) -> bytes:
    return bytes([fc, count]) + bytes([POISON]) * count


_OTHER_FC = {1: 2, 2: 1, 3: 4, 4: 3, 5: 6, 6: 16, 16: 6}

Script = Callable[[bytes, bytes], list[Out]]
"""(request PDU, correct reply PDU) -> what to send."""

MODES: dict[str, Script] = {
    "good": lambda req, good: [Out(good)],
    "wrong_fc": lambda req, good: [Out(bytes([_OTHER_FC.get(req[0], 3)]) + _poisoned(good)[1:])],
    "fc1_bits": lambda req, good: [Out(_with_byte_count(1, 1))],
    "exception": lambda req, good: [Out(bytes([req[0] | 0x80, 4]))],
    "exception_wrong_fc": lambda req, good: [Out(bytes([_OTHER_FC.get(req[0], 3) | 0x80, 4]))],
    "wrong_unit": lambda req, good: [Out(_poisoned(good), unit_delta=1)],
    "short_byte_count": lambda req, good: [Out(_with_byte_count(req[0], max(good[1] - 2, 0)))],
    "long_byte_count": lambda req, good: [Out(_with_byte_count(req[0], good[1] + 2))],
    "odd_byte_count": lambda req, good: [Out(_with_byte_count(req[0], good[1] + 1))],
    "byte_count_beyond_frame": lambda req, good: [Out(_poisoned(good)[:-2])],
    "wrong_echo": lambda req, good: [Out(good[:1] + ((int.from_bytes(good[1:3], "big") + 1) & 0xFFFF)
                                         .to_bytes(2, "big") + good[3:])],
    "truncated": lambda req, good: [Out(_poisoned(good), cut=3)],
    "garbage": lambda req, good: [Out(raw=b"\xde\xad\xbe\xef" * 4)],
    "silence": lambda req, good: [],
    "bad_crc": lambda req, good: [Out(_poisoned(good), bad_crc=True)],
}
"""How replies are spoilt. Two more need state, so the device handles them itself:
``wrong_tid`` and ``zero_tid`` (MBAP transaction id + 1, or 0), and ``late`` (every other
request goes unanswered; the next one gets that old reply, poisoned, then its own, correct)."""

STATEFUL = ("wrong_tid", "zero_tid", "late")


class _Behaviour:
    """The device's register image and how it answers; shared by both framings."""

    def __init__(self, unit: int, image: Image) -> None:
        self.unit = unit
        self.image = image
        self.mode = "good"
        self.fc: int | None = None
        self.requests = 0
        self._held: tuple[int, bytes] | None = None

    def misbehave(self, mode: str, fc: int | None = None) -> None:
        """Spoil replies as ``mode`` says; only replies to ``fc`` if given."""
        if mode not in MODES and mode not in STATEFUL:
            raise ValueError(f"unknown mode {mode!r}")
        self.mode, self.fc, self._held = mode, fc, None

    def outs(self, transaction: int, pdu: bytes) -> list[Out]:
        """What to send for one request."""
        self.requests += 1
        good = self.image.answer(pdu)
        mode = self.mode if self.fc in (None, pdu[0]) else "good"
        if mode == "wrong_tid":
            return [Out(_poisoned(good), transaction=(transaction + 1) & 0xFFFF)]
        if mode == "zero_tid":
            return [Out(_poisoned(good), transaction=0)]
        if mode == "late":
            if self._held is None:
                self._held = (transaction, _poisoned(good))
                return []
            (old, stale), self._held = self._held, None
            return [Out(stale, transaction=old), Out(good)]
        return MODES[mode](pdu, good)


class HostileTcpDevice(_Behaviour):
    """A Modbus TCP device on 127.0.0.1 (a free port) answering as ``misbehave`` says."""

    def __init__(self, unit: int, image: Image) -> None:
        super().__init__(unit, image)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> int:
        """Listen (on ``port``, or a free one); returns the port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Close the listener and every connection."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                header = await reader.readexactly(7)
                transaction, _protocol, length, unit = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(length - 1)
                if unit != self.unit:
                    continue
                for out in self.outs(transaction, pdu):
                    writer.write(self._frame(out, transaction))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _frame(self, out: Out, transaction: int) -> bytes:
        if out.raw is not None:
            return out.raw
        tid = transaction if out.transaction is None else out.transaction
        frame = mbap_frame(tid, (self.unit + out.unit_delta) & 0xFF, out.pdu)
        return frame[:len(frame) - out.cut]


def _request_length(buffer: bytes) -> int:
    """Bytes of the RTU request at the start of ``buffer`` (0: not known yet)."""
    if len(buffer) < 2:
        return 0
    if buffer[1] in (15, 16):
        return 9 + buffer[6] if len(buffer) >= 7 else 0
    return 8


class HostileRtuDevice(_Behaviour):
    """A Modbus RTU slave on one end of a pty pair, answering as ``misbehave`` says.

    Requests for other addresses are ignored, as on an RS-485 line. A request with a bad CRC
    drops one byte and the parser hunts for the next frame.
    """

    def __init__(self, unit: int, image: Image, path: str) -> None:
        super().__init__(unit, image)
        self._path = path
        self._fd = -1
        self._buffer = b""

    def start(self) -> None:
        """Open the tty raw and serve it on the running loop."""
        self._fd = os.open(self._path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self._fd)
        asyncio.get_running_loop().add_reader(self._fd, self._readable)

    def stop(self) -> None:
        """Stop serving and close the tty."""
        if self._fd >= 0:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

    def _readable(self) -> None:
        try:
            self._buffer += os.read(self._fd, 512)
        except BlockingIOError:
            return
        while (size := _request_length(self._buffer)) and len(self._buffer) >= size:
            frame, self._buffer = self._buffer[:size], self._buffer[size:]
            if crc16(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
                self._buffer = frame[1:] + self._buffer
                continue
            if frame[0] == self.unit:
                for out in self.outs(0, frame[1:-2]):
                    os.write(self._fd, self._frame(out))

    def _frame(self, out: Out) -> bytes:
        if out.raw is not None:
            return out.raw
        frame = rtu_frame((self.unit + out.unit_delta) & 0xFF, out.pdu)
        if out.bad_crc:
            frame = frame[:-1] + bytes([frame[-1] ^ 0xFF])
        return frame[:len(frame) - out.cut]
