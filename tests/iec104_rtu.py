"""A scripted IEC 60870-5-104 outstation (RTU) on raw sockets: the hostile peer for the 104 master.

Why hand-written: the gateway's 104 master driver is built on the c104 client (lib60870-C). A
peer built on c104's server would share that library's reading of the standard and its limits
(one type per IOA, no say over acknowledgements, confirmations or their absence), so a test
against it could not see the library's mistakes. This module is written from the standard's octet
layout, imports only the Python standard library, and shares no code with c104, lib60870,
hat-drivers, ``gateway/`` or the other wire helpers under ``tests/``.

What it follows:

* IEC 60870-5-104 clause 5 (APCI): start octet 0x68, length, four control octets; I, S and U
  formats; 15-bit send and receive sequence numbers N(S)/N(R) kept modulo 32768; at most k = 12
  unacknowledged I-frames sent, an S-frame at the latest after w = 8 received I-frames or t2;
  STARTDT/STOPDT/TESTFR act -> con; no I-frames before STARTDT con; a sequence error closes the
  connection. APDUs are at most 255 octets (length field <= 253).
* IEC 60870-5-104 clause 9 field sizes for the IEC 60870-5-101 clause 7.2 data unit identifier:
  cause of transmission 2 octets (with originator address), common address 2, IOA 3.
* IEC 60870-5-101 clause 7.2.6 information elements (SIQ, DIQ, QDS, NVA, SVA, IEEE 754 short
  float, BCR, SCO, DCO, QOS, QOI, QCC) and CP56Time2a (IEC 60870-5-4 binary time 2a), clause 7.3
  ASDU types, and the clause 7.4 procedures for station interrogation (untagged types, COT 20),
  counter interrogation (COT 37), clock synchronisation and command transmission (ACT_CON,
  ACT_TERM for an executed command, a select answered by ACT_CON only; negative confirmation with
  COT 44-47 for an unknown type, cause, common address or IOA).

Threads, not an event loop: the tests run an asyncio/Twisted loop in the main thread and c104
runs its own threads, so the peer has an accept thread, a reader thread per connection (APCI,
decoding, acknowledgements) and one responder thread that sends the answers in order, so that an
answer waiting for the master's acknowledgements never blocks the reading of them.
"""

import datetime
import queue
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional
from zoneinfo import ZoneInfo

# -- APCI (IEC 60870-5-104 clause 5) -------------------------------------------------------------
# APDU: 0x68 | length L = octets after this one (4..253) | control field, 4 octets | ASDU, L - 4 octets
#   I format: octets 1-2 = N(S) << 1 (bit 0 of octet 1 is 0), octets 3-4 = N(R) << 1, little-endian
#   S format: octet 1 = 0x01, octet 2 = 0, octets 3-4 = N(R) << 1
#   U format: octet 1 = one function bit | 0b11, octets 2-4 = 0
START = 0x68
MAX_LENGTH = 253
MAX_ASDU = MAX_LENGTH - 4
SEQ_MODULO = 1 << 15
STARTDT_ACT, STARTDT_CON, STOPDT_ACT, STOPDT_CON, TESTFR_ACT, TESTFR_CON = 0x07, 0x0B, 0x13, 0x23, 0x43, 0x83
_U_ANSWERS = {STARTDT_ACT: STARTDT_CON, STOPDT_ACT: STOPDT_CON, TESTFR_ACT: TESTFR_CON}

# -- ASDU (IEC 60870-5-101 clause 7.2, field sizes of IEC 60870-5-104 clause 9) ------------------
#   octet 1    type identification
#   octet 2    variable structure qualifier: bit 7 SQ, bits 0-6 number of objects
#   octet 3    cause of transmission: bit 7 T (test), bit 6 P/N (negative), bits 0-5 cause
#   octet 4    originator address
#   octets 5-6 common address, little-endian (0xFFFF: broadcast, answered with the station's own address)
#   then each object: IOA, 3 octets little-endian | information element(s) | [CP56Time2a, 7 octets]
HEADER = 6
IOA_OCTETS = 3
MAX_OBJECTS = 127
BROADCAST = 0xFFFF
SPONTANEOUS, ACTIVATION, ACT_CON, ACT_TERM = 3, 6, 7, 10
RETURN_INFO_REMOTE, INTERROGATED, COUNTER_GENERAL = 11, 20, 37
UNKNOWN_TYPE, UNKNOWN_CAUSE, UNKNOWN_CA, UNKNOWN_IOA = 44, 45, 46, 47
C_IC_NA_1, C_CI_NA_1, C_CS_NA_1 = 100, 101, 103
QOI_STATION = 20

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def i_frame(asdu: bytes, send_seq: int, recv_seq: int) -> bytes:
    """An I-format APDU carrying ``asdu`` with N(S) = ``send_seq`` and N(R) = ``recv_seq``."""
    return bytes([START, 4 + len(asdu)]) + struct.pack("<HH", send_seq << 1, recv_seq << 1) + asdu


def s_frame(recv_seq: int) -> bytes:
    """An S-format APDU acknowledging every I-frame before N(R) = ``recv_seq``."""
    return bytes([START, 4, 0x01, 0x00]) + struct.pack("<H", recv_seq << 1)


def u_frame(function: int) -> bytes:
    """A U-format APDU (``STARTDT_CON``, ``TESTFR_ACT``, ...)."""
    return bytes([START, 4, function, 0, 0, 0])


def _sequence(apdu: bytes, offset: int) -> int:
    return struct.unpack_from("<H", apdu, offset)[0] >> 1


def asdu_header(type_id: int, count: int, cause: int, common_address: int, negative: bool = False) -> bytes:
    """Data unit identifier of an SQ = 0 ASDU from this station (originator 0, test bit 0)."""
    return bytes([type_id, count, cause | (0x40 if negative else 0), 0]) + struct.pack("<H", common_address)


def mirror(asdu: bytes, cause: int, negative: bool) -> bytes:
    """The received ``asdu`` sent back with another cause and P/N bit (test bit and rest kept): a confirmation."""
    return bytes([asdu[0], asdu[1], (asdu[2] & 0x80) | (0x40 if negative else 0) | cause]) + asdu[3:]


@dataclass(frozen=True)
class Asdu:
    """The data unit identifier of a received ASDU and its information objects' octets."""

    type_id: int
    count: int
    cause: int
    negative: bool
    test: bool
    originator: int
    common_address: int
    objects: bytes


def parse_asdu(octets: bytes) -> Asdu:
    """Split an ASDU into its header fields; ValueError when it is shorter than a header and one IOA."""
    if len(octets) < HEADER + IOA_OCTETS:
        raise ValueError(f"ASDU of {len(octets)} octets: {octets.hex()}")
    return Asdu(type_id=octets[0], count=octets[1] & 0x7F, cause=octets[2] & 0x3F, negative=bool(octets[2] & 0x40),
                test=bool(octets[2] & 0x80), originator=octets[3],
                common_address=struct.unpack_from("<H", octets, 4)[0], objects=octets[HEADER:])


# -- CP56Time2a (IEC 60870-5-4 binary time 2a; IEC 60870-5-101 clause 7.2.6.18) -----------------
#   octets 1-2 milliseconds within the minute, 0..59999, little-endian
#   octet 3    bits 0-5 minute, bit 7 IV (invalid)
#   octet 4    bits 0-4 hour, bit 7 SU (summer time)
#   octet 5    bits 0-4 day of month, bits 5-7 day of week (1 = Monday .. 7, 0 = not used)
#   octet 6    bits 0-3 month
#   octet 7    bits 0-6 year within the century (2000 + year)
CP56_OCTETS = 7


@dataclass(frozen=True)
class Cp56Time:
    """A CP56Time2a as received: the wall-clock fields (naive), IV, SU and day of week."""

    wall: datetime.datetime
    invalid: bool
    summer: bool
    day_of_week: int

    def posix(self, zone: str) -> float:
        """The POSIX time of the wall-clock fields read in ``zone`` (an IANA name)."""
        return self.wall.replace(tzinfo=ZoneInfo(zone)).timestamp()


def encode_cp56(ts: float, zone: ZoneInfo) -> bytes:
    """``ts`` as the wall time in ``zone``, to the millisecond, IV = 0, SU = 0, day of week set."""
    wall = (_EPOCH + datetime.timedelta(milliseconds=round(ts * 1000))).astimezone(zone)
    if not 2000 <= wall.year <= 2099:
        raise ValueError(f"{wall.isoformat()} is outside the CP56Time2a years 2000-2099")
    ms = wall.second * 1000 + wall.microsecond // 1000
    return struct.pack("<H", ms) + bytes([wall.minute, wall.hour, wall.isoweekday() << 5 | wall.day,
                                          wall.month, wall.year - 2000])


def decode_cp56(octets: bytes) -> Cp56Time:
    """Seven CP56Time2a octets; ValueError when a field is out of range."""
    if len(octets) != CP56_OCTETS:
        raise ValueError(f"CP56Time2a needs 7 octets, got {len(octets)}")
    ms = octets[0] | octets[1] << 8
    wall = datetime.datetime(2000 + (octets[6] & 0x7F), octets[5] & 0x0F, octets[4] & 0x1F, octets[3] & 0x1F,
                             octets[2] & 0x3F, ms // 1000, ms % 1000 * 1000)
    return Cp56Time(wall, bool(octets[2] & 0x80), bool(octets[3] & 0x80), octets[4] >> 5)


# -- monitor-direction information elements (IEC 60870-5-101 clause 7.2.6) -----------------------
# SIQ / DIQ: bit 0 SPI (bits 0-1 DPI), bit 4 BL, 5 SB, 6 NT, 7 IV
# QDS (after NVA, SVA: int16 LE; after a short float: IEEE 754 LE): bit 0 OV, 4 BL, 5 SB, 6 NT, 7 IV
# BCR: counter int32 LE, then bits 0-4 sequence number, bit 5 CY, 6 CA, 7 IV
_INDICATION = {"BL": 0x10, "SB": 0x20, "NT": 0x40, "IV": 0x80}
_MEASUREMENT = {"OV": 0x01, **_INDICATION}
_COUNTER = {"CY": 0x20, "CA": 0x40, "IV": 0x80}


def _single(value: Any, quality: int) -> bytes:
    return bytes([int(bool(value)) | quality])


def _double(value: Any, quality: int) -> bytes:
    if value not in (0, 1, 2, 3):
        raise ValueError(f"double point value {value!r} is not 0 (intermediate), 1 (off), 2 (on) or 3 (faulty)")
    return bytes([value | quality])


def _normalized(value: Any, quality: int) -> bytes:
    if not -1.0 <= value <= 1.0:
        raise ValueError(f"normalized value {value!r} is outside -1..1")
    return struct.pack("<hB", min(round(value * 32768), 32767), quality)


def _scaled(value: Any, quality: int) -> bytes:
    return struct.pack("<hB", value, quality)


def _short_float(value: Any, quality: int) -> bytes:
    return struct.pack("<fB", value, quality)


def _counter(value: Any, quality: int) -> bytes:
    return struct.pack("<iB", value, quality)


@dataclass(frozen=True)
class _MonitorType:
    type_id: int
    element: Callable[[Any, int], bytes]
    flags: dict[str, int]
    untagged: str  # the type interrogations answer with
    tagged: bool


MONITOR_TYPES = {
    "M_SP_NA_1": _MonitorType(1, _single, _INDICATION, "M_SP_NA_1", False),
    "M_DP_NA_1": _MonitorType(3, _double, _INDICATION, "M_DP_NA_1", False),
    "M_ME_NA_1": _MonitorType(9, _normalized, _MEASUREMENT, "M_ME_NA_1", False),
    "M_ME_NB_1": _MonitorType(11, _scaled, _MEASUREMENT, "M_ME_NB_1", False),
    "M_ME_NC_1": _MonitorType(13, _short_float, _MEASUREMENT, "M_ME_NC_1", False),
    "M_IT_NA_1": _MonitorType(15, _counter, _COUNTER, "M_IT_NA_1", False),
    "M_SP_TB_1": _MonitorType(30, _single, _INDICATION, "M_SP_NA_1", True),
    "M_DP_TB_1": _MonitorType(31, _double, _INDICATION, "M_DP_NA_1", True),
    "M_ME_TD_1": _MonitorType(34, _normalized, _MEASUREMENT, "M_ME_NA_1", True),
    "M_ME_TE_1": _MonitorType(35, _scaled, _MEASUREMENT, "M_ME_NB_1", True),
    "M_ME_TF_1": _MonitorType(36, _short_float, _MEASUREMENT, "M_ME_NC_1", True),
    "M_IT_TB_1": _MonitorType(37, _counter, _COUNTER, "M_IT_NA_1", True),
}


# -- control-direction commands (IEC 60870-5-101 clauses 7.2.6.15, 7.2.6.16, 7.2.6.39) -----------
# SCO: bit 0 SCS, bits 2-6 QU, bit 7 S/E (1 = select)     DCO: bits 0-1 DCS, bits 2-6 QU, bit 7 S/E
# set points: NVA / SVA int16 LE, or IEEE 754 short float LE, then QOS: bits 0-6 QL, bit 7 S/E
def _sco(element: bytes) -> tuple[Any, bool, int]:
    return bool(element[0] & 0x01), bool(element[0] & 0x80), element[0] >> 2 & 0x1F


def _dco(element: bytes) -> tuple[Any, bool, int]:
    return element[0] & 0x03, bool(element[0] & 0x80), element[0] >> 2 & 0x1F


def _qos(value: Any, qos: int) -> tuple[Any, bool, int]:
    return value, bool(qos & 0x80), qos & 0x7F


def _set_normalized(element: bytes) -> tuple[Any, bool, int]:
    return _qos(struct.unpack_from("<h", element)[0] / 32768, element[2])


def _set_scaled(element: bytes) -> tuple[Any, bool, int]:
    return _qos(struct.unpack_from("<h", element)[0], element[2])


def _set_float(element: bytes) -> tuple[Any, bool, int]:
    return _qos(struct.unpack_from("<f", element)[0], element[4])


@dataclass(frozen=True)
class _CommandType:
    name: str
    octets: int  # the element without the time tag
    decode: Callable[[bytes], tuple[Any, bool, int]]  # -> value, select, qualifier (QU or QL)
    tagged: bool


COMMAND_TYPES = {
    45: _CommandType("C_SC_NA_1", 1, _sco, False),
    46: _CommandType("C_DC_NA_1", 1, _dco, False),
    48: _CommandType("C_SE_NA_1", 3, _set_normalized, False),
    49: _CommandType("C_SE_NB_1", 3, _set_scaled, False),
    50: _CommandType("C_SE_NC_1", 5, _set_float, False),
    58: _CommandType("C_SC_TA_1", 1, _sco, True),
    59: _CommandType("C_DC_TA_1", 1, _dco, True),
    61: _CommandType("C_SE_TA_1", 3, _set_normalized, True),
    62: _CommandType("C_SE_TB_1", 3, _set_scaled, True),
    63: _CommandType("C_SE_TC_1", 5, _set_float, True),
}


@dataclass(frozen=True)
class ReceivedCommand:
    """A process command as the master sent it."""

    type_name: str
    ioa: int
    value: Any  # bool (SCO), 0..3 (DCO), float -1..1 (normalized), int (scaled), float (short float)
    select: bool  # S/E = 1
    qualifier: int  # QU of SCO/DCO, QL of QOS
    cot: int
    negative: bool
    test: bool
    originator: int
    common_address: int
    time: Optional[Cp56Time]


def decode_command(asdu: Asdu) -> ReceivedCommand:
    """The single object of a command ASDU; ValueError when its layout is wrong."""
    kind = COMMAND_TYPES[asdu.type_id]
    size = IOA_OCTETS + kind.octets + (CP56_OCTETS if kind.tagged else 0)
    if asdu.count != 1 or len(asdu.objects) != size:
        raise ValueError(f"{kind.name}: {asdu.count} objects in {len(asdu.objects)} octets, expected 1 in {size}")
    value, selected, qualifier = kind.decode(asdu.objects[IOA_OCTETS:])
    tag = decode_cp56(asdu.objects[-CP56_OCTETS:]) if kind.tagged else None
    return ReceivedCommand(kind.name, int.from_bytes(asdu.objects[:IOA_OCTETS], "little"), value, selected, qualifier,
                           asdu.cause, asdu.negative, asdu.test, asdu.originator, asdu.common_address, tag)


@dataclass(frozen=True)
class CommandScript:
    """How the RTU answers commands to one IOA."""

    confirm: bool = True
    terminate: bool = True
    delay_s: float = 0.0
    then: Optional[Callable[[ReceivedCommand], None]] = None


@dataclass(frozen=True)
class _Point:
    type_name: str
    value: Any
    quality: frozenset[str]
    time: Optional[float]


class _Link:
    """One master connection and its APCI state (guarded by the RTU's condition)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.open = True
        self.started = False  # STARTDT confirmed
        self.send_seq = 0  # V(S)
        self.recv_seq = 0  # V(R)
        self.acked = 0  # N(R) last received: the oldest of our I-frames not yet acknowledged
        self.unacked_in = 0  # I-frames received and not yet acknowledged
        self.first_unacked_at = 0.0
        self.buffer = bytearray()

    def in_flight(self) -> int:
        return (self.send_seq - self.acked) % SEQ_MODULO


def _shutdown(sock: socket.socket) -> None:
    """Wake the thread blocked on ``sock`` (accept, select, recv); the socket may be shut already."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class ScriptedRtu:
    """An IEC 104 outstation on 127.0.0.1 whose points, answers and faults the test sets."""

    def __init__(self, common_address: int = 1, wire_zone: str = "UTC", *, answer_testfr: bool = True,
                 gi_negative: bool = False, gi_terminate: bool = True, k: int = 12, w: int = 8,
                 t1_s: float = 15.0, t2_s: float = 10.0) -> None:
        self.common_address = common_address
        self.wire_zone = ZoneInfo(wire_zone)
        self.answer_testfr = answer_testfr  # False: TESTFR act is ignored (a hung RTU)
        self.gi_negative = gi_negative  # True: interrogations get a negative ACT_CON
        self.gi_terminate = gi_terminate  # False: interrogations get no ACT_TERM
        self.k, self.w, self.t1_s, self.t2_s = k, w, t1_s, t2_s
        self.port = 0
        self.received: list[bytes] = []  # every APDU from the master, as received
        self.commands: list[ReceivedCommand] = []
        self.clock_syncs: list[Cp56Time] = []
        self.errors: list[str] = []  # protocol errors of the master, failed answers
        self.max_in_flight = 0  # most unacknowledged I-frames seen after a send
        self._points: dict[int, _Point] = {}
        self._scripts: dict[int, CommandScript] = {}
        self._cond = threading.Condition()
        self._link: Optional[_Link] = None
        self._awake = threading.Event()  # cleared while stalled
        self._awake.set()
        self._stopped = threading.Event()
        self._jobs: queue.Queue[Optional[Callable[[], None]]] = queue.Queue()
        self._listener: Optional[socket.socket] = None
        self._threads: list[threading.Thread] = []  # accept and responder
        self._link_threads: list[threading.Thread] = []

    # -- test API -------------------------------------------------------------------------------

    def start(self) -> "ScriptedRtu":
        """Listen on 127.0.0.1, a port the kernel picks (``self.port``)."""
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._threads = [self._spawn(self._accept_loop, "accept"), self._spawn(self._respond_loop, "respond")]
        return self

    def stop(self) -> None:
        """Close the listener and the connection, end every thread; again is a no-op."""
        with self._cond:
            if self._stopped.is_set():
                return
            self._stopped.set()
            self._end(self._link)
        self._awake.set()
        if self._listener is not None:
            _shutdown(self._listener)
        self._jobs.put(None)
        for thread in self._threads + self._link_threads:
            thread.join()
        if self._listener is not None:
            self._listener.close()

    def set_point(self, ioa: int, type_name: str, value: Any, quality: Iterable[str] = frozenset(),
                  time: Optional[float] = None) -> None:
        """Put a point in the table (interrogations answer it with its untagged type)."""
        self._store(ioa, type_name, value, quality, time)

    def spontaneous(self, ioa: int, type_name: str, value: Any, quality: Iterable[str] = frozenset(),
                    time: Optional[float] = None, cause: int = SPONTANEOUS) -> None:
        """Update the point and send it in one I-frame; a tagged type carries ``time`` (None: now).

        Waits for a started link and room in the k window, at most t1 (TimeoutError).
        """
        point = self._store(ioa, type_name, value, quality, time)
        kind = MONITOR_TYPES[type_name]
        self._send(None, asdu_header(kind.type_id, 1, cause, self.common_address) + self._object(ioa, point, type_name))

    def burst(self, events: Iterable[tuple[int, str, Any, Iterable[str], Optional[float]]]) -> None:
        """Send (ioa, type, value, quality, time) events in order, each in its I-frame, paced by the k window."""
        for ioa, type_name, value, quality, at in events:
            self.spontaneous(ioa, type_name, value, quality, at)

    def script_command(self, ioa: int, confirm: bool = True, terminate: bool = True, delay_s: float = 0.0,
                       then: Optional[Callable[[ReceivedCommand], None]] = None) -> None:
        """How to answer commands to ``ioa``: ACT_CON after ``delay_s`` (negative unless ``confirm``); for a
        confirmed execute ``then(command)`` (e.g. the return information), then ACT_TERM if ``terminate``."""
        with self._cond:
            self._scripts[ioa] = CommandScript(confirm, terminate, delay_s, then)

    def stall(self) -> None:
        """Stop reading and answering; the TCP connection stays open."""
        self._awake.clear()

    def resume(self) -> None:
        """Read and answer again after ``stall``."""
        self._awake.set()
        with self._cond:
            self._cond.notify_all()

    def drop(self) -> None:
        """Close the master's connection now (the master may reconnect)."""
        with self._cond:
            self._end(self._link)

    # -- point table ----------------------------------------------------------------------------

    def _store(self, ioa: int, type_name: str, value: Any, quality: Iterable[str], at: Optional[float]) -> _Point:
        if type_name not in MONITOR_TYPES:
            raise ValueError(f"unknown monitor type {type_name!r}, not one of {sorted(MONITOR_TYPES)}")
        kind = MONITOR_TYPES[type_name]
        if not 0 < ioa < 1 << 24:
            raise ValueError(f"IOA {ioa} is outside 1..16777215")
        if at is not None and not kind.tagged:
            raise ValueError(f"{type_name} carries no time tag")
        point = _Point(type_name, value, frozenset(quality), at)
        self._object(ioa, point, kind.untagged)  # ValueError now rather than in a reply
        with self._cond:
            self._points[ioa] = point
        return point

    def _object(self, ioa: int, point: _Point, type_name: str) -> bytes:
        """The information object of ``point`` as ``type_name`` (its own type or its untagged twin)."""
        kind = MONITOR_TYPES[type_name]
        unknown = point.quality - kind.flags.keys()
        if unknown:
            raise ValueError(f"{type_name} has no quality flags {sorted(unknown)} (only {sorted(kind.flags)})")
        try:
            element = kind.element(point.value, sum(kind.flags[flag] for flag in point.quality))
        except struct.error as exc:
            raise ValueError(f"{type_name} cannot carry {point.value!r}: {exc}") from None
        tag = encode_cp56(time.time() if point.time is None else point.time, self.wire_zone) if kind.tagged else b""
        return ioa.to_bytes(IOA_OCTETS, "little") + element + tag

    def _interrogation_asdus(self, counters: bool, cause: int) -> list[bytes]:
        """Every point (or every counter) with its untagged type, SQ = 0, as few ASDUs as fit in an APDU."""
        objects: dict[str, list[bytes]] = {}
        with self._cond:
            points = sorted(self._points.items(), key=lambda item: item[0])
        for ioa, point in points:
            untagged = MONITOR_TYPES[point.type_name].untagged
            if (untagged == "M_IT_NA_1") == counters:
                objects.setdefault(untagged, []).append(self._object(ioa, point, untagged))
        asdus = []
        for type_name, items in objects.items():
            per_asdu = min(MAX_OBJECTS, (MAX_ASDU - HEADER) // len(items[0]))
            for first in range(0, len(items), per_asdu):
                chunk = items[first:first + per_asdu]
                header = asdu_header(MONITOR_TYPES[type_name].type_id, len(chunk), cause, self.common_address)
                asdus.append(header + b"".join(chunk))
        return asdus

    # -- threads --------------------------------------------------------------------------------

    def _spawn(self, target: Callable[[], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=f"rtu-{name}-{self.port}", daemon=True)
        thread.start()
        return thread

    def _accept_loop(self) -> None:
        """Accept masters; a new connection replaces the old one, as an RTU does after a reconnect."""
        assert self._listener is not None
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:  # the listener was shut down by stop()
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(sock)
            with self._cond:
                if self._stopped.is_set():
                    sock.close()
                    return
                self._end(self._link)
                self._link = link
                self._link_threads = [t for t in self._link_threads if t.is_alive()]
                self._link_threads.append(self._spawn(lambda: self._serve(link), "link"))

    def _respond_loop(self) -> None:
        """Run the queued answers in order; a failed one is recorded and the next one runs."""
        while (job := self._jobs.get()) is not None:
            try:
                job()
            except Exception as exc:  # a lost link or a failing `then` of a test must not end the responder
                with self._cond:
                    self.errors.append(f"answer failed: {exc!r}")

    def _serve(self, link: _Link) -> None:
        try:
            while self._read(link):
                pass
        finally:
            with self._cond:
                self._end(link)
            link.sock.close()

    def _read(self, link: _Link) -> bool:
        """Wait for octets (or for t2 to expire), handle them; False when the link is over."""
        self._awake.wait()
        with self._cond:
            timeout = None if link.unacked_in == 0 else max(0.0, link.first_unacked_at + self.t2_s - time.monotonic())
        readable = select.select([link.sock], [], [], timeout)[0]
        self._awake.wait()
        if not readable:
            with self._cond:
                self._acknowledge(link)
                return link.open
        try:
            chunk = link.sock.recv(65536)
        except OSError:
            return False
        with self._cond:
            if not chunk or not link.open:
                return False
            link.buffer += chunk
            return self._handle_buffer(link)

    # -- reader thread, condition held ----------------------------------------------------------

    def _end(self, link: Optional[_Link]) -> None:
        if link is None:
            return
        link.open = False
        if self._link is link:
            self._link = None
        _shutdown(link.sock)
        self._cond.notify_all()

    def _write(self, link: _Link, frame: bytes) -> None:
        try:
            link.sock.sendall(frame)
        except OSError:
            self._end(link)

    def _protocol_error(self, link: _Link, why: str) -> bool:
        """Record the master's error and close the connection, as the standard asks; False."""
        self.errors.append(why)
        self._end(link)
        return False

    def _acknowledge(self, link: _Link) -> None:
        if link.unacked_in and link.open:
            self._write(link, s_frame(link.recv_seq))
            link.unacked_in = 0

    def _handle_buffer(self, link: _Link) -> bool:
        while len(link.buffer) >= 2:
            if link.buffer[0] != START or not 4 <= link.buffer[1] <= MAX_LENGTH:
                return self._protocol_error(link, f"not an APDU start: {bytes(link.buffer[:2]).hex()}")
            end = 2 + link.buffer[1]
            if len(link.buffer) < end:
                break
            apdu = bytes(link.buffer[:end])
            del link.buffer[:end]
            self.received.append(apdu)
            if not self._handle_apdu(link, apdu):
                return False
        return link.open

    def _handle_apdu(self, link: _Link, apdu: bytes) -> bool:
        if apdu[2] & 0x01 == 0:
            return self._on_i_frame(link, apdu)
        if apdu[2] & 0x03 == 0x01:
            return self._on_acknowledgement(link, _sequence(apdu, 4))
        return self._on_u_frame(link, apdu[2])

    def _on_acknowledgement(self, link: _Link, recv_seq: int) -> bool:
        if (recv_seq - link.acked) % SEQ_MODULO > link.in_flight():
            return self._protocol_error(link, f"N(R) {recv_seq} acknowledges unsent I-frames (V(S) {link.send_seq})")
        link.acked = recv_seq
        self._cond.notify_all()
        return True

    def _on_u_frame(self, link: _Link, function: int) -> bool:
        if function not in _U_ANSWERS:
            self.errors.append(f"unexpected U-frame 0x{function:02x}")
            return True
        if function == TESTFR_ACT and not self.answer_testfr:
            return True
        self._write(link, u_frame(_U_ANSWERS[function]))
        if function != TESTFR_ACT:
            link.started = function == STARTDT_ACT
            self._cond.notify_all()
        return link.open

    def _on_i_frame(self, link: _Link, apdu: bytes) -> bool:
        send_seq = _sequence(apdu, 2)
        if send_seq != link.recv_seq:
            return self._protocol_error(link, f"N(S) {send_seq} where {link.recv_seq} was due")
        if not self._on_acknowledgement(link, _sequence(apdu, 4)):
            return False
        link.recv_seq = (link.recv_seq + 1) % SEQ_MODULO
        if link.unacked_in == 0:
            link.first_unacked_at = time.monotonic()
        link.unacked_in += 1
        self._on_asdu(link, apdu[6:])
        if link.unacked_in >= self.w:
            self._acknowledge(link)
        return link.open

    def _on_asdu(self, link: _Link, octets: bytes) -> None:
        """Record what the master asked and queue the answer (the responder sends it)."""
        try:
            asdu = parse_asdu(octets)
            refusal = self._refusal(asdu)
            if asdu.common_address == BROADCAST:  # answered with this station's own address (101 clause 7.2.4)
                octets = octets[:4] + struct.pack("<H", self.common_address) + octets[6:]
            if refusal is not None:
                self._jobs.put(lambda: self._send(link, mirror(octets, refusal, True)))
            elif asdu.type_id in (C_IC_NA_1, C_CI_NA_1):
                self._jobs.put(lambda: self._interrogate(link, octets))
            elif asdu.type_id == C_CS_NA_1:
                self.clock_syncs.append(decode_cp56(asdu.objects[IOA_OCTETS:]))
                self._jobs.put(lambda: self._send(link, mirror(octets, ACT_CON, False)))
            else:
                command = decode_command(asdu)
                self.commands.append(command)
                self._jobs.put(lambda: self._command(link, octets, command))
        except ValueError as exc:
            self.errors.append(f"malformed ASDU {octets.hex()}: {exc}")

    def _refusal(self, asdu: Asdu) -> Optional[int]:
        """The cause of a negative confirmation, or None when the request is one this RTU handles."""
        if asdu.type_id not in COMMAND_TYPES and asdu.type_id not in (C_IC_NA_1, C_CI_NA_1, C_CS_NA_1):
            return UNKNOWN_TYPE
        if asdu.cause != ACTIVATION:
            return UNKNOWN_CAUSE
        if asdu.common_address not in (self.common_address, BROADCAST):
            return UNKNOWN_CA
        return None

    # -- responder thread -----------------------------------------------------------------------

    def _ready(self, link: Optional[_Link]) -> bool:
        target = self._link if link is None else link
        if self._stopped.is_set() or (target is not None and not target.open):
            return True
        return target is not None and target.started and self._awake.is_set() and target.in_flight() < self.k

    def _send(self, link: Optional[_Link], asdu: bytes) -> None:
        """Send ``asdu`` in an I-frame on ``link`` (None: the current one) once STARTDT and the k window allow."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._ready(link), self.t1_s):
                raise TimeoutError(f"no started link with room in the k window within t1 = {self.t1_s} s")
            target = self._link if link is None else link
            if target is None or not target.open:
                raise ConnectionError("the master's connection is closed")
            self._write(target, i_frame(asdu, target.send_seq, target.recv_seq))
            if not target.open:
                raise ConnectionError("the master's connection broke while sending")
            target.send_seq = (target.send_seq + 1) % SEQ_MODULO
            target.unacked_in = 0
            self.max_in_flight = max(self.max_in_flight, target.in_flight())

    def _interrogate(self, link: _Link, octets: bytes) -> None:
        """ACT_CON, the points (COT 20) or counters (COT 37) with their untagged types, ACT_TERM."""
        counters = octets[0] == C_CI_NA_1
        negative = self.gi_negative or (not counters and octets[-1] != QOI_STATION)
        self._send(link, mirror(octets, ACT_CON, negative))
        if negative:
            return
        for asdu in self._interrogation_asdus(counters, COUNTER_GENERAL if counters else INTERROGATED):
            self._send(link, asdu)
        if self.gi_terminate:
            self._send(link, mirror(octets, ACT_TERM, False))

    def _command(self, link: _Link, octets: bytes, command: ReceivedCommand) -> None:
        """Answer a command as scripted for its IOA (no script: negative ACT_CON, unknown IOA)."""
        with self._cond:
            script = self._scripts.get(command.ioa)
        if script is None:
            self._send(link, mirror(octets, UNKNOWN_IOA, True))
            return
        self._stopped.wait(script.delay_s)
        self._send(link, mirror(octets, ACT_CON, not script.confirm))
        if not script.confirm or command.select:
            return
        if script.then is not None:
            script.then(command)
        if script.terminate:
            self._send(link, mirror(octets, ACT_TERM, False))
