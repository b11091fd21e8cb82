"""The installed plugins: found through entry points, checked against their interface.

A plugin is code from another distribution; the core must not trust it blindly. Each one is
checked with ``zope.interface.verify.verifyObject`` when loaded, and two plugins claiming one name
are refused (before, the second silently replaced the first), each message naming the
distributions involved so the operator knows which package to remove or fix.
"""

from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Iterable

from zope.interface import Interface
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from gateway.errors import GatewayError
from gateway.interfaces import IDriverPlugin, INorthboundPlugin

DRIVERS = "gridgate.drivers"
NORTHBOUND = "gridgate.northbound"


class PluginError(GatewayError):
    """An installed plugin cannot be used: it fails its interface or its name is taken."""


@dataclass(frozen=True)
class Plugins:
    """Every usable plugin, by name: protocol drivers and northbound sides."""

    drivers: dict[str, Any] = field(default_factory=dict)
    northbound: dict[str, Any] = field(default_factory=dict)


def origin(entry: EntryPoint) -> str:
    """The distribution (name and version) an entry point comes from, for error messages."""
    dist = entry.dist
    return f"{dist.metadata['Name']} {dist.version}" if dist is not None else f"unknown distribution ({entry.value})"


def verified(entry: EntryPoint, interface: type[Interface]) -> Any:
    """The object ``entry`` names, once it provides ``interface``; PluginError otherwise."""
    plugin = entry.load()
    try:
        verifyObject(interface, plugin)
    except Invalid as exc:
        raise PluginError(f"plugin {entry.name!r} ({entry.value}) from {origin(entry)} does not provide "
                          f"{interface.__name__}: {exc}") from None
    return plugin


def by_name(entries: Iterable[EntryPoint], interface: type[Interface]) -> dict[str, Any]:
    """Verified plugins of one entry point group keyed by their ``name``; a name claimed twice is refused."""
    plugins: dict[str, Any] = {}
    origins: dict[str, EntryPoint] = {}
    for entry in entries:
        plugin = verified(entry, interface)
        if plugin.name in plugins:
            first = origins[plugin.name]
            raise PluginError(f"two plugins are named {plugin.name!r}: {first.value} from {origin(first)} and "
                              f"{entry.value} from {origin(entry)}; uninstall one")
        plugins[plugin.name], origins[plugin.name] = plugin, entry
    return plugins


def load_plugins() -> Plugins:
    """Every installed plugin, verified; PluginError naming the distributions when one cannot be used."""
    return Plugins(drivers=by_name(entry_points(group=DRIVERS), IDriverPlugin),
                   northbound=by_name(entry_points(group=NORTHBOUND), INorthboundPlugin))
