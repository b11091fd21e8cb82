"""One simulated OPC UA device: its value engine, the raw values its nodes serve, and its faults.

The engine moves engineering values; a node carries ``(engineering - offset) / scale`` in the
point's OPC UA data type, as a real device exposing scaled integers does. This module turns one
into the other and keeps what each node currently serves, independent of any running server, so
a server restart rebuilds its nodes from here and ``value()`` answers while it is down.
"""

import logging
import math
import struct
from datetime import datetime
from typing import Mapping

from asyncua import ua

from drivers.opcua.profile import INTEGER_BITS, OpcUaPoint, OpcUaProfile
from gateway.model import Device, Value
from gateway.simulation.simvalues import ValueEngine

log = logging.getLogger(__name__)

Raw = bool | int | float | str
FLOAT32_MAX = 3.4028234663852886e38


def variant_type(point: OpcUaPoint) -> ua.VariantType:
    """The variant type of the point's node (the profile's names are OPC UA's)."""
    return ua.VariantType[point.data_type]


def _integer(point: OpcUaPoint, value: float | int) -> int:
    if isinstance(value, int) and point.scale == 1 and point.offset == 0:
        number = value  # exact, even beyond a float's 53 bits (Int64, UInt64)
    else:
        scaled = (float(value) - point.offset) / point.scale
        if not math.isfinite(scaled):
            raise ValueError(f"{point.id}: {value!r} has no {point.data_type} encoding")
        number = round(scaled)
    bits, signed = INTEGER_BITS[point.data_type]
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    if not low <= number <= high:
        raise ValueError(f"{point.id}: {value!r} does not fit the node's {point.data_type} "
                         f"(scale {point.scale}, offset {point.offset})")
    return number


def to_raw(point: OpcUaPoint, value: Value) -> Raw:
    """The value the node carries for the engineering ``value``; ValueError naming the point
    when the node's type cannot carry it (a string for a number, beyond an integer's range)."""
    if point.data_type == "String":
        if value is None:
            raise ValueError(f"{point.id}: a String node needs a value")
        return str(value)
    if not isinstance(value, int | float):
        raise ValueError(f"{point.id}: {value!r} is not a number for a {point.data_type} node")
    if point.data_type == "Boolean":
        return bool(value)
    if point.data_type in INTEGER_BITS:
        return _integer(point, value)
    raw = (float(value) - point.offset) / point.scale
    if point.data_type == "Float":
        if math.isfinite(raw) and abs(raw) > FLOAT32_MAX:
            raise ValueError(f"{point.id}: {value!r} overflows a Float")
        return struct.unpack("<f", struct.pack("<f", raw))[0]  # what a client decodes
    return raw


def to_engineering(point: OpcUaPoint, raw: Raw) -> Value:
    """The engineering value a client computes from the node's ``raw`` value."""
    if point.data_type in ("Boolean", "String"):
        return raw
    if point.value_kind() == "int":
        return int(raw)
    return float(raw) * point.scale + point.offset


class SimulatedDevice:
    """Everything the simulator keeps about one device, whichever server serves it."""

    def __init__(self, device: Device, seed: int) -> None:
        """Raises ValueError when a point's starting value does not fit its node's type."""
        profile = device.profile
        if not isinstance(profile, OpcUaProfile):
            raise ValueError(f"{device.name}: not an OPC UA profile ({profile.protocol})")
        self.name = device.name
        self.profile = profile
        self.points: dict[str, OpcUaPoint] = {point.id: point for point in profile.points}
        strings: dict[str, Value] = {point.id: "" for point in profile.points
                                     if point.data_type == "String" and point.sim is None}
        self.engine = ValueEngine(profile, seed, strings)
        self.raw: dict[str, Raw] = {pid: to_raw(self.points[pid], value)
                                    for pid, value in self.engine.values().items()}
        self.status: dict[str, int] = {}  # point -> StatusCode served instead of Good
        self.removed: set[str] = set()  # points whose node the remove_node fault deleted
        self._refused: set[str] = set()  # points whose engine value does not fit, logged once

    def served(self, point_id: str) -> Value:
        """The engineering value the point's node serves now."""
        return to_engineering(self.points[point_id], self.raw[point_id])

    def stage(self, values: Mapping[str, Value]) -> list[str]:
        """Take the engine's new ``values``; the points whose node must change.

        A value the node cannot carry keeps the last one: a tick cannot refuse, so it logs once.
        """
        changed: list[str] = []
        for point_id, value in values.items():
            try:
                raw = to_raw(self.points[point_id], value)
            except ValueError as exc:
                if point_id not in self._refused:
                    log.warning("simulated %s: %s; serving the last value", self.name, exc)
                    self._refused.add(point_id)
                continue
            self._refused.discard(point_id)
            if raw != self.raw[point_id]:
                self.raw[point_id] = raw
                changed.append(point_id)
        return changed

    def serve(self, point_id: str, value: Value) -> None:
        """Serve ``value`` from now on (set_value); ValueError, changing nothing, if it does not fit."""
        raw = to_raw(self.points[point_id], value)
        self.engine.set(point_id, value)
        self.raw[point_id] = raw

    def accept(self, point_id: str, raw: Raw) -> None:
        """A client wrote ``raw`` to the point's node: the engine continues from it (followers follow)."""
        self.raw[point_id] = raw
        self.engine.set(point_id, to_engineering(self.points[point_id], raw))

    def datavalue(self, point_id: str, when: datetime) -> ua.DataValue:
        """What the node holds: the raw value, the point's status (Good unless faulted), ``when``."""
        variant = ua.Variant(self.raw[point_id], variant_type(self.points[point_id]))
        return ua.DataValue(variant, StatusCode=ua.StatusCode(self.status.get(point_id, ua.StatusCodes.Good)),
                            SourceTimestamp=when, ServerTimestamp=when)
