"""Samples to IEC 104 information objects and ASDUs, on hat-drivers' encoder.

Kept apart from the outstation so that the encoding rules (normalized and scaled ranges,
overflow, counters with their multiplier, double points, CP56Time2a in the wire zone, packing
many objects of one type into one ASDU) are plain functions with their own tests. Why
hat-drivers and not c104 for the outstation: see ``outstation.py``.
"""

import datetime
import math
from typing import Any, Iterable, NamedTuple, Sequence

from hat.drivers.iec60870.encodings import iec104 as enc

from gateway.iec104.wiretime import WireClock
from gateway.model import Quality, Value
from gateway.northbound.iec104.section import PointMap

INT16_MIN, INT16_MAX = -32768, 32767
INT32_MIN = -(2**31)
MAX_ASDU = 249  # octets of ASDU in one APDU (253 - 4 control octets)
_HEADER = 6  # type, VSQ, COT (2), common address (2)
_IOA = 3
_CP56 = 7
_ELEMENT_SIZE = {"M_SP": 1, "M_DP": 1, "M_ME_NA": 3, "M_ME_TD": 3, "M_ME_NB": 3, "M_ME_TE": 3,
                 "M_ME_NC": 5, "M_ME_TF": 5, "M_IT": 5}
_DOUBLE = {0: enc.DoubleValue.INTERMEDIATE, 1: enc.DoubleValue.OFF, 2: enc.DoubleValue.ON, 3: enc.DoubleValue.FAULT}


class InfoObject(NamedTuple):
    """One information object ready to pack: address, element, optional time tag."""

    ioa: int
    element: Any
    time: enc.Time | None


def cause(cot: int, negative: bool = False, test: bool = False, originator: int = 0) -> enc.Cause:
    """The COT field; a number outside hat's enumeration is passed as the number."""
    try:
        kind: Any = enc.CauseType(cot)
    except ValueError:
        kind = cot
    return enc.Cause(type=kind, is_negative_confirm=negative, is_test=test, originator_address=originator)


def cot_of(asdu: enc.ASDU) -> int:
    """The cause of transmission of a decoded ASDU as a number (hat gives an enum, or an int outside it)."""
    kind = asdu.cause.type
    return kind.value if hasattr(kind, "value") else int(kind)


def cp56(clock: WireClock, ts: float, invalid: bool = False) -> enc.Time:
    """CP56Time2a of ``ts`` as wall time in the wire zone (raises ValueError outside 2000-2099)."""
    wall = clock.wall_time(ts)
    return enc.Time(size=enc.TimeSize.SEVEN, milliseconds=wall.second * 1000 + wall.microsecond // 1000,
                    invalid=invalid, substituted=False, minutes=wall.minute, summer_time=False, hours=wall.hour,
                    day_of_week=wall.isoweekday(), day_of_month=wall.day, months=wall.month, years=wall.year - 2000)


def from_cp56(clock: WireClock, tag: enc.Time) -> float:
    """POSIX seconds meant by a CP56Time2a in the wire zone; ValueError for an invalid or absurd tag."""
    if tag.invalid:
        raise ValueError("the time tag has its IV (invalid) bit set")
    try:
        wall = datetime.datetime(2000 + tag.years, tag.months, tag.day_of_month, tag.hours, tag.minutes,
                                 tag.milliseconds // 1000, (tag.milliseconds % 1000) * 1000)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the time tag is not a date ({_fields(tag)}): {exc}") from None
    return clock.from_wall(wall)


def _fields(tag: enc.Time) -> str:
    return (f"year {tag.years}, month {tag.months}, day {tag.day_of_month}, {tag.hours}:{tag.minutes}:"
            f"{tag.milliseconds} ms")


def element(type_name: str, mapping: PointMap, value: Value, quality: int) -> Any:
    """The information element of ``type_name`` carrying ``value`` with ``quality``.

    ``value`` None (IV without a value) goes out as zero with its quality.
    """
    family = type_name[:4]
    if family == "M_SP":
        return enc.IoElement_M_SP_NA(_single(value), _indication(quality))
    if family == "M_DP":
        return enc.IoElement_M_DP_NA(_double(value), _indication(quality))
    if family == "M_IT":
        return enc.IoElement_M_IT_NA(*_counter(value, quality, mapping.multiplier))
    number, bad = _number(value)
    if type_name in ("M_ME_NA_1", "M_ME_TD_1"):
        ratio, over = _clip(number / (mapping.full_scale or 1.0), -1.0, 32767 / 32768)
        return enc.IoElement_M_ME_NA(enc.NormalizedValue(ratio), _measurement(quality | bad | over))
    if type_name in ("M_ME_NB_1", "M_ME_TE_1"):
        scaled, over = _clip(round(number * mapping.multiplier), INT16_MIN, INT16_MAX)
        return enc.IoElement_M_ME_NB(enc.ScaledValue(int(scaled)), _measurement(quality | bad | over))
    return enc.IoElement_M_ME_NC(enc.FloatingValue(number), _measurement(quality | bad))


def _single(value: Value) -> enc.SingleValue:
    return enc.SingleValue.ON if bool(value) else enc.SingleValue.OFF


def _double(value: Value) -> enc.DoubleValue:
    state = (2 if value else 1) if isinstance(value, bool) else int(value or 0)
    return _DOUBLE.get(state, enc.DoubleValue.FAULT)


def _indication(quality: int) -> enc.IndicationQuality:
    return enc.IndicationQuality(invalid=bool(quality & Quality.IV), not_topical=bool(quality & Quality.NT),
                                 substituted=bool(quality & Quality.SB), blocked=bool(quality & Quality.BL))


def _measurement(quality: int) -> enc.MeasurementQuality:
    return enc.MeasurementQuality(invalid=bool(quality & Quality.IV), not_topical=bool(quality & Quality.NT),
                                  substituted=bool(quality & Quality.SB), blocked=bool(quality & Quality.BL),
                                  overflow=bool(quality & Quality.OV))


def _number(value: Value) -> tuple[float, int]:
    try:
        number = float(value or 0)
    except (TypeError, ValueError):
        return 0.0, int(Quality.IV)
    return (0.0, int(Quality.IV)) if not math.isfinite(number) else (number, 0)


def _clip(value: float, low: float, high: float) -> tuple[float, int]:
    if value < low:
        return low, int(Quality.OV)
    if value > high:
        return high, int(Quality.OV)
    return value, 0


def _counter(value: Value, quality: int, multiplier: float) -> tuple[enc.BinaryCounterValue, enc.CounterQuality]:
    """Integrated total: ``value x multiplier`` as a 32-bit count that wraps like a meter (CY set
    when it wrapped), IV when the source is invalid."""
    number, bad = _number(value)
    count = round(number * multiplier)
    wrapped = (count - INT32_MIN) % 2**32 + INT32_MIN
    invalid = bool((quality | bad) & Quality.IV)
    return (enc.BinaryCounterValue(wrapped),
            enc.CounterQuality(invalid=invalid, adjusted=False, overflow=wrapped != count, sequence=0))


def objects_per_asdu(type_name: str, tagged: bool) -> int:
    """How many objects of ``type_name`` one ASDU holds (249 octets, at most 127 objects)."""
    per_object = _IOA + _ELEMENT_SIZE.get(type_name[:7], _ELEMENT_SIZE.get(type_name[:4], 5))
    return min(127, (MAX_ASDU - _HEADER) // (per_object + (_CP56 if tagged else 0)))


def pack(type_name: str, cot: enc.Cause, common_address: int, objects: Sequence[InfoObject]) -> list[enc.ASDU]:
    """ASDUs of one type carrying ``objects`` in order, each within the 249-octet ASDU limit."""
    limit = objects_per_asdu(type_name, bool(objects) and objects[0].time is not None)
    asdu_type = enc.AsduType[type_name[:7]]
    return [enc.ASDU(type=asdu_type, cause=cot, address=common_address,
                     ios=[enc.IO(address=o.ioa, elements=[o.element], time=o.time) for o in objects[i:i + limit]])
            for i in range(0, len(objects), limit)]


def runs(objects: Iterable[tuple[str, InfoObject]]) -> list[tuple[str, list[InfoObject]]]:
    """Consecutive objects of one type grouped, order kept (events must leave in order)."""
    grouped: list[tuple[str, list[InfoObject]]] = []
    for type_name, obj in objects:
        if grouped and grouped[-1][0] == type_name:
            grouped[-1][1].append(obj)
        else:
            grouped.append((type_name, [obj]))
    return grouped
