"""A point's engineering value <-> the raw value of its information object or command (pure).

One place for the scaling the driver, its commands and the simulator share: raw x scale +
offset one way, (value - offset) / scale the other, and the ranges a normalized value
(-1 .. 1 - 2^-15) and a scaled value (int16) can carry (IEC 60870-5-101 7.2.6.6, 7.2.6.7).
"""

from drivers.iec104.profile import Iec104Point
from gateway.model import Value

NORMALIZED_MAX = 32767 / 32768


def to_engineering(point: Iec104Point, raw: Value) -> Value:
    """A raw value as the point's engineering value; booleans, double-point states and unscaled
    points as they are."""
    if isinstance(raw, bool) or point.type.startswith("M_DP") or (point.scale == 1 and point.offset == 0):
        return raw
    return float(raw) * point.scale + point.offset  # type: ignore[arg-type]


def to_raw(point: Iec104Point, value: Value) -> float:
    """An engineering value as the raw number of the point's scaling."""
    return (float(value) - point.offset) / point.scale  # type: ignore[arg-type]


def normalized(point: Iec104Point, value: Value) -> float:
    """The normalized raw value of ``value``; ValueError outside -1 .. 1 - 2^-15."""
    raw = to_raw(point, value)
    if not -1.0 <= raw <= NORMALIZED_MAX:
        raise ValueError(f"{point.id}: {value} is {raw:g} normalized, outside -1..{NORMALIZED_MAX:.5f}")
    return raw


def scaled(point: Iec104Point, value: Value) -> int:
    """The scaled (int16) raw value of ``value``; ValueError outside -32768..32767."""
    raw = round(to_raw(point, value))
    if not -32768 <= raw <= 32767:
        raise ValueError(f"{point.id}: {value} is {raw} scaled, outside -32768..32767")
    return raw
