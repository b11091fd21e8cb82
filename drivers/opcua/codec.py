"""Node values <-> engineering values (pure): scale and offset for numbers, the node's type for writes.

Nothing a server sends may raise out of the code that reads it, nor pass as a good value when
it is not one: ``decoded`` takes the value as it came (a ``Reading``) and refuses (``BadValue``, the point
goes IV with its last value kept) an empty value under a non-Bad status, an array where the
profile names a scalar, a type of another family than the profile's (a String on a Float
point, a number on a Boolean one: ``bool("false")`` is True), NaN and infinity. Numbers of
another width are taken (an Int32 node behind a profile's Int16 still means its number).
"""

import math
from typing import Any

from asyncua import ua
from asyncua.ua.uatypes import FILETIME_EPOCH_AS_UTC_DATETIME, MAX_FILETIME_EPOCH_AS_UTC_DATETIME

from drivers.opcua.profile import INTEGER_BITS, OpcUaPoint, integer_bounds
from drivers.opcua.publishcodec import ARRAY, NULL, Reading
from gateway.model import Value

NUMBERS = frozenset(range(2, 12))  # variant type ids SByte (2) ... Double (11)
FAMILIES = {"Boolean": frozenset({1}), "String": frozenset({12})}
FLOATS = frozenset({10, 11})
NO_TIME = (FILETIME_EPOCH_AS_UTC_DATETIME, MAX_FILETIME_EPOCH_AS_UTC_DATETIME)  # DateTime's null and its end


class EncodeError(ValueError):
    """A value the node's data type cannot carry."""


class BadValue(ValueError):
    """A value from the server the point cannot take; ``reason`` is the short cause counted."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def decoded(point: OpcUaPoint, reading: Reading) -> Value:
    """The engineering value of a Reading that came with a non-Bad status; BadValue when the point
    cannot take it (see the module docstring)."""
    kind, value = reading[0], reading[1]
    if kind == NULL or value is None:
        raise BadValue("empty", "no value under a status that promises one")
    if kind == ARRAY:
        raise BadValue("array", f"an array where the profile names a {point.data_type} scalar")
    if kind not in FAMILIES.get(point.data_type, NUMBERS):
        raise BadValue("type", f"{_type_name(kind)} {_shown(value)} where the profile says {point.data_type}")
    if kind in FLOATS and not math.isfinite(value):
        raise BadValue("not finite", f"{value}, not a measurement")
    return to_engineering(point, value)


def reading_of(value: ua.DataValue) -> Reading:
    """A DataValue asyncua decoded (reads, republished or unusual messages) as a Reading."""
    variant = value.Value
    kind = 0 if variant is None else ARRAY if variant.is_array or isinstance(variant.Value, (list, tuple)) \
        else variant.VariantType.value
    status = value.StatusCode.value if value.StatusCode is not None else 0
    return kind, None if variant is None else variant.Value, status, source_seconds(value)


def _type_name(kind: int) -> str:
    try:
        return ua.VariantType(kind).name
    except ValueError:
        return f"type {kind}"


def source_seconds(value: ua.DataValue) -> float | None:
    """The value's time: the source's, the server's if the source gave none; DateTime's null
    (1601) and its end (9999) are no time at all."""
    for stamp in (value.SourceTimestamp, value.ServerTimestamp):
        if stamp is not None and stamp not in NO_TIME:
            return stamp.timestamp()
    return None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def to_engineering(point: OpcUaPoint, raw: Any) -> Value:
    """The engineering value of a node's value: raw x scale + offset for numbers."""
    if raw is None:
        return None
    if point.data_type == "Boolean":
        return bool(raw)
    if point.data_type == "String":
        return str(raw)
    value = float(raw) * point.scale + point.offset
    return int(round(value)) if point.value_kind() == "int" else value


def to_raw(point: OpcUaPoint, value: Any, data_type: str | None = None) -> Any:
    """What to write to the node (or pass to its method, in the argument's ``data_type``) for an
    engineering value; EncodeError when the type cannot carry it."""
    data_type = data_type or point.data_type
    if data_type == "Boolean":
        return bool(value)
    if data_type == "String":
        return str(value)
    raw = (float(value) - point.offset) / point.scale
    if not math.isfinite(raw):
        raise EncodeError(f"{point.id}: {value} is not a finite number")
    if data_type not in INTEGER_BITS:
        return raw
    low, high = integer_bounds(data_type)
    whole = int(round(raw))
    if not low <= whole <= high:
        raise EncodeError(f"{point.id}: {value} is {whole} raw, outside {data_type} ({low}..{high})")
    return whole
