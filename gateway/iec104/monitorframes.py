"""Monitor-direction information objects from the octets of an I-frame, for the dispatch-test master.

Why not c104's own receive path: c104 2.2.1 keeps one type per IOA, refuses an object arriving
at a known IOA with another type (``MISMATCHED_TYPE_ID``) and then drops the REST of that ASDU
(measured: a GI answer of three M_SP_NA_1 objects whose second was first seen as M_SP_TB_1
reached Python as one object). A correct outstation sends exactly that: the untagged twin in
interrogation answers, the tagged type spontaneously (``wiretable``). So the master records what
the frames say, decoded here from the octet layout of IEC 60870-5-104 (APCI, 2-octet cause with
originator, 2-octet common address, 3-octet IOA) and IEC 60870-5-101 section 7.3 (elements),
sharing no code with c104 or with hat-drivers (which encodes the outstation's frames).

Only the monitored types a point table can hold are decoded; other ASDUs (confirmations,
end of initialisation) give no objects. A frame that breaks the layout raises ``FrameError``.
"""

import datetime
import struct
from dataclasses import dataclass
from typing import Any, Callable

START = 0x68
_APCI = 6
_HEADER = 6  # type, VSQ, cause, originator, common address (2)
_CP56 = 7
CAUSES = {1: "PERIODIC", 2: "BACKGROUND_SCAN", 3: "SPONTANEOUS", 4: "INITIALIZED", 5: "REQUEST",
          11: "RETURN_INFO_REMOTE", 12: "RETURN_INFO_LOCAL", 20: "INTERROGATED_BY_STATION",
          37: "REQUESTED_BY_GENERAL_COUNTER"}
CAUSES |= {20 + n: f"INTERROGATED_BY_GROUP_{n}" for n in range(1, 17)}
CAUSES |= {37 + n: f"REQUESTED_BY_GROUP_{n}_COUNTER" for n in range(1, 5)}
_INDICATION = {0x10: "BL", 0x20: "SB", 0x40: "NT", 0x80: "IV"}
_MEASUREMENT = {0x01: "OV", **_INDICATION}
_COUNTER = {0x20: "CY", 0x40: "CA", 0x80: "IV"}


class FrameError(ValueError):
    """The octets do not follow the standard's layout."""


@dataclass(frozen=True)
class MonitorObject:
    """One information object as sent: type, cause, address, value, quality flags, time tag."""

    common_address: int
    ioa: int
    type: str
    cot: str
    value: Any
    quality: frozenset[str]
    recorded_at: datetime.datetime | None  # the CP56Time2a as wall time (naive), or None


def _flags(octet: int, names: dict[int, str]) -> frozenset[str]:
    return frozenset(name for bit, name in names.items() if octet & bit)


def _single(b: bytes) -> tuple[Any, frozenset[str]]:
    return bool(b[0] & 0x01), _flags(b[0], _INDICATION)


def _double(b: bytes) -> tuple[Any, frozenset[str]]:
    return b[0] & 0x03, _flags(b[0], _INDICATION)


def _normalized(b: bytes) -> tuple[Any, frozenset[str]]:
    return struct.unpack_from("<h", b)[0] / 32768, _flags(b[2], _MEASUREMENT)


def _scaled(b: bytes) -> tuple[Any, frozenset[str]]:
    return struct.unpack_from("<h", b)[0], _flags(b[2], _MEASUREMENT)


def _float(b: bytes) -> tuple[Any, frozenset[str]]:
    return struct.unpack_from("<f", b)[0], _flags(b[4], _MEASUREMENT)


def _counter(b: bytes) -> tuple[Any, frozenset[str]]:
    return struct.unpack_from("<i", b)[0], _flags(b[4], _COUNTER)


# type id -> (name, element octets without the time tag, decoder, time-tagged)
ELEMENTS: dict[int, tuple[str, int, Callable[[bytes], tuple[Any, frozenset[str]]], bool]] = {
    1: ("M_SP_NA_1", 1, _single, False), 30: ("M_SP_TB_1", 1, _single, True),
    3: ("M_DP_NA_1", 1, _double, False), 31: ("M_DP_TB_1", 1, _double, True),
    9: ("M_ME_NA_1", 3, _normalized, False), 34: ("M_ME_TD_1", 3, _normalized, True),
    11: ("M_ME_NB_1", 3, _scaled, False), 35: ("M_ME_TE_1", 3, _scaled, True),
    13: ("M_ME_NC_1", 5, _float, False), 36: ("M_ME_TF_1", 5, _float, True),
    15: ("M_IT_NA_1", 5, _counter, False), 37: ("M_IT_TB_1", 5, _counter, True),
}


def cp56(b: bytes) -> datetime.datetime | None:
    """CP56Time2a as naive wall time (what c104 calls ``recorded_at``); None when it is no date."""
    try:
        return datetime.datetime(2000 + (b[6] & 0x7F), b[5] & 0x0F, b[4] & 0x1F, b[3] & 0x1F, b[2] & 0x3F,
                                 (b[0] | b[1] << 8) // 1000, (b[0] | b[1] << 8) % 1000 * 1000)
    except ValueError:
        return None


def monitor_objects(apdu: bytes) -> list[MonitorObject]:
    """The monitored information objects of one APDU (none for other frames); FrameError if malformed."""
    if len(apdu) < 2 or apdu[0] != START or apdu[1] != len(apdu) - 2:
        raise FrameError(f"not an APDU: start {apdu[:1].hex()}, length octet vs {len(apdu)} octets")
    if len(apdu) < _APCI + _HEADER or apdu[2] & 0x01:  # S- and U-frames carry no ASDU
        return []
    asdu = apdu[_APCI:]
    element = ELEMENTS.get(asdu[0])
    if element is None:
        return []
    name, size, decode, tagged = element
    count, sequence = asdu[1] & 0x7F, bool(asdu[1] & 0x80)
    cause, common_address = CAUSES.get(asdu[2] & 0x3F, f"COT {asdu[2] & 0x3F}"), asdu[4] | asdu[5] << 8
    step = size + (_CP56 if tagged else 0)
    expected = _HEADER + (3 + count * step if sequence else count * (3 + step))
    if count == 0 or len(asdu) != expected:
        raise FrameError(f"{name}: {count} object(s) need {expected} octets of ASDU, the frame has {len(asdu)}")
    objects, ioa, at = [], 0, _HEADER
    for index in range(count):
        if not sequence or index == 0:
            ioa, at = asdu[at] | asdu[at + 1] << 8 | asdu[at + 2] << 16, at + 3
        else:
            ioa += 1
        value, quality = decode(asdu[at:at + size])
        tag = cp56(asdu[at + size:at + step]) if tagged else None
        objects.append(MonitorObject(common_address, ioa, name, cause, value, quality, tag))
        at += step
    return objects
