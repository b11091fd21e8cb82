"""Spontaneous-latency probes of ``gridgate dispatch-test``: which points to move, how far, what answers.

Pure, like ``dispatchcheck``. A probe sets a simulated point (through the control API) to a value
clearly beyond its deadband and times the spontaneous object carrying it. Set values must stay
inside what the register, the simulation bounds and the 104 type can carry, and must stand out
from the point's own movement, or the answer would be ambiguous.
"""

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from gateway.commissioning.dispatchcheck import SPONTANEOUS_COT, Arrival, Expectation, Probe, tolerance
from gateway.commissioning.wirevalues import NORMALIZED_MAX, full_scale, multiplier, wire_value
from gateway.config.profile import PointSpec
from gateway.metrics import percentile
from gateway.northbound.iec104.section import MasterGroup, PointMap


@dataclass(frozen=True)
class ProbePlan:
    """A point to move, from ``before`` to ``target``, to time its spontaneous transmission."""

    mapping: PointMap
    sim: str
    before: float
    target: float


def probe_order(mapping: PointMap, spec: PointSpec) -> int | None:
    """Preference for probing (lower first); None when the point cannot be probed.

    Constant points keep a set value; moving ones continue from it (a sine around it), so they
    come after; ``follow`` points slew straight back to their source and are never used. Within
    one kind, read-only points come before writable ones (setpoints drive other simulated points).
    """
    if not mapping.type.startswith("M_ME") or spec.value_kind() not in ("int", "float"):
        return None
    kind = spec.sim.kind if spec.sim is not None else "constant"
    return {"constant": 0, "integrate": 1, "random_walk": 2, "ramp": 3, "sine": 4}.get(kind)


def nudge(mapping: PointMap, spec: PointSpec, current: float, poll_s: float,
          device_deadband: float = 0.0) -> float | None:
    """A value clearly beyond the deadband from ``current``, inside what the point carries; None if none fits.

    10 x the deadband (the table's, or the device's own when it reports only changes beyond one),
    plus at least one unit and two steps of the wire's resolution, plus the distance a moving
    simulation covers in a poll or two, so the answer is unmistakable.
    """
    delta = 10 * max(mapping.threshold, device_deadband) + max(1.0, 2 * _wire_step(mapping), 2 * abs(spec.scale))
    if spec.sim is not None:
        delta += 4 * abs(spec.sim.amplitude) + 4 * abs(spec.sim.step) * max(1.0, poll_s)
    low, high = _room(mapping, spec)
    for target in (current + delta, current - delta):
        target = round(target) if spec.value_kind() == "int" else target
        if low <= target <= high:
            return target
    return None


def _wire_step(mapping: PointMap) -> float:
    """The engineering size of one step of the wire type (0 for floats)."""
    if mapping.type in ("M_ME_NA_1", "M_ME_TD_1"):
        return full_scale(mapping) / 32768
    if mapping.type in ("M_ME_NB_1", "M_ME_TE_1"):
        return 1.0 / abs(multiplier(mapping) or 1.0)
    return 0.0


def _room(mapping: PointMap, spec: PointSpec) -> tuple[float, float]:
    """The engineering range a set value must stay in: encoding, simulation bounds, wire type."""
    low, high = spec.value_range() or (-math.inf, math.inf)
    if spec.sim is not None:
        low = max(low, spec.sim.min if spec.sim.min is not None else -math.inf)
        high = min(high, spec.sim.max if spec.sim.max is not None else math.inf)
    if mapping.type in ("M_ME_NA_1", "M_ME_TD_1"):
        span = full_scale(mapping) * NORMALIZED_MAX
        low, high = max(low, -span), min(high, span)
    if mapping.type in ("M_ME_NB_1", "M_ME_TE_1"):
        span = 32767 / abs(multiplier(mapping) or 1.0)
        low, high = max(low, -span), min(high, span)
    return low, high


def plan_probes(group: MasterGroup, specs: Mapping[str, PointSpec], poll_s: Mapping[str, float],
                values: Mapping[str, Any], limit: int,
                deadbands: Mapping[str, float] | None = None) -> tuple[list[ProbePlan], list[str]]:
    """Up to ``limit`` points to move (the best of each device in turn), and why others were left out."""
    candidates, skipped = [], []
    for mapping in group.points:
        spec, current = specs.get(mapping.point), values.get(mapping.point)
        order = probe_order(mapping, spec) if spec is not None else None
        if order is None or not isinstance(current, (int, float)) or isinstance(current, bool):
            continue
        target = nudge(mapping, spec, float(current), poll_s.get(mapping.point.split(".")[0], 1.0),
                       (deadbands or {}).get(mapping.point, 0.0))
        if target is None:
            skipped.append(f"{mapping.point}: no room to move beyond the deadband")
            continue
        kind = spec.sim.kind if spec.sim is not None else "none"
        candidates.append(((order, spec.writable is not None), ProbePlan(mapping, kind, current, target)))
    candidates.sort(key=lambda c: c[0])  # stable: table order within a preference
    return _round_robin([plan for _, plan in candidates], limit), skipped


def _round_robin(plans: list[ProbePlan], limit: int) -> list[ProbePlan]:
    """Up to ``limit`` plans taken in turn from each device, so every device's poll loop is timed."""
    queues: dict[str, list[ProbePlan]] = {}
    for plan in plans:
        queues.setdefault(plan.mapping.point.split(".", 1)[0], []).append(plan)
    chosen: list[ProbePlan] = []
    while len(chosen) < limit and any(queues.values()):
        for queue in queues.values():
            if queue and len(chosen) < limit:
                chosen.append(queue.pop(0))
    return chosen


def answer_to(plan: ProbePlan, served: float, posted_at: float, arrivals: Iterable[Arrival]) -> Arrival | None:
    """The first spontaneous object at the probe's IOA after ``posted_at`` carrying the new value.

    "Carrying" means nearer the target than the old value: within half the step, or the tolerance.
    """
    mapping = plan.mapping
    exp = Expectation("", mapping.point, mapping.ioa, mapping.type, mapping=mapping)
    new, old = wire_value(mapping.type, mapping, served), wire_value(mapping.type, mapping, plan.before)
    window = max(tolerance(exp, [new]), abs(new - old) / 2)
    for arrival in arrivals:
        if (arrival.ioa == mapping.ioa and arrival.type == mapping.event_type and arrival.cot == SPONTANEOUS_COT
                and arrival.at >= posted_at and isinstance(arrival.value, (int, float))
                and abs(float(arrival.value) - new) <= window):
            return arrival
    return None


def latency_summary(probes: Sequence[Probe]) -> dict[str, float] | None:
    """min/p50/p95/max of the measured latencies (None when nothing was measured)."""
    measured = [p.latency_s for p in probes if p.latency_s is not None]
    if not measured:
        return None
    return {"min": min(measured), "p50": percentile(measured, 0.5),
            "p95": percentile(measured, 0.95), "max": max(measured)}


def histogram(latencies: Sequence[float], bins: int = 10) -> list[tuple[float, float, int]]:
    """(from, to, count) bins spanning 0 to the largest latency, rounded up to 0.1 s."""
    if not latencies:
        return []
    top = max(0.1, math.ceil(max(latencies) * 10) / 10)
    width = top / bins
    counts = [0] * bins
    for value in latencies:
        counts[min(bins - 1, int(value / width))] += 1
    return [(i * width, (i + 1) * width, n) for i, n in enumerate(counts)]
