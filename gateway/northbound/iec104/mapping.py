"""Checks of the 104 point tables against the site: IOAs, points, and what each type can carry."""

from typing import Collection, Iterable

from gateway.commands.policy import CommandPolicy
from gateway.config.profile import PointSpec
from gateway.config.source import Problem
from gateway.model import Device
from gateway.northbound.iec104.section import ALARM_POINTS, MasterGroup, PointMap

INT16 = (-32768, 32767)
INT32 = (-(2**31), 2**31 - 1)


def carry_problem(mapping: PointMap, spec: PointSpec) -> str | None:
    """Why the 104 type cannot carry the point's values, or None when it can."""
    kind, kind_range = spec.value_kind(), spec.value_range()
    if kind == "str":
        return f"{mapping.point} is a string: no IEC 104 monitoring type carries text"
    family = mapping.type[:4]
    if family == "M_SP" and kind != "bool":
        return f"{mapping.type} (single point) carries on/off, {mapping.point} is {kind}"
    if family == "M_DP" and kind not in ("bool", "int"):
        return f"{mapping.type} (double point) carries states 0-3, {mapping.point} is {kind}"
    if family == "M_DP" and kind == "int" and kind_range and (kind_range[0] < 0 or kind_range[1] > 3):
        return f"{mapping.type} carries states 0-3, {mapping.point} ranges {kind_range[0]:g}..{kind_range[1]:g}"
    if mapping.type in ("M_ME_NB_1", "M_ME_TE_1") and kind_range:
        low, high = sorted(round(v * mapping.multiplier, 9) for v in kind_range)  # 0.1 x 10 is 1, not 1.0000000000000002
        if low < INT16[0] or high > INT16[1]:
            return (f"{mapping.type} (scaled, int16) cannot carry {mapping.point}: "
                    f"{kind_range[0]:g}..{kind_range[1]:g} x {mapping.multiplier:g} exceeds -32768..32767")
    if family == "M_IT" and kind == "bool":
        return f"{mapping.type} (integrated total) carries counters, {mapping.point} is bool"
    return None


def _unresolved(point: str, unresolved: Collection[str]) -> bool:
    """A point of a device whose entry or profile already has problems: not reported twice."""
    return point.split(".", 1)[0] in unresolved


def group_problems(groups: list[MasterGroup], devices: Iterable[Device],
                   unresolved: Collection[str] = ()) -> list[Problem]:
    """Every problem of every master group, located as (path in the site file, message)."""
    specs = {f"{d.name}.{p.id}": p for d in devices for p in d.profile.points}
    device_names = {d.name for d in devices} | set(unresolved)
    problems: list[Problem] = []
    endpoints: dict[tuple[str, int], str] = {}
    for g, group in enumerate(groups):
        loc = ("master_groups", g)
        if group.port and (group.bind, group.port) in endpoints:
            problems.append((loc + ("port",), f"{group.bind}:{group.port} is also used by group {endpoints[(group.bind, group.port)]!r}"))
        endpoints.setdefault((group.bind, group.port), group.name)
        problems += _ioa_problems(group, loc)
        problems += [(loc + ("comm_status", name), f"no device {name!r} in this site")
                     for name in group.comm_status if name not in device_names]
        for i, mapping in enumerate(group.points):
            spec = specs.get(mapping.point)
            if spec is None and not _unresolved(mapping.point, unresolved):
                problems.append((loc + ("points", i, "point"), f"no point {mapping.point!r} in this site"))
            elif spec is not None and (why := carry_problem(mapping, spec)) is not None:
                problems.append((loc + ("points", i, "type"), why))
    return problems


def _ioa_problems(group: MasterGroup, loc: tuple) -> list[Problem]:
    owners: dict[int, str] = {}
    problems: list[Problem] = []
    claims = [(loc + ("points", i, "ioa"), m.ioa, m.point) for i, m in enumerate(group.points)]
    claims += [(loc + ("commands", i, "ioa"), c.ioa, f"command {c.point}") for i, c in enumerate(group.commands)]
    claims += [(loc + ("comm_status", d), ioa, f"comm status of {d}") for d, ioa in group.comm_status.items()]
    claims += [(loc + (key,), getattr(group, key), key) for key in ALARM_POINTS if getattr(group, key)]
    for where, ioa, what in claims:
        if ioa in owners:
            problems.append((where, f"duplicate IOA {ioa} ({what}; already {owners[ioa]})"))
        owners.setdefault(ioa, what)
    return problems


def command_problems(groups: list[MasterGroup], policies: list[CommandPolicy], devices: Iterable[Device],
                     unresolved: Collection[str] = ()) -> list[Problem]:
    """Command tables, policies and fail-safe writes that cannot work as written."""
    specs = {f"{d.name}.{p.id}": p for d in devices for p in d.profile.points}
    skip = set(unresolved)
    names = {g.name: g for g in groups}
    problems: list[Problem] = []
    for g, group in enumerate(groups):
        monitored = {m.ioa for m in group.points}
        for i, command in enumerate(group.commands):
            loc = ("master_groups", g, "commands", i)
            problems += _writable(specs, command.point, loc + ("point",), skip=skip)
            if command.related_ioa is not None and command.related_ioa not in monitored:
                problems.append((loc + ("related_ioa",), f"IOA {command.related_ioa} is not a monitored point of group {group.name!r}"))
        if group.failsafe:
            for i, write in enumerate(group.failsafe.writes):
                loc = ("master_groups", g, "failsafe", "writes", i)
                problems += _writable(specs, write.point, loc + ("point",), write.value, skip)
    for i, policy in enumerate(policies):
        loc = ("command_policy", i)
        problems += _writable(specs, policy.point, loc + ("point",), skip=skip)
        for name in policy.groups:
            if name not in names:
                problems.append((loc + ("groups",), f"no master group {name!r}"))
            elif policy.timeout_s >= names[name].timers.t1:
                problems.append((loc + ("timeout_s",), f"{policy.timeout_s:g} s is not under t1 ({names[name].timers.t1:g} s) of group {name!r}"))
        problems += [(loc + ("interlocks", k, "point"), f"no point {lock.point!r} in this site")
                     for k, lock in enumerate(policy.interlocks)
                     if lock.point not in specs and not _unresolved(lock.point, skip)]
    return problems


def _writable(specs: dict[str, PointSpec], point: str, loc: tuple, value: float | None = None,
              skip: Collection[str] = ()) -> list[Problem]:
    spec = specs.get(point)
    if spec is None:
        return [] if _unresolved(point, skip) else [(loc, f"no point {point!r} in this site")]
    if spec.writable is None:
        return [(loc, f"{point} is not writable (its profile gives no writable limits)")]
    if value is not None and not spec.writable.min <= value <= spec.writable.max:
        return [(loc, f"{value:g} is outside {point}'s limits [{spec.writable.min:g}, {spec.writable.max:g}]")]
    return []
