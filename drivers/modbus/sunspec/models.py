"""SunSpec information models as flat point lists with register offsets. Pure: no I/O.

The definitions are the SunSpec Alliance's JSON model files as pysunspec2 ships them
(``sunspec2/models/json/model_<id>.json``), read here as plain JSON rather than through
``sunspec2.mdef``/``sunspec2.device``: the JSON format is the Alliance's published one and is
what every pysunspec2 release carries, while pysunspec2's model classes lay a model out only
inside its own Modbus client, which the gateway does not use (it reads through pymodbus).

A model is one top-level group: points (each ``size`` registers; ``ID`` and ``L`` first), then
groups. A group's ``count`` says how often it repeats:

* absent: once (a named sub-block, e.g. 704's ``PFWInj``);
* a number: that often;
* a point's name (705's ``NCrv``): the value of that point, read from the device;
* 0, the legacy form (160's MPPT ``module``): as often as fits in the rest of the model's
  length ``L``, which the device states.

Points of a group instance are named with its name and index (``module2_DCV``), of a group
that does not repeat with its name (``PFWInj_PF``). A point's ``sf`` names a scale-factor
point looked up in its own group instance first, then outwards, as the SunSpec rules say; a
number there is a fixed exponent.
"""

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Sequence

END_ID = 0xFFFF


@dataclass(frozen=True)
class SunSpecPoint:
    """One point of a model as a device lays it out."""

    name: str                # as SunSpec names it: "W", "DCV"
    offset: int              # registers after the model's ID register (ID is 0, L is 1)
    type: str                # the SunSpec type: int16, uint16, acc32, enum16, sunssf, string, pad...
    size: int                # registers
    sf: str | int | None     # qualified name of its scale-factor point, or a fixed exponent
    units: str = ""
    label: str = ""
    writable: bool = False   # access RW
    group: str = ""          # the group instance it belongs to: "" (the model's own), "module2"
    description: str = ""
    symbols: tuple[tuple[int, str], ...] = ()  # an enum's values or a bitfield's bits, with their names

    @property
    def qualified(self) -> str:
        """The name with its group instance, unique within the model: "W", "module2_DCV"."""
        return f"{self.group}_{self.name}" if self.group else self.name


@dataclass(frozen=True)
class ModelLayout:
    """A model instance: its points and where the device differs from the definition."""

    id: int
    name: str                # the definition's group name: "inverter_three_phase"
    label: str
    points: tuple[SunSpecPoint, ...]
    notes: tuple[str, ...]


class _LayoutStops(Exception):
    """A repeating group whose count cannot be known: nothing after it has a known offset."""


@lru_cache(maxsize=None)
def definition(model_id: int) -> dict[str, Any] | None:
    """The model's JSON definition, or None for a model SunSpec (as pysunspec2 ships it) lacks."""
    path = resources.files("sunspec2") / "models" / "json" / f"model_{model_id}.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def model_label(model_id: int) -> str:
    """The model's label ("Inverter (Three Phase)"), its group name, or "" if unknown."""
    found = definition(model_id)
    if found is None:
        return ""
    return found["group"].get("label") or found["group"]["name"]


def layout(model_id: int, length: int, registers: Sequence[int] | None = None) -> ModelLayout:
    """The points of model ``model_id`` on a device that says its length is ``length`` (L).

    ``registers`` are the model's registers as read, from its ID register on; they are needed
    only for a group repeated by a count point. Points past ``L`` are left out, and so is
    everything after a count that cannot be read; both are said in ``notes``. KeyError for a
    model without definition.
    """
    found = definition(model_id)
    if found is None:
        raise KeyError(model_id)
    walk = _Walk(length, registers)
    try:
        walk.group(found["group"], "", [])
    except _LayoutStops as exc:
        walk.notes.append(str(exc))
        walk.offset = walk.end  # what follows is unknown, not extra
    points = [p for p in walk.points if p.offset + p.size <= walk.end]
    cut = [p for p in walk.points[len(points):] if p.type != "pad"]
    if cut:
        walk.notes.append(f"L {length} ends before the definition does: {len(cut)} point(s) from "
                          f"{cut[0].qualified} on left out")
    elif walk.offset < walk.end:
        walk.notes.append(f"L {length} is {walk.end - walk.offset} register(s) longer than the definition: "
                          "those registers are not drafted")
    group = found["group"]
    return ModelLayout(model_id, group["name"], group.get("label", group["name"]), tuple(points),
                       tuple(walk.notes))


class _Walk:
    """Lays out one model's groups in register order, resolving counts and scale factors."""

    def __init__(self, length: int, registers: Sequence[int] | None) -> None:
        self.end = 2 + length
        self.registers = registers
        self.offset = 0
        self.points: list[SunSpecPoint] = []
        self.notes: list[str] = []
        self._offsets: dict[str, int] = {}

    def group(self, group: dict[str, Any], prefix: str, outer: list[dict[str, str]]) -> None:
        """Lay out ``group``'s points, then its sub-groups' instances; ``outer`` are the name
        scopes of the enclosing instances, innermost first."""
        scope: dict[str, str] = {}
        laid: list[tuple[dict[str, Any], str, int]] = []
        for point in group.get("points", []):
            qualified = prefix + point["name"]
            scope[point["name"]] = qualified
            self._offsets[qualified] = self.offset
            laid.append((point, qualified, self.offset))
            self.offset += int(point.get("size", 1))
        scopes = [scope] + outer
        for point, qualified, offset in laid:  # after the group: a scale factor may follow its points
            self.points.append(SunSpecPoint(
                point["name"], offset, point["type"], int(point.get("size", 1)), self._scale_factor(point, scopes),
                point.get("units", ""), point.get("label", ""), point.get("access") == "RW", prefix.rstrip("_"),
                point.get("desc", ""), tuple((int(s["value"]), s["name"]) for s in point.get("symbols", []))))
        for sub in group.get("groups", []):
            instances = self._instances(sub, prefix, scopes)
            for index, sub_prefix in enumerate(instances):
                if self.offset >= self.end:  # a count the device states need not fit its own L
                    self.notes.append(f"group {sub['name']}: {len(instances) - index} of {len(instances)} "
                                      "instance(s) lie past L; left out")
                    break
                self.group(sub, sub_prefix, scopes)

    def _scale_factor(self, point: dict[str, Any], scopes: list[dict[str, str]]) -> str | int | None:
        sf = point.get("sf")
        if sf is None or isinstance(sf, int):
            return sf
        for scope in scopes:
            if sf in scope:
                return scope[sf]
        self.notes.append(f"{point['name']}: scale factor {sf} is no point of the model; left unscaled")
        return None

    def _instances(self, sub: dict[str, Any], prefix: str, scopes: list[dict[str, str]]) -> list[str]:
        """The name prefix of each instance of group ``sub``."""
        count, name = sub.get("count"), sub["name"]
        if count is None:
            return [f"{prefix}{name}_"]
        if isinstance(count, str):
            count = self._count_point(name, count, scopes)
        elif count == 0:
            count = self._fill(sub)
        return [f"{prefix}{name}{index}_" for index in range(1, int(count) + 1)]

    def _count_point(self, group: str, count: str, scopes: list[dict[str, str]]) -> int:
        qualified = next((scope[count] for scope in scopes if count in scope), None)
        at = self._offsets.get(qualified or "")
        if at is None or self.registers is None or at >= len(self.registers):
            raise _LayoutStops(f"group {group}: its count {count} was not read; the group and anything "
                               "after it left out")
        value = self.registers[at]
        if value == 0xFFFF:
            raise _LayoutStops(f"group {group}: its count {count} is not implemented (0xFFFF); the group "
                               "and anything after it left out")
        return value

    def _fill(self, sub: dict[str, Any]) -> int:
        """Legacy count 0: as many instances as fit in the rest of the model's length."""
        size = _static_size(sub)
        if not size:
            raise _LayoutStops(f"group {sub['name']}: repeats to fill L, but its own size varies; left out")
        rest = self.end - self.offset
        if rest <= 0:
            return 0
        if rest % size:
            self.notes.append(f"group {sub['name']}: the {rest} register(s) left in L are no whole number "
                              f"of {size}-register instances; the last {rest % size} left out")
        return rest // size


def _static_size(group: dict[str, Any]) -> int | None:
    """Registers of one instance of ``group``; None when a nested count makes it vary."""
    size = sum(int(p.get("size", 1)) for p in group.get("points", []))
    for sub in group.get("groups", []):
        count, inner = sub.get("count"), _static_size(sub)
        if inner is None or isinstance(count, str) or count == 0:
            return None
        size += inner * (1 if count is None else int(count))
    return size
