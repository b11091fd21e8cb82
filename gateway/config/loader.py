"""Load a site file and every profile it names; collect every problem, then fail closed.

Like Buildbot's config checks: nothing stops at the first error, every finding is reported as
``file:line: path: message``, and a site with any finding is not started.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from pydantic import BaseModel, TypeAdapter, ValidationError

from gateway.config.arrays import Expansion, expand_profile
from gateway.config.profile import ProfileSpec
from gateway.config.site import DeviceEntry, SiteSpec, site_model
from gateway.config.source import ConfigErrors, ConfigProblem, dotted, line_of, load_yaml
from gateway.model import Device, group_by_protocol
from gateway.registry import Plugins

SHIPPED_PROFILES = Path(__file__).resolve().parents[2] / "device_profiles"


@dataclass(frozen=True)
class Site:
    """A validated site: its spec, its file and its resolved devices."""

    spec: SiteSpec
    file: Path
    devices: list[Device]


def _problems(exc: ValidationError, tree: Any, file: str, prefix: tuple = ()) -> list[ConfigProblem]:
    found = []
    for err in exc.errors():
        loc = tuple(part for part in err["loc"] if not str(part).startswith("function-"))
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        found.append(ConfigProblem(file, line_of(tree, loc), dotted(prefix + loc), message))
    return found


def validate(model: type[BaseModel], tree: Any, file: str, prefix: tuple = ()) -> tuple[Any, list[ConfigProblem]]:
    """``model`` built from ``tree``, or None and the problems, each with its line."""
    try:
        return model.model_validate(tree), []
    except ValidationError as exc:
        return None, _problems(exc, tree, file, prefix)


class ProfileLoader:
    """Loads each profile file once, checks it with its driver, remembers the verdict."""

    def __init__(self, drivers: Mapping[str, Any]) -> None:
        self.drivers = drivers
        self._cache: dict[Path, tuple[ProfileSpec | None, list[ConfigProblem]]] = {}

    def load(self, path: Path) -> tuple[ProfileSpec | None, list[ConfigProblem]]:
        """The validated profile at ``path`` (or None) and the problems found in it."""
        if path not in self._cache:
            self._cache[path] = self._load(path)
        return self._cache[path]

    def _load(self, path: Path) -> tuple[ProfileSpec | None, list[ConfigProblem]]:
        file = str(path)
        try:
            tree = load_yaml(path)
        except ConfigErrors as exc:
            return None, exc.problems
        protocol = tree.get("protocol") if isinstance(tree, dict) else None
        plugin = self.drivers.get(protocol) if isinstance(protocol, str) else None
        if plugin is None:
            known = ", ".join(sorted(self.drivers)) or "none installed"
            return None, [ConfigProblem(file, line_of(tree, ("protocol",)), "protocol",
                                        f"unknown protocol {protocol!r} (known: {known})")]
        expansion = expand_profile(tree, plugin.profile_model.point_model())
        array_problems = [ConfigProblem(file, line_of(tree, loc), dotted(loc), message)
                          for loc, message in expansion.problems]
        if expansion.tree is None:
            return None, array_problems
        profile, problems = _check_profile(plugin, expansion, file)
        if array_problems and not expansion.tree["points"]:  # every entry was a broken array, named already
            problems = [p for p in problems if p.path != "points"]
        problems = expansion.locate(problems) + array_problems
        return (None if problems else profile), problems


def _check_profile(plugin: Any, expansion: Expansion, file: str) -> tuple[ProfileSpec | None, list[ConfigProblem]]:
    """The expanded profile validated with its driver's model, then cross-checked (every point's
    id unique, the driver's own checks): on the valid part when some points failed."""
    tree = expansion.tree
    profile, problems = validate(plugin.profile_model, tree, file)
    checked, kept = (profile, None) if profile is not None else _valid_part(plugin, tree, problems)
    if checked is None:
        return profile, problems

    def in_tree(index: int) -> int:  # a point of ``checked`` -> its index in the (expanded) tree
        return index if kept is None else kept[index]

    for loc, message in _point_problems(checked, lambda index: expansion.label(in_tree(index))) \
            + plugin.profile_problems(checked):
        if loc[0] == "points" and len(loc) > 1:
            loc = ("points", in_tree(loc[1])) + tuple(loc[2:])
        problems.append(ConfigProblem(file, line_of(tree, loc), dotted(loc), message))
    return profile, problems


def _valid_part(plugin: Any, tree: Any, problems: list[ConfigProblem]) -> tuple[ProfileSpec | None, list[int] | None]:
    """The profile without its invalid points, so cross-point checks still run; None if more is wrong.

    Returns the partial profile and, for each of its points, the index in the file.
    """
    bad = {int(p.path.split("[", 2)[1].split("]")[0]) for p in problems if p.path.startswith("points[")}
    if len(bad) != len(problems) or not isinstance(tree.get("points"), list):
        return None, None
    kept = [i for i in range(len(tree["points"])) if i not in bad]
    try:
        return plugin.profile_model.model_validate({**tree, "points": [tree["points"][i] for i in kept]}), kept
    except ValidationError:
        return None, None


def _point_problems(profile: ProfileSpec, label: Callable[[int], str]) -> list[tuple[tuple, str]]:
    """Ids used twice (the first named by ``label``) and sim sources naming no point."""
    seen: dict[str, int] = {}
    found = []
    for index, point in enumerate(profile.points):
        if point.id in seen:
            found.append((("points", index, "id"), f"duplicate point id {point.id!r} (first at {label(seen[point.id])})"))
        seen.setdefault(point.id, index)
    for index, point in enumerate(profile.points):
        if point.sim and point.sim.source and point.sim.source not in seen:
            found.append((("points", index, "sim", "source"), f"no point {point.sim.source!r} in this profile"))
    return found


def profile_roots(site_file: Path, dirs: list[str]) -> list[Path]:
    """Where profiles are looked up: the site's profile_dirs, the site's folder, the shipped ones."""
    roots = [(site_file.parent / d).resolve() for d in dirs] + [site_file.parent.resolve(), SHIPPED_PROFILES]
    return list(dict.fromkeys(roots))


def find_profile(name: str, site_file: Path, dirs: list[str]) -> Path | None:
    """The file a site's ``profile:`` names: a path, or a name under the profile dirs (``.yaml`` optional)."""
    for root in profile_roots(site_file, dirs):
        for candidate in (root / name, root / f"{name}.yaml"):
            if candidate.is_file():
                return candidate.resolve()
    return None


@dataclass(frozen=True)
class SiteView:
    """What the plugins' cross-checks see: the spec (partial when parts of it failed their
    schema), the devices that resolved, and the names of those that did not."""

    spec: Any
    devices: list[Device]
    unresolved: frozenset[str]


def load_site(path: Path, plugins: Plugins) -> Site:
    """The validated site at ``path``; ConfigErrors listing every problem otherwise.

    A schema error in one part does not hide the rest: the devices whose entries are valid are
    resolved and checked with their profiles, and each plugin's section that is valid is
    cross-checked, so one ``gridgate check`` reports everything it can."""
    file = str(path)
    tree = load_yaml(path)
    model = site_model(plugins.northbound.values())
    spec, problems = validate(model, tree, file)
    usable = set(model.model_fields)
    entries: list[DeviceEntry | None] = list(spec.devices) if spec is not None else []
    if spec is None:
        spec, usable, entries = _partial(model, tree)
    spec = spec.model_copy(update={p.section: p.prepare(getattr(spec, p.section), path.parent)
                                   for p in plugins.northbound.values() if p.section in usable})
    profiles = ProfileLoader(plugins.drivers)
    devices: list[Device] = []
    unresolved: set[str] = {str(raw["name"]) for raw, entry in zip(_raw_devices(tree), entries)
                            if entry is None and isinstance(raw, dict) and "name" in raw}
    for index, entry in enumerate(entries):
        if entry is None:
            continue
        device, found = _resolve_device(index, entry, spec, path, tree, profiles)
        problems += found
        if device is None:
            unresolved.add(entry.name)
        elif entry.enabled:
            devices.append(device)
    problems += _site_problems(devices, entries, tree, file, plugins)
    view = SiteView(spec, devices, frozenset(unresolved))
    for plugin in plugins.northbound.values():  # their checks read command_policy too: judged only when it is valid
        if {plugin.section, "command_policy"} <= usable:
            problems += [ConfigProblem(file, line_of(tree, loc), dotted(loc), message)
                         for loc, message in plugin.problems(getattr(spec, plugin.section), view)]
    if problems:
        raise ConfigErrors(problems)
    return Site(spec, path, devices)


def _raw_devices(tree: Any) -> list[Any]:
    devices = tree.get("devices") if isinstance(tree, dict) else None
    return devices if isinstance(devices, list) else []


def _partial(model: type[SiteSpec], tree: Any) -> tuple[Any, set[str], list[DeviceEntry | None]]:
    """The parts of a site that failed its schema which are valid on their own: each top-level
    section, each device entry. Their problems were already reported by the whole-model check."""
    tree = tree if isinstance(tree, dict) else {}
    parts: dict[str, Any] = {}
    usable: set[str] = set()
    for key, info in model.model_fields.items():
        if key == "devices":
            continue
        try:
            if key in tree:
                parts[key] = TypeAdapter(info.annotation).validate_python(tree[key])
            usable.add(key)
        except ValidationError:
            continue
    parts.setdefault("site", str(tree.get("site", "")))
    entries: list[DeviceEntry | None] = []
    for raw in _raw_devices(tree):
        try:
            entries.append(DeviceEntry.model_validate(raw))
        except ValidationError:
            entries.append(None)
    return model.model_construct(**parts, devices=[e for e in entries if e]), usable, entries


def _resolve_device(index: int, entry: Any, spec: SiteSpec, path: Path, tree: Any,
                    profiles: ProfileLoader) -> tuple[Device | None, list[ConfigProblem]]:
    file, loc = str(path), ("devices", index)
    profile_path = find_profile(entry.profile, path, spec.profile_dirs)
    if profile_path is None:
        return None, [ConfigProblem(file, line_of(tree, loc + ("profile",)), dotted(loc + ("profile",)),
                                    f"profile {entry.profile!r} not found in {', '.join(str(r) for r in profile_roots(path, spec.profile_dirs))}")]
    profile, problems = profiles.load(profile_path)
    if profile is None:
        return None, problems + [ConfigProblem(file, line_of(tree, loc + ("profile",)), dotted(loc + ("profile",)),
                                               f"profile {entry.profile!r} has errors (reported against {profile_path.name})")]
    plugin = profiles.drivers[profile.protocol]
    connection, problems = _connection(plugin.connection_model, entry, loc, file, tree)
    if connection is None:
        return None, problems
    connection = plugin.prepare(connection, path.parent)
    tags = {"site": spec.site, "device": entry.name, "model": profile.model, **entry.tags}
    return Device(entry.name, profile, profile_path, connection, tags), []


def _connection(model: type[BaseModel], entry: DeviceEntry, loc: tuple, file: str,
                tree: Any) -> tuple[BaseModel | None, list[ConfigProblem]]:
    """The driver's connection model from ``connection:`` and the entry's other keys (``poll_s``...),
    each problem located where its key is written."""
    beside = dict(entry.model_extra or {})
    twice = sorted(beside.keys() & entry.connection.keys())
    if twice:
        return None, [ConfigProblem(file, line_of(tree, loc + (key,)), dotted(loc + (key,)),
                                    "given both here and under connection") for key in twice]
    try:
        return model.model_validate({**entry.connection, **beside}), []
    except ValidationError as exc:
        located = []
        for problem in _problems(exc, {}, file):
            key = problem.path.split(".", 1)[0].split("[", 1)[0]
            where = loc + ((key,) if key in beside else ("connection", key) if key else ("connection",))
            rest = problem.path[len(key):]
            located.append(ConfigProblem(file, line_of(tree, where), dotted(where) + rest, problem.message))
        return None, located


def _site_problems(devices: list[Device], entries: list[DeviceEntry | None], tree: Any, file: str,
                   plugins: Plugins) -> list[ConfigProblem]:
    index: dict[str, int] = {}
    problems = []
    for i, entry in enumerate(entries):
        if entry is None:
            continue
        if entry.name in index:
            problems.append(ConfigProblem(file, line_of(tree, ("devices", i, "name")), f"devices[{i}].name",
                                          f"duplicate device name {entry.name!r}"))
        index.setdefault(entry.name, i)
    for protocol, group in group_by_protocol(devices).items():
        for name, message in plugins.drivers[protocol].site_problems(group):
            loc = ("devices", index[name])
            problems.append(ConfigProblem(file, line_of(tree, loc), dotted(loc), message))
    return problems
