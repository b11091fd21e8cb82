"""A first point table for a site: every point of every device at an IOA in the usual ranges.

Used by the demo, and a starting point for a real table (export it with ``gridgate points
export`` and edit). Ranges follow common Chinese dispatch practice (research/domain.md 1.4):
遥信 (single points) from 0x0001, communication status from 0x3001, 遥测 (measured values) from
0x4001, 遥控 (switching commands) from 0x6001, 遥调 (setpoints) from 0x6201, 电度 (energy
counters) from 0x6401. Text points have no IEC 104 type and are left out; commands are not
generated (which writable point a dispatch centre may command is a decision, not a default).
"""

from typing import Any, Sequence

from gateway.model import Device

SINGLE_BASE, STATUS_BASE, MEASURED_BASE, COUNTER_BASE = 0x0001, 0x3001, 0x4001, 0x6401
SWITCHING_BASE, SETPOINT_BASE = 0x6001, 0x6201
ENERGY_UNITS = frozenset({"kWh", "MWh", "Wh", "kvarh", "Mvarh", "varh"})


def auto_points(devices: Sequence[Device]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The ``points`` list and the ``comm_status`` map of a master group covering ``devices``."""
    next_ioa = {"M_SP_NA_1": SINGLE_BASE, "M_ME_NC_1": MEASURED_BASE, "M_IT_NA_1": COUNTER_BASE}
    points: list[dict[str, Any]] = []
    for device in devices:
        for spec in device.profile.points:
            kind = spec.value_kind()
            if kind == "str":
                continue
            type_ = "M_SP_NA_1" if kind == "bool" else ("M_IT_NA_1" if spec.unit in ENERGY_UNITS else "M_ME_NC_1")
            points.append({"point": f"{device.name}.{spec.id}", "ioa": next_ioa[type_], "type": type_})
            next_ioa[type_] += 1
    status = {device.name: STATUS_BASE + n for n, device in enumerate(devices)}
    return points, status
