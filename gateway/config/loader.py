"""Load a site file and every profile it names; collect every problem, then fail closed.

Like Buildbot's config checks: nothing stops at the first error, every finding is reported as
``file:line: path: message``, and a site with any finding is not started.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel, ValidationError

from gateway.config.profile import ProfileSpec
from gateway.config.site import SiteSpec
from gateway.config.source import ConfigErrors, ConfigProblem, dotted, line_of, load_yaml
from gateway.interfaces import Device, DriverPlugin, group_by_protocol
from gateway.northbound.mapping import command_problems, group_problems
from gateway.northbound.tls import tls_problems, with_absolute_paths

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

    def __init__(self, plugins: Mapping[str, DriverPlugin]) -> None:
        self.plugins = plugins
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
        plugin = self.plugins.get(protocol) if isinstance(protocol, str) else None
        if plugin is None:
            known = ", ".join(sorted(self.plugins)) or "none installed"
            return None, [ConfigProblem(file, line_of(tree, ("protocol",)), "protocol",
                                        f"unknown protocol {protocol!r} (known: {known})")]
        profile, problems = validate(plugin.profile_model, tree, file)
        checked, kept = (profile, None) if profile is not None else _valid_part(plugin, tree, problems)
        if checked is not None:
            for loc, message in _point_problems(checked) + plugin.profile_problems(checked):
                if kept is not None:
                    loc = (loc[0], kept[loc[1]]) + tuple(loc[2:])
                problems.append(ConfigProblem(file, line_of(tree, loc), dotted(loc), message))
        return (None if problems else profile), problems


def _valid_part(plugin: DriverPlugin, tree: Any, problems: list[ConfigProblem]) -> tuple[ProfileSpec | None, list[int] | None]:
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


def _point_problems(profile: ProfileSpec) -> list[tuple[tuple, str]]:
    seen: dict[str, int] = {}
    found = []
    for index, point in enumerate(profile.points):
        if point.id in seen:
            found.append((("points", index, "id"), f"duplicate point id {point.id!r} (first at points[{seen[point.id]}])"))
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


def load_site(path: Path, plugins: Mapping[str, DriverPlugin]) -> Site:
    """The validated site at ``path``; ConfigErrors listing every problem otherwise."""
    file = str(path)
    tree = load_yaml(path)
    spec, problems = validate(SiteSpec, tree, file)
    if spec is None:
        raise ConfigErrors(problems)
    spec = spec.model_copy(update={"master_groups": with_absolute_paths(spec.master_groups, path.parent)})
    problems += [ConfigProblem(file, line_of(tree, loc), dotted(loc), message) for loc, message in tls_problems(spec.master_groups)]
    profiles = ProfileLoader(plugins)
    devices: list[Device] = []
    for index, entry in enumerate(spec.devices):
        device, found = _resolve_device(index, entry, spec, path, tree, profiles)
        problems += found
        if device is not None and entry.enabled:
            devices.append(device)
    problems += _site_problems(devices, spec, tree, file, plugins)
    if not problems:
        found = group_problems(spec.master_groups, devices)
        found += command_problems(spec.master_groups, spec.command_policy, devices)
        problems += [ConfigProblem(file, line_of(tree, loc), dotted(loc), message) for loc, message in found]
    if problems:
        raise ConfigErrors(problems)
    return Site(spec, path, devices)


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
    plugin = profiles.plugins[profile.protocol]
    connection, problems = validate(plugin.connection_model, entry.connection, file, loc + ("connection",))
    problems = [ConfigProblem(p.file, line_of(tree, _loc_of(p.path, loc)), p.path, p.message) for p in problems]
    if connection is None:
        return None, problems
    tags = {"site": spec.site, "device": entry.name, "model": profile.model, **entry.tags}
    return Device(entry.name, profile, profile_path, connection, entry.poll_s, entry.timeout_s,
                  entry.retries, entry.offline_after, tags), []


def _loc_of(path: str, device_loc: tuple) -> tuple:
    key = path.rsplit(".", 1)[-1]
    return device_loc + ("connection", key)


def _site_problems(devices: list[Device], spec: SiteSpec, tree: Any, file: str,
                   plugins: Mapping[str, DriverPlugin]) -> list[ConfigProblem]:
    index = {entry.name: i for i, entry in enumerate(spec.devices)}
    problems = []
    for i, entry in enumerate(spec.devices):
        if index[entry.name] != i:
            problems.append(ConfigProblem(file, line_of(tree, ("devices", i, "name")), f"devices[{i}].name",
                                          f"duplicate device name {entry.name!r}"))
    for protocol, group in group_by_protocol(devices).items():
        for name, message in plugins[protocol].site_problems(group):
            loc = ("devices", index[name])
            problems.append(ConfigProblem(file, line_of(tree, loc), dotted(loc), message))
    return problems
