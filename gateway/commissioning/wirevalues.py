"""Engineering values as the table's IEC 104 types carry them (the outstation's contract, written
again from the standard so the dispatch test shares no code with the outstation it checks), and
as the reports print them."""

import math
from typing import Any

from gateway.northbound.iec104.section import PointMap

DOUBLE_NAMES = {0: "INTERMEDIATE", 1: "OFF", 2: "ON", 3: "INDETERMINATE"}
NORMALIZED_MAX = 32767 / 32768


def wire_value(type_name: str, mapping: PointMap | None, value: Any) -> Any:
    """The value as ``type_name`` carries it (the outstation's contract); None if it cannot."""
    family = type_name[:4]
    if value is None or isinstance(value, str):
        return None
    if family == "M_SP":
        return bool(value)
    if family == "M_DP":
        return (2 if value else 1) if isinstance(value, bool) else int(value)
    number = float(value)
    if not math.isfinite(number):
        return None
    if type_name in ("M_ME_NA_1", "M_ME_TD_1"):
        return min(max(number / full_scale(mapping), -1.0), NORMALIZED_MAX)
    if type_name in ("M_ME_NB_1", "M_ME_TE_1"):
        return min(max(round(number * multiplier(mapping)), -32768), 32767)
    if family == "M_IT":
        return round(number * multiplier(mapping))
    return number


def full_scale(mapping: PointMap | None) -> float:
    return mapping.full_scale if mapping is not None and mapping.full_scale else 1.0


def multiplier(mapping: PointMap | None) -> float:
    return mapping.multiplier if mapping is not None else 1.0


def wire_scale(type_name: str, mapping: PointMap | None) -> float:
    """How much one engineering unit is on the wire (to express a deadband in wire units)."""
    if type_name in ("M_ME_NA_1", "M_ME_TD_1"):
        return 1.0 / full_scale(mapping)
    if type_name in ("M_ME_NB_1", "M_ME_TE_1"):
        return abs(multiplier(mapping))
    return 1.0


def show(type_name: str, value: Any) -> str:
    """A wire value as the reports print it."""
    if value is None:
        return "-"
    if type_name.startswith("M_DP"):
        return f"{DOUBLE_NAMES.get(int(value), '?')} ({int(value)})"
    if isinstance(value, bool):
        return "ON (1)" if value else "OFF (0)"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
