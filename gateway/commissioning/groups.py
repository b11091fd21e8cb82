"""Finding the master group a commissioning command names (``--group``), for every tool alike."""

from gateway.config.loader import Site
from gateway.northbound.iec104.section import MasterGroup


class UnknownGroup(LookupError):
    """The site has no master group of that name; the message lists the groups it has."""


def find_group(site: Site, name: str) -> tuple[int, MasterGroup]:
    """The index and spec of the group called ``name``; UnknownGroup naming the groups there are."""
    for index, group in enumerate(site.spec.master_groups):
        if group.name == name:
            return index, group
    known = ", ".join(g.name for g in site.spec.master_groups) or "none"
    raise UnknownGroup(f"no master group {name!r} in {site.file} (groups: {known})")
