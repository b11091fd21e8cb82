"""An IEC 60870-5-104 wire decoder and raw master written from the standard's octet layout.

Why it exists (DESIGN convention 8): a test that reads the outstation's frames through the same
library that wrote them cannot see that library's mistakes. This module shares no code with c104,
hat-drivers or iec60870-parser; it is the standard library and the octet tables of IEC 60870-5-104
(APCI) and IEC 60870-5-101 section 7.3 (ASDU with 2-octet COT incl. originator address, 2-octet
common address, 3-octet IOA, everything little-endian).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as _ssl
import struct
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Callable, TypeVar

T = TypeVar("T")

START = 0x68
U_CODES = {"STARTDT_ACT": 0x07, "STARTDT_CON": 0x0B, "STOPDT_ACT": 0x13,
           "STOPDT_CON": 0x23, "TESTFR_ACT": 0x43, "TESTFR_CON": 0x83}
U_NAMES = {code: name for name, code in U_CODES.items()}


class WireError(ValueError):
    """The octets do not follow the standard: a test must see that instead of a guessed value."""


@dataclass(frozen=True)
class CP56:
    """CP56Time2a fields exactly as sent, so a test can check absurd or invalid times too."""

    ms: int
    minute: int
    iv: bool
    hour: int
    su: bool
    day: int
    dow: int
    month: int
    year: int

    def datetime(self) -> datetime:
        """Naive datetime (year 2000 + year); ValueError when a field is out of range."""
        if self.ms > 59999:
            raise ValueError(f"CP56Time2a milliseconds {self.ms} > 59999")
        return datetime(2000 + self.year, self.month, self.day, self.hour, self.minute,
                        self.ms // 1000, self.ms % 1000 * 1000)


def decode_cp56(b: bytes) -> CP56:
    """Seven octets: ms LE, IV|minute, SU|hour, day-of-week<<5|day, month, year (reserved bits ignored)."""
    if len(b) != 7:
        raise WireError(f"CP56Time2a needs 7 octets, got {len(b)}")
    return CP56(ms=b[0] | b[1] << 8, minute=b[2] & 0x3F, iv=bool(b[2] & 0x80), hour=b[3] & 0x1F,
                su=bool(b[3] & 0x80), day=b[4] & 0x1F, dow=b[4] >> 5, month=b[5] & 0x0F, year=b[6] & 0x7F)


def cp56_raw(ms: int, minute: int, hour: int, day: int, month: int, year: int,
             iv: bool = False, su: bool = False, dow: int = 0) -> bytes:
    """CP56Time2a from bare fields without validation, to build absurd times for the outstation."""
    return bytes([ms & 0xFF, ms >> 8 & 0xFF, minute & 0x3F | iv << 7, hour & 0x1F | su << 7,
                  day & 0x1F | (dow & 7) << 5, month & 0x0F, year & 0x7F])


def cp56(dt: datetime, invalid: bool = False) -> bytes:
    """CP56Time2a of a naive datetime as the wall clock it shows (ISO day of week, SU clear)."""
    if not 2000 <= dt.year <= 2099:
        raise ValueError(f"CP56Time2a holds years 2000..2099, not {dt.year}")
    return cp56_raw(dt.second * 1000 + dt.microsecond // 1000, dt.minute, dt.hour, dt.day,
                    dt.month, dt.year - 2000, iv=invalid, dow=dt.isoweekday())


@dataclass(frozen=True)
class InfoObject:
    """One information object; fields an element does not carry stay None (quality 0)."""

    ioa: int
    value: object = None
    quality: int = 0
    time: CP56 | None = None
    select: bool | None = None
    qualifier: int | None = None
    sequence: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Asdu:
    """The data unit identifier plus decoded objects; ``raw`` is the ASDU without APCI."""

    type_id: int
    type_name: str
    sq: bool
    count: int
    cot: int
    negative: bool
    test: bool
    oa: int
    ca: int
    objects: list[InfoObject]
    raw: bytes


def _i16(b: bytes) -> int:
    return int(struct.unpack_from("<h", b)[0])


def _f32(b: bytes) -> float:
    return float(struct.unpack_from("<f", b)[0])


def _qos(o: int) -> dict[str, Any]:
    return {"select": bool(o & 0x80), "qualifier": o & 0x7F}


def _bcr(b: bytes) -> dict[str, Any]:
    s = b[4]
    return {"value": int(struct.unpack_from("<i", b)[0]), "quality": s & 0xE0, "sequence": s & 0x1F,
            "extra": {"cy": bool(s & 0x20), "ca": bool(s & 0x40), "iv": bool(s & 0x80)}}


def _command(value: object, o: int) -> dict[str, Any]:
    return {"value": value, "select": bool(o & 0x80), "qualifier": o >> 2 & 0x1F}


Decoder = Callable[[bytes], dict[str, Any]]
_SIQ: Decoder = lambda b: {"value": bool(b[0] & 1), "quality": b[0] & 0xF0}
_DIQ: Decoder = lambda b: {"value": b[0] & 3, "quality": b[0] & 0xF0}
_NVA: Decoder = lambda b: {"value": _i16(b) / 32768, "quality": b[2]}
_SVA: Decoder = lambda b: {"value": _i16(b), "quality": b[2]}
_FLT: Decoder = lambda b: {"value": _f32(b), "quality": b[4]}
_SCO: Decoder = lambda b: _command(bool(b[0] & 1), b[0])
_DCO: Decoder = lambda b: _command(b[0] & 3, b[0])
_SE_NVA: Decoder = lambda b: {"value": _i16(b) / 32768, **_qos(b[2])}
_SE_SVA: Decoder = lambda b: {"value": _i16(b), **_qos(b[2])}
_SE_FLT: Decoder = lambda b: {"value": _f32(b), **_qos(b[4])}
_COI: Decoder = lambda b: {"qualifier": b[0] & 0x7F, "extra": {"changed_parameters": bool(b[0] & 0x80)}}
_OCTET: Decoder = lambda b: {"qualifier": b[0]}
_TSC: Decoder = lambda b: {"value": b[0] | b[1] << 8}
_NONE: Decoder = lambda b: {}

# type id -> (name, element octets without time tag, decoder, CP56 time tag follows)
LAYOUTS: dict[int, tuple[str, int, Decoder, bool]] = {
    1: ("M_SP_NA_1", 1, _SIQ, False), 3: ("M_DP_NA_1", 1, _DIQ, False),
    9: ("M_ME_NA_1", 3, _NVA, False), 11: ("M_ME_NB_1", 3, _SVA, False),
    13: ("M_ME_NC_1", 5, _FLT, False), 15: ("M_IT_NA_1", 5, _bcr, False),
    30: ("M_SP_TB_1", 1, _SIQ, True), 31: ("M_DP_TB_1", 1, _DIQ, True),
    34: ("M_ME_TD_1", 3, _NVA, True), 35: ("M_ME_TE_1", 3, _SVA, True),
    36: ("M_ME_TF_1", 5, _FLT, True), 37: ("M_IT_TB_1", 5, _bcr, True),
    45: ("C_SC_NA_1", 1, _SCO, False), 46: ("C_DC_NA_1", 1, _DCO, False),
    48: ("C_SE_NA_1", 3, _SE_NVA, False), 49: ("C_SE_NB_1", 3, _SE_SVA, False),
    50: ("C_SE_NC_1", 5, _SE_FLT, False), 58: ("C_SC_TA_1", 1, _SCO, True),
    59: ("C_DC_TA_1", 1, _DCO, True), 61: ("C_SE_TA_1", 3, _SE_NVA, True),
    62: ("C_SE_TB_1", 3, _SE_SVA, True), 63: ("C_SE_TC_1", 5, _SE_FLT, True),
    70: ("M_EI_NA_1", 1, _COI, False), 100: ("C_IC_NA_1", 1, _OCTET, False),
    101: ("C_CI_NA_1", 1, _OCTET, False), 102: ("C_RD_NA_1", 0, _NONE, False),
    103: ("C_CS_NA_1", 0, _NONE, True), 107: ("C_TS_TA_1", 2, _TSC, True),
}
TYPE_IDS: dict[str, int] = {name: tid for tid, (name, *_rest) in LAYOUTS.items()}


def _ioa(b: bytes, at: int) -> int:
    return b[at] | b[at + 1] << 8 | b[at + 2] << 16


def _element(ioa: int, b: bytes, decode: Decoder, timed: bool) -> InfoObject:
    """One element (octets after the IOA) into an InfoObject; the time tag is always last."""
    fields = decode(b[:-7] if timed else b)
    return InfoObject(ioa=ioa, time=decode_cp56(b[-7:]) if timed else None, **fields)


def decode_asdu(data: bytes) -> Asdu:
    """Decode an ASDU strictly: its length must be exactly what type, SQ and count require."""
    if len(data) < 6:
        raise WireError(f"ASDU header needs 6 octets, got {len(data)}: {data.hex(' ')}")
    tid, vsq, cot_octet, oa = data[0], data[1], data[2], data[3]
    sq, count = bool(vsq & 0x80), vsq & 0x7F
    layout = LAYOUTS.get(tid)
    head = dict(type_id=tid, type_name=layout[0] if layout else f"UNKNOWN_{tid}", sq=sq, count=count,
                cot=cot_octet & 0x3F, negative=bool(cot_octet & 0x40), test=bool(cot_octet & 0x80),
                oa=oa, ca=data[4] | data[5] << 8, raw=bytes(data))
    if layout is None:
        return Asdu(objects=[], **head)
    name, size, decode, timed = layout
    size += 7 if timed else 0
    if count == 0:
        raise WireError(f"{name} with number of objects 0: {data.hex(' ')}")
    expected = 6 + (3 + count * size if sq else count * (3 + size))
    if len(data) != expected:
        raise WireError(f"{name} SQ={int(sq)} n={count} needs {expected} octets, got {len(data)}: {data.hex(' ')}")
    if sq:
        first = _ioa(data, 6)
        objects = [_element(first + i, data[9 + i * size:9 + (i + 1) * size], decode, timed)
                   for i in range(count)]
    else:
        objects = [_element(_ioa(data, at), data[at + 3:at + 3 + size], decode, timed)
                   for at in range(6, len(data), 3 + size)]
    return Asdu(objects=objects, **head)


def asdu(type_id: int, cot: int, ca: int, objects: list[tuple[int, bytes]], *, oa: int = 0,
         test: bool = False, negative: bool = False, sq: bool = False) -> bytes:
    """An ASDU from (ioa, element) pairs; with ``sq`` only the first IOA is sent (must be consecutive)."""
    if not 0 < len(objects) <= 127 or not 0 <= cot <= 63:
        raise ValueError(f"{len(objects)} objects / cot {cot} do not fit the VSQ / COT fields")
    head = bytes([type_id, sq << 7 | len(objects), cot | negative << 6 | test << 7, oa,
                  ca & 0xFF, ca >> 8 & 0xFF])
    if sq:
        if [ioa for ioa, _ in objects] != list(range(objects[0][0], objects[0][0] + len(objects))):
            raise ValueError("SQ=1 needs consecutive information object addresses")
        return head + objects[0][0].to_bytes(3, "little") + b"".join(e for _, e in objects)
    return head + b"".join(ioa.to_bytes(3, "little") + e for ioa, e in objects)


def sco(on: bool, select: bool = False, qu: int = 0) -> bytes:
    """Single command: SCS bit 0, QU bits 2..6, S/E bit 7."""
    return bytes([int(on) | (qu & 0x1F) << 2 | select << 7])


def dco(state: int, select: bool = False, qu: int = 0) -> bytes:
    """Double command: DCS bits 0..1 (1 off, 2 on), QU bits 2..6, S/E bit 7."""
    return bytes([state & 3 | (qu & 0x1F) << 2 | select << 7])


def qos(ql: int = 0, select: bool = False) -> bytes:
    """Qualifier of set-point command: QL bits 0..6, S/E bit 7."""
    return bytes([ql & 0x7F | select << 7])


def setpoint_float(value: float, select: bool = False, ql: int = 0) -> bytes:
    """C_SE_NC_1 element: IEEE 754 short float LE + QOS."""
    return struct.pack("<f", value) + qos(ql, select)


def setpoint_scaled(value: int, select: bool = False, ql: int = 0) -> bytes:
    """C_SE_NB_1 element: signed 16-bit LE + QOS."""
    return struct.pack("<h", value) + qos(ql, select)


def setpoint_normalized(value: float, select: bool = False, ql: int = 0) -> bytes:
    """C_SE_NA_1 element: value * 32768 rounded and clipped to int16 (1.0 becomes 32767) + QOS."""
    return struct.pack("<h", max(-32768, min(32767, round(value * 32768)))) + qos(ql, select)


def qoi(value: int = 20) -> bytes:
    """Qualifier of interrogation: 20 = station interrogation, 21..36 = group 1..16."""
    return bytes([value])


def qcc(rqt: int = 5, frz: int = 0) -> bytes:
    """Qualifier of counter interrogation: RQT bits 0..5 (5 = general), FRZ bits 6..7."""
    return bytes([rqt & 0x3F | (frz & 3) << 6])


@dataclass(frozen=True)
class Apdu:
    """One APDU; ``raw`` holds it whole, start octet and length included."""

    kind: str
    ssn: int | None
    rsn: int | None
    u: str | None
    asdu: Asdu | None
    raw: bytes

    def summary(self) -> str:
        """One line for failure messages."""
        if self.kind == "U":
            return f"U {self.u}"
        if self.kind == "S":
            return f"S rsn={self.rsn}"
        a = self.asdu
        what = f"{a.type_name} cot={a.cot}{'-' if a.negative else ''} ca={a.ca} n={a.count}" if a else "undecodable"
        return f"I ssn={self.ssn} rsn={self.rsn} {what}"


def _seq(n: int) -> bytes:
    return bytes([n << 1 & 0xFE, n >> 7 & 0xFF])


def i_frame(ssn: int, rsn: int, asdu: bytes) -> bytes:
    """I-format APDU: N(S) and N(R) shifted left one bit, LE, over two octets each."""
    return bytes([START, 4 + len(asdu)]) + _seq(ssn) + _seq(rsn) + asdu


def s_frame(rsn: int) -> bytes:
    """S-format APDU acknowledging everything before N(R)."""
    return bytes([START, 4, 0x01, 0x00]) + _seq(rsn)


def u_frame(name: str) -> bytes:
    """U-format APDU by name, e.g. ``"STARTDT_ACT"``."""
    return bytes([START, 4, U_CODES[name], 0, 0, 0])


def _cut(buffer: bytes) -> tuple[bytes | None, bytes]:
    """The first complete APDU frame and the rest, or (None, buffer) when it is incomplete."""
    if not buffer:
        return None, buffer
    if buffer[0] != START:
        raise WireError(f"start octet 0x{buffer[0]:02X}, not 0x68: {buffer[:16].hex(' ')}")
    if len(buffer) < 2:
        return None, buffer
    if not 4 <= buffer[1] <= 253:
        raise WireError(f"APDU length {buffer[1]} outside 4..253")
    end = 2 + buffer[1]
    return (buffer[:end], buffer[end:]) if len(buffer) >= end else (None, buffer)


def _apci(frame: bytes) -> Apdu:
    """The control field of a complete frame; the ASDU is left undecoded (None)."""
    c = frame[2:6]
    if c[2] & 1 or c[0] & 3 == 1 and c[:2] != b"\x01\0":
        raise WireError(f"reserved control field bits set: {frame[:6].hex(' ')}")
    if not c[0] & 1:
        if len(frame) == 6:
            raise WireError(f"I-frame without ASDU: {frame.hex(' ')}")
        return Apdu("I", c[0] >> 1 | c[1] << 7, c[2] >> 1 | c[3] << 7, None, None, frame)
    if len(frame) != 6:
        raise WireError(f"S/U-frame with length {len(frame) - 2}: {frame.hex(' ')}")
    if c[0] & 3 == 1:
        return Apdu("S", None, c[2] >> 1 | c[3] << 7, None, None, frame)
    if c[0] not in U_NAMES or c[1:] != b"\0\0\0":
        raise WireError(f"unknown U-frame: {frame.hex(' ')}")
    return Apdu("U", None, None, U_NAMES[c[0]], None, frame)


def decode_apdu(frame: bytes) -> Apdu:
    """A whole frame (0x68, length, control, ASDU) into an Apdu, ASDU decoded strictly."""
    apdu = _apci(frame)
    return replace(apdu, asdu=decode_asdu(frame[6:])) if apdu.kind == "I" else apdu


def split_apdus(buffer: bytes) -> tuple[list[Apdu], bytes]:
    """All complete APDUs at the front of ``buffer`` and the incomplete rest."""
    apdus: list[Apdu] = []
    frame, buffer = _cut(buffer)
    while frame is not None:
        apdus.append(decode_apdu(frame))
        frame, buffer = _cut(buffer)
    return apdus, buffer


class RawMaster:
    """A 104 master that speaks bytes, keeps its own sequence numbers and records every APDU received.

    All of it runs on the event loop the outstation under test shares, so nothing blocks.
    ``errors`` collects decode and sequence faults; ``closed`` turns True when the reader ends.
    """

    T2 = 0.5

    def __init__(self, w: int = 8, auto_ack: bool = True) -> None:
        self.w, self.auto_ack = w, auto_ack
        self.received: list[Apdu] = []
        self.errors: list[str] = []
        self.ssn = self.rsn = 0
        self.closed = False
        self._unacked = 0
        self._mark = 0
        self._returned: set[int] = set()
        self._t2: asyncio.TimerHandle | None = None
        self._changed = asyncio.Event()
        self._reading = asyncio.Event()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def connect(self, host: str, port: int, ssl: _ssl.SSLContext | None = None, timeout: float = 5) -> None:
        """Open TCP (or TLS; SNI/host check follow the context) and start the reader."""
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ssl), timeout)
        self._reading.set()
        self._task = asyncio.ensure_future(self._read_loop())

    async def startdt(self, timeout: float = 5) -> None:
        """STARTDT act, then wait for its confirmation."""
        await self._handshake("STARTDT", timeout)

    async def stopdt(self, timeout: float = 5) -> None:
        """STOPDT act, then wait for its confirmation."""
        await self._handshake("STOPDT", timeout)

    async def _handshake(self, name: str, timeout: float) -> None:
        await self.send_raw(u_frame(f"{name}_ACT"))
        await self.wait_for(lambda a: a.u == f"{name}_CON", timeout)

    async def send_asdu(self, asdu: bytes) -> None:
        """I-frame with our N(S) and the current N(R) (which acknowledges, so t2 stops)."""
        frame = i_frame(self.ssn, self.rsn, asdu)
        self.ssn = (self.ssn + 1) % 32768
        self._acked()
        await self.send_raw(frame)

    async def send_raw(self, data: bytes) -> None:
        """Any octets, as they are."""
        assert self._writer is not None, "connect() first"
        self._writer.write(data)
        await self._writer.drain()

    def ack(self) -> None:
        """S-frame with the current N(R), written now."""
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(s_frame(self.rsn))
        self._acked()

    def _acked(self) -> None:
        self._unacked = 0
        self._stop_t2()

    def _stop_t2(self) -> None:
        if self._t2 is not None:
            self._t2.cancel()
            self._t2 = None

    def _t2_expired(self) -> None:
        self._t2 = None
        if self._reading.is_set() and self._unacked:
            self.ack()

    def pause_reading(self) -> None:
        """Stall: stop reading the socket (TCP backs up) and stop acknowledging (an explicit ack() still goes)."""
        self._reading.clear()
        self._stop_t2()
        if self._writer is not None:
            self._writer.transport.pause_reading()

    def resume_reading(self) -> None:
        """End the stall; pending acknowledgements restart their t2."""
        self._reading.set()
        if self._writer is not None:
            self._writer.transport.resume_reading()
        if self.auto_ack and self._unacked and self._t2 is None:
            self._t2 = asyncio.get_running_loop().call_later(self.T2, self._t2_expired)

    async def _read_loop(self) -> None:
        """Cut frames, record them, count N(R), acknowledge, answer TESTFR; record every fault."""
        assert self._reader is not None
        buffer = b""
        try:
            while True:
                await self._reading.wait()
                data = await self._reader.read(65536)
                if not data:
                    return
                await self._reading.wait()  # octets read just before a pause wait for the resume
                buffer += data
                frame, buffer = _cut(buffer)
                while frame is not None:
                    self._on_frame(frame)
                    frame, buffer = _cut(buffer)
        except WireError as exc:
            self.errors.append(f"framing lost: {exc}")
        except (ConnectionError, OSError, _ssl.SSLError) as exc:
            self.errors.append(f"connection: {exc!r}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must show in the test, not vanish with the task
            self.errors.append(f"reader crashed: {exc!r}")
        finally:
            self.closed = True
            self._stop_t2()
            self._changed.set()

    def _on_frame(self, frame: bytes) -> None:
        try:
            apdu = _apci(frame)
        except WireError as exc:
            self.errors.append(str(exc))
            return
        if apdu.kind == "I":
            try:
                apdu = replace(apdu, asdu=decode_asdu(frame[6:]))
            except WireError as exc:
                self.errors.append(str(exc))
            self._count_i(apdu)
        elif apdu.u == "TESTFR_ACT" and self._writer is not None:
            self._writer.write(u_frame("TESTFR_CON"))
        self.received.append(apdu)
        self._changed.set()

    def _count_i(self, apdu: Apdu) -> None:
        if apdu.ssn != self.rsn:
            self.errors.append(f"N(S) {apdu.ssn} received, {self.rsn} expected")
        self.rsn = (self.rsn + 1) % 32768
        self._unacked += 1
        if not self.auto_ack:
            return
        if self._unacked >= self.w:
            self.ack()
        elif self._t2 is None:
            self._t2 = asyncio.get_running_loop().call_later(self.T2, self._t2_expired)

    async def _until(self, found: Callable[[], T | None], what: str, timeout: float) -> T:
        """Re-check ``found`` on every arrival until it gives a result; name what arrived on failure."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (result := found()) is None:
            if self.closed:
                raise ConnectionError(f"connection ended waiting for {what}; {self._arrivals()}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                if (result := found()) is not None:
                    return result
                raise asyncio.TimeoutError(f"no {what} within {timeout} s; {self._arrivals()}") from None
        return result

    def _arrivals(self) -> str:
        window = self.received[self._mark:]
        shown = "; ".join(a.summary() for a in window[-20:]) or "nothing"
        return f"{len(window)} since mark: {shown}" + (f"; errors: {self.errors}" if self.errors else "")

    async def wait_for(self, predicate: Callable[[Apdu], bool], timeout: float = 5) -> Apdu:
        """First APDU (since connect, mark ignored) that matches and no earlier wait_for returned."""
        scanned = 0

        def found() -> Apdu | None:
            nonlocal scanned
            for i in range(scanned, len(self.received)):
                if i not in self._returned and predicate(self.received[i]):
                    self._returned.add(i)
                    return self.received[i]
            scanned = len(self.received)
            return None
        return await self._until(found, "matching APDU", timeout)

    async def collect(self, predicate: Callable[[Apdu], bool], count: int, timeout: float) -> list[Apdu]:
        """The first ``count`` matching APDUs since connect or the last mark(), waiting for them."""
        hits: list[Apdu] = []
        scanned = self._mark

        def found() -> list[Apdu] | None:
            nonlocal scanned
            hits.extend(a for a in self.received[scanned:] if predicate(a))
            scanned = len(self.received)
            return hits[:count] if len(hits) >= count else None
        return await self._until(found, f"{count} matching APDUs", timeout)

    def mark(self) -> None:
        """Start a new window for collect() and asdus()."""
        self._mark = len(self.received)

    def asdus(self, since_mark: bool = True) -> list[Asdu]:
        """Decoded ASDUs received (since the mark, or since connect)."""
        window = self.received[self._mark if since_mark else 0:]
        return [a.asdu for a in window if a.asdu is not None]

    async def close(self) -> None:
        """Stop the reader and close the socket; a peer that does not answer the close is not waited for."""
        self._stop_t2()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError, _ssl.SSLError, asyncio.TimeoutError):
                await asyncio.wait_for(self._writer.wait_closed(), 2)
        self.closed = True
