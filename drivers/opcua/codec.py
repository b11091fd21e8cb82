"""Node values <-> engineering values (pure): scale and offset for numbers, the node's type for writes."""

import math
from typing import Any

from drivers.opcua.profile import INTEGER_BITS, OpcUaPoint, integer_bounds
from gateway.model import Value


class EncodeError(ValueError):
    """A value the node's data type cannot carry."""


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


def to_raw(point: OpcUaPoint, value: Any) -> Any:
    """What to write to the node for an engineering value; EncodeError when its type cannot carry it."""
    if point.data_type == "Boolean":
        return bool(value)
    if point.data_type == "String":
        return str(value)
    raw = (float(value) - point.offset) / point.scale
    if not math.isfinite(raw):
        raise EncodeError(f"{point.id}: {value} is not a finite number")
    if point.data_type not in INTEGER_BITS:
        return raw
    low, high = integer_bounds(point.data_type)
    whole = int(round(raw))
    if not low <= whole <= high:
        raise EncodeError(f"{point.id}: {value} is {whole} raw, outside {point.data_type} ({low}..{high})")
    return whole
