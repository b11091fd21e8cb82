"""The terminal view of the demo: every point with value, unit, quality and age."""

from typing import Iterable

from gateway.interfaces import Device
from gateway.model import Quality, Sample, point_id
from gateway.points import PointTable

CLEAR = "\x1b[H\x1b[2J"


def quality_text(quality: Quality) -> str:
    """``good`` or the set flags, most severe first (``IV NT``)."""
    if quality == Quality.GOOD:
        return "good"
    return " ".join(flag.name for flag in (Quality.IV, Quality.NT, Quality.SB, Quality.BL, Quality.OV)
                    if quality & flag and flag.name)


def value_text(sample: Sample | None) -> str:
    """A value as an engineer reads it: floats to 3 decimals, missing as a dash."""
    if sample is None or sample.value is None:
        return "-"
    if isinstance(sample.value, float):
        return f"{sample.value:.3f}"
    return str(sample.value)


def render(devices: Iterable[Device], table: PointTable, now: float) -> list[str]:
    """The table's rows, one per point, grouped by device."""
    lines = [f"{'device':<8} {'point':<26} {'value':>14} {'unit':<6} {'quality':<8} {'age':>6}"]
    for device in devices:
        for point in device.profile.points:
            sample = table.get(point_id(device.name, point.id))
            age = f"{now - sample.gateway_time:5.1f}s" if sample else "never"
            quality = quality_text(sample.quality) if sample else "-"
            lines.append(f"{device.name:<8} {point.id:<26} {value_text(sample):>14} {point.unit:<6} "
                         f"{quality:<8} {age:>6}")
    return lines
