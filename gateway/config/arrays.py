"""Point arrays: one profile entry standing for a table of points (the zones of a fiber loop,
the cells of a string).

A DTS reports 4 loops x 64 zones x several values; written point by point its profile is
thousands of near-identical entries nobody can check against the manual. An entry with
``array:`` is expanded here, once, where the loader reads a profile and before the driver's
point model sees it, so ``gridgate check``, the simulators, the drivers and the point-table
export all see plain points and nothing downstream knows that arrays exist.

Each element is a copy of the entry without ``array``: every top-level string containing ``{``
is formatted with the element's index values (``str.format``: ``{zone:02d}``; ``{{`` is a
literal brace), and the driver's ``array_field`` (Modbus: ``address``) advances by position x
stride per dimension, the last dimension varying fastest. Nested values (``sim``, ``writable``)
are shared by every element; only the strings directly under ``sim`` are formatted too (a hot
spot's ``position: "{zone}"``). A dimension without ``stride`` is contiguous: the
innermost advances by the point's size (``PointSpec.array_size``), each outer one by the span of
the dimensions inside it.

Elements are ``LineDict``s carrying their entry's key lines, so a validation error in element 130
is reported on the entry's line; ``Expansion.locate`` names it by the file's entry and the
element's id (``points[7] (ch2_z05_tmax).scale``) and folds the same problem of many elements of
one entry into one line. Pure: the YAML tree in; the expanded tree and the problems, located in
the file's tree, out.
"""

import itertools
import math
import re
import string
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from pydantic import TypeAdapter, ValidationError

from gateway.config.profile import ArrayDimension, PointSpec
from gateway.config.source import ConfigProblem, LineDict, LineList, Problem

MAX_POINTS = 65_536
_DIMENSIONS = TypeAdapter(list[ArrayDimension])
_POINT_PATH = re.compile(r"^points\[(\d+)\]")
_VARYING = re.compile(r"'[^']*'|-?\d+(?:\.\d+)?")  # what differs between elements' messages: ids, addresses


@dataclass(frozen=True)
class Expansion:
    """A profile tree with its arrays expanded (None: too many points to validate), where each
    point came from (per point: its entry's index in the file and, for an array element, its id;
    None when the profile has no arrays) and the arrays' own problems."""

    tree: Any
    origins: list[tuple[int, str | None]] | None = None
    problems: list[Problem] = field(default_factory=list)

    def label(self, index: int) -> str:
        """How a message names point ``index`` of the expanded profile: by its entry in the file."""
        if self.origins is None:
            return f"points[{index}]"
        entry, element = self.origins[index]
        return f"points[{entry}]" + (f" ({element})" if element is not None else "")

    def locate(self, problems: Iterable[ConfigProblem]) -> list[ConfigProblem]:
        """``problems`` found in the expanded tree, each point path naming the file's entry; one
        problem of many elements of an entry (same key, same message but for ids and numbers) is
        kept once, saying how many more elements share it."""
        if self.origins is None:
            return list(problems)
        kept: list[ConfigProblem] = []
        shared: dict[tuple, list[int]] = {}  # (entry, key path, message shape) -> [index in kept, more]
        for problem in problems:
            match = _POINT_PATH.match(problem.path)
            if match is None:
                kept.append(problem)
                continue
            rest = problem.path[match.end():]
            entry, element = self.origins[int(match[1])]
            if element is not None:
                key = (entry, rest, _VARYING.sub("#", problem.message))
                if key in shared:
                    shared[key][1] += 1
                    continue
                shared[key] = [len(kept), 0]
            kept.append(replace(problem, path=self.label(int(match[1])) + rest))
        for at, more in shared.values():
            if more:
                kept[at] = replace(kept[at], message=f"{kept[at].message} (and {more} more element(s) of this array)")
        return kept


def expand_profile(tree: Any, point_model: type[PointSpec]) -> Expansion:
    """``tree`` with every ``array:`` entry of its ``points`` replaced by the entry's elements.

    An entry whose array is wrong is left out and its problems are returned; a profile that
    would expand to more than ``MAX_POINTS`` points gives ``tree`` None.
    """
    points = tree.get("points") if isinstance(tree, dict) else None
    if not isinstance(points, list) or not any(_is_array(raw) for raw in points):
        return Expansion(tree)
    problems: list[Problem] = []
    shapes = [_dimensions(raw, index, point_model, problems) if _is_array(raw) else None
              for index, raw in enumerate(points)]
    total = sum(math.prod(d.count for d in dims) if dims else int(not _is_array(raw))
                for raw, dims in zip(points, shapes))
    if total > MAX_POINTS:
        return Expansion(None, [], problems + [(("points",), f"the profile expands to {total} points; "
                                                             f"at most {MAX_POINTS}")])
    lines = getattr(points, "item_lines", [getattr(points, "line", 1)] * len(points))
    expanded, origins = _line_list(getattr(points, "line", 1)), []
    for index, (raw, dims) in enumerate(zip(points, shapes)):
        if not _is_array(raw):
            elements: list[tuple[Any, str | None]] = [(raw, None)]
        else:  # a broken array (no dims) is left out: its problems are in ``problems``
            elements = _elements(raw, dims, point_model, ("points", index), problems) if dims else []
        for element, element_id in elements:
            expanded.append(element)
            expanded.item_lines.append(lines[index])
            origins.append((index, element_id))
    return Expansion(_with_points(tree, expanded), origins, problems)


def _is_array(raw: Any) -> bool:
    return isinstance(raw, dict) and "array" in raw


def _dimensions(raw: dict, index: int, point_model: type[PointSpec],
                problems: list[Problem]) -> list[ArrayDimension] | None:
    """The entry's dimensions, or None after adding why they are unusable to ``problems``."""
    loc: tuple = ("points", index, "array")
    if point_model.array_field is None:
        problems.append((loc, f"{point_model.__name__} points cannot be arrays: the protocol names "
                              "no address field for an array to advance"))
        return None
    try:
        dims = _DIMENSIONS.validate_python(raw["array"])
    except ValidationError as exc:
        problems.extend((loc + tuple(err["loc"]), _message(err)) for err in exc.errors())
        return None
    if not dims:
        problems.append((loc, "an array needs at least one dimension, e.g. [{name: zone, count: 64}]"))
        return None
    names = [d.name for d in dims]
    twice = [at for at, name in enumerate(names) if name in names[:at]]
    problems.extend((loc + (at, "name"), f"dimension {names[at]!r} is named twice") for at in twice)
    return None if twice else dims


def _message(err: Any) -> str:
    return "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")


def _elements(raw: dict, dims: list[ArrayDimension], point_model: type[PointSpec], loc: tuple,
              problems: list[Problem]) -> list[tuple[Any, str | None]]:
    """One point per index combination, or none after adding the entry's problems."""
    templates = _templates(raw)
    found = _template_problems(templates, dims, loc) or _id_problems(raw.get("id"), dims, loc)
    if found:
        problems.extend(found)
        return []
    where = point_model.array_field or ""
    base = raw.get(where)
    strides = _strides(dims, point_model.array_size(raw))
    elements: list[tuple[Any, str | None]] = []
    seen: dict[str, dict[str, int]] = {}
    for position in itertools.product(*(range(d.count) for d in dims)):
        values = {d.name: d.start + i for d, i in zip(dims, position)}
        element = _element(raw, templates, values)
        if isinstance(base, int) and not isinstance(base, bool):
            element[where] = base + sum(i * stride for i, stride in zip(position, strides))
        element_id = element.get("id") if isinstance(element.get("id"), str) else None
        if element_id is not None and element_id in seen:
            problems.append((loc + ("id",), f"id template {raw['id']!r} gives {element_id!r} twice "
                                            f"({_indices(seen[element_id])} and {_indices(values)})"))
            return []
        if element_id is not None:
            seen[element_id] = values
        elements.append((element, element_id))
    return elements


def _templates(raw: dict) -> dict[tuple[str, ...], str]:
    """The entry's strings holding ``{``, by their key path: top-level keys, and the keys of
    ``sim`` (a simulated hot spot's ``position: "{zone}"`` differs per element)."""
    found = {(key,): value for key, value in raw.items() if isinstance(value, str) and "{" in value}
    sim = raw.get("sim")
    if isinstance(sim, dict):
        found |= {("sim", key): value for key, value in sim.items() if isinstance(value, str) and "{" in value}
    return found


def _template_problems(templates: dict[tuple[str, ...], str], dims: list[ArrayDimension],
                       loc: tuple) -> list[Problem]:
    """Each template that cannot be formatted with the array's indices, at its key."""
    names, first = [d.name for d in dims], {d.name: d.start for d in dims}
    return [(loc + path, message) for path, template in templates.items()
            if (message := _template_problem(template, names, first))]


def _template_problem(template: str, names: list[str], first: dict[str, int]) -> str | None:
    """Why ``template`` cannot be formatted with the array's indices, or None."""
    try:
        fields = _fields(template)
    except ValueError as exc:
        return f"template {template!r}: {exc}"
    unknown = sorted(fields - set(names))
    if unknown:
        return f"{{{unknown[0]}}} in {template!r} names no dimension of the array ({', '.join(names)})"
    try:
        template.format(**first)
    except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
        return f"template {template!r} cannot be formatted: {exc}"
    return None


def _fields(template: str) -> set[str]:
    """The names a ``str.format`` template reads (``zone`` of ``{zone:02d}``); ValueError if malformed."""
    return {re.split(r"[.\[]", name, maxsplit=1)[0]
            for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def _id_problems(ident: Any, dims: list[ArrayDimension], loc: tuple) -> list[Problem]:
    """An id that leaves out a dimension with more than one index would name several elements alike."""
    try:
        used = _fields(ident) if isinstance(ident, str) else None
    except ValueError:
        used = None
    if used is None:
        return []  # a missing or malformed id is the point model's to report
    unused = [d.name for d in dims if d.count > 1 and d.name not in used]
    if not unused:
        return []
    return [(loc + ("id",), f"id {ident!r} does not use dimension {', '.join(unused)}: its elements "
                            f"would share ids (write e.g. {ident + '_{' + unused[0] + '}'!r})")]


def _strides(dims: list[ArrayDimension], size: int) -> list[int]:
    """Each dimension's stride: as given, or contiguous (the inner dimensions' span)."""
    strides: list[int] = []
    span = size
    for dim in reversed(dims):
        stride = dim.stride if dim.stride is not None else span
        strides.append(stride)
        span = stride * dim.count
    return strides[::-1]


def _element(raw: dict, templates: dict[tuple[str, ...], str], values: dict[str, int]) -> LineDict:
    """The entry without ``array``, templates formatted, on the entry's lines."""
    element = _on_lines(LineDict((key, value) for key, value in raw.items() if key != "array"), raw)
    for path, template in templates.items():
        if len(path) == 1:
            element[path[0]] = template.format(**values)
        else:
            if element["sim"] is raw["sim"]:
                element["sim"] = _on_lines(LineDict(raw["sim"]), raw["sim"])
            element["sim"][path[1]] = template.format(**values)
    return element


def _on_lines(copy: LineDict, original: Any) -> LineDict:
    """``copy`` reported on ``original``'s lines."""
    copy.line = getattr(original, "line", 1)
    copy.key_lines = getattr(original, "key_lines", {})
    return copy


def _indices(values: dict[str, int]) -> str:
    return ", ".join(f"{name}={value}" for name, value in values.items())


def _line_list(line: int) -> LineList:
    result = LineList()
    result.line, result.item_lines = line, []
    return result


def _with_points(tree: dict, points: LineList) -> LineDict:
    """A copy of the profile ``tree`` with other ``points``, on the same lines."""
    result = LineDict(tree)
    result.line = getattr(tree, "line", 1)
    result.key_lines = getattr(tree, "key_lines", {})
    result["points"] = points
    return result
