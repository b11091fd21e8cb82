"""Samples to c104 information objects, per IEC 104 type.

Kept apart from the server so that the encoding rules (normalized and scaled ranges, overflow,
counters, double points) are plain functions with their own tests.
"""

import datetime
import math
from typing import Callable

import c104

from gateway.config.iec104 import TIME_TAGGED, PointMap
from gateway.model import Quality, Value

INT16_MIN, INT16_MAX = -32768, 32767
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
_DOUBLE = {0: c104.Double.INTERMEDIATE, 1: c104.Double.OFF, 2: c104.Double.ON, 3: c104.Double.INDETERMINATE}
_COUNTER_IV = int(c104.BinaryCounterQuality.Invalid.value)


def _clip(value: float, low: float, high: float) -> tuple[float, int]:
    if value < low:
        return low, int(Quality.OV)
    if value > high:
        return high, int(Quality.OV)
    return value, 0


def information(mapping: PointMap, value: Value, quality: int, recorded_at: datetime.datetime | None) -> c104.Information:
    """The c104 information object carrying ``value`` with ``quality`` for ``mapping.type``.

    ``value`` None (IV without a value) is sent as zero with its quality. ``recorded_at`` is
    used only by time-tagged types.
    """
    stamp = recorded_at if mapping.type in TIME_TAGGED else None
    return _BUILDERS[mapping.type[:7]](mapping, value, quality, stamp)


def _single(mapping: PointMap, value: Value, quality: int, at: datetime.datetime | None) -> c104.Information:
    return c104.SingleInfo(on=bool(value), quality=c104.Quality(quality), recorded_at=at)


def _double(mapping: PointMap, value: Value, quality: int, at: datetime.datetime | None) -> c104.Information:
    state = (2 if value else 1) if isinstance(value, bool) else int(value or 0)
    return c104.DoubleInfo(state=_DOUBLE.get(state, c104.Double.INDETERMINATE), quality=c104.Quality(quality),
                           recorded_at=at)


def _number(value: Value) -> tuple[float, int]:
    number = float(value or 0)
    return (0.0, int(Quality.IV)) if not math.isfinite(number) else (number, 0)


def _normalized(mapping: PointMap, value: Value, quality: int, at: datetime.datetime | None) -> c104.Information:
    number, bad = _number(value)
    ratio, over = _clip(number / (mapping.full_scale or 1.0), -1.0, 32767 / 32768)
    return c104.NormalizedInfo(actual=c104.NormalizedFloat(ratio), quality=c104.Quality(quality | bad | over),
                               recorded_at=at)


def _scaled(mapping: PointMap, value: Value, quality: int, at: datetime.datetime | None) -> c104.Information:
    number, bad = _number(value)
    scaled, over = _clip(round(number * mapping.multiplier), INT16_MIN, INT16_MAX)
    return c104.ScaledInfo(actual=c104.Int16(int(scaled)), quality=c104.Quality(quality | bad | over), recorded_at=at)


def _short(mapping: PointMap, value: Value, quality: int, at: datetime.datetime | None) -> c104.Information:
    number, bad = _number(value)
    return c104.ShortInfo(actual=number, quality=c104.Quality(quality | bad), recorded_at=at)


def _counter(mapping: PointMap, value: Value, quality: int, at: datetime.datetime | None) -> c104.Information:
    number, bad = _number(value)
    counter = (int(round(number)) - INT32_MIN) % 2**32 + INT32_MIN  # integrated totals wrap like the meter
    invalid = (quality | bad) & int(Quality.IV)
    return c104.BinaryCounterInfo(counter=counter, sequence=c104.UInt5(0),
                                  quality=c104.BinaryCounterQuality(_COUNTER_IV if invalid else 0), recorded_at=at)


_BUILDERS: dict[str, Callable[..., c104.Information]] = {
    "M_SP_NA": _single, "M_SP_TB": _single, "M_DP_NA": _double, "M_DP_TB": _double,
    "M_ME_NA": _normalized, "M_ME_TD": _normalized, "M_ME_NB": _scaled, "M_ME_TE": _scaled,
    "M_ME_NC": _short, "M_ME_TF": _short, "M_IT_NA": _counter, "M_IT_TB": _counter,
}
