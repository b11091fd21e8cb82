"""The terminal view of the demo: every point with value, unit, quality and age."""

from typing import Iterable

from gateway.model import Device, Quality, Sample, point_id
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


def render(devices: Iterable[Device], table: PointTable, now: float, max_rows: int | None = None) -> list[str]:
    """The table's rows, one per point, grouped by device.

    With ``max_rows`` (a terminal too small for every point) the points that are not good come
    first, so a fault is never scrolled out of sight, and a last line counts what is left out.
    """
    rows: list[tuple[bool, str]] = []
    for device in devices:
        for point in device.profile.points:
            sample = table.get(point_id(device.name, point.id))
            age = f"{now - sample.gateway_time:5.1f}s" if sample else "never"
            quality = quality_text(sample.quality) if sample else "-"
            rows.append((quality == "good", f"{device.name:<8} {point.id:<26} {value_text(sample):>14} "
                                            f"{point.unit:<6} {quality:<8} {age:>6}"))
    header = f"{'device':<8} {'point':<26} {'value':>14} {'unit':<6} {'quality':<8} {'age':>6}"
    if max_rows is None or len(rows) <= max_rows:
        return [header] + [text for _, text in rows]
    ordered = sorted(rows, key=lambda row: row[0])
    shown, hidden = ordered[:max(max_rows - 1, 0)], ordered[max(max_rows - 1, 0):]
    bad = sum(1 for good, _ in hidden if not good)
    state = "all good" if not bad else f"{bad} not good"
    return [header] + [text for _, text in shown] + [f"... {len(hidden)} more points, {state} "
                                                    f"(a taller terminal shows them)"]
