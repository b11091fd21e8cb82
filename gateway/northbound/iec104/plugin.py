"""The IEC 104 outstation as a northbound plugin: the ``master_groups`` section of a site file,
its checks against the devices and the command policy, its summary, and the services it runs.

The core loads it through the ``gridgate.northbound`` entry point and knows nothing of 104.
"""

from pathlib import Path
from typing import Any, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, gatherResults, succeed
from zope.interface import implementer

from gateway.config.source import Problem
from gateway.interfaces import INorthboundPlugin, IStatsSource
from gateway.northbound.iec104.mapping import command_problems, group_problems
from gateway.northbound.iec104.outstation import GroupOutstation
from gateway.northbound.iec104.section import MasterGroup
from gateway.northbound.iec104.tls import summary as tls_summary, tls_problems, with_absolute_paths
from gateway.spool import Spool
from gateway.spoolthread import ThreadedSpool

EVENT_MEMORY_BYTES = 16 << 20  # per master group, while its event buffer cannot be written


@implementer(IStatsSource)
class OutstationService(Service):
    """Runs the 104 outstation of every master group; ``ready`` fires once all listen."""

    def __init__(self, outstations: list[GroupOutstation]) -> None:
        self.outstations = outstations
        self.ready: Deferred = succeed(None)

    def startService(self) -> Deferred:
        super().startService()
        self.ready = gatherResults([o.start() for o in self.outstations], consumeErrors=True)
        self.ready.addErrback(lambda failure: failure.value.subFailure.raiseException())
        return self.ready

    def stopService(self) -> Deferred:
        super().stopService()
        return DeferredList([o.stop() for o in self.outstations], consumeErrors=True)

    def stats(self) -> dict[str, Any]:
        """Each group's outstation counters, by group name."""
        return {o.group.name: o.stats() for o in self.outstations}


@implementer(INorthboundPlugin)
class OutstationPlugin:
    """IEC 60870-5-104 outstation: one listening port per master group (dispatch centre)."""

    name = "iec104"
    section = "master_groups"
    section_model = list[MasterGroup]
    section_default: list[MasterGroup] = []

    def prepare(self, section: list[MasterGroup], folder: Path) -> list[MasterGroup]:
        """TLS file names resolved against the site file's folder."""
        return with_absolute_paths(section, folder)

    def problems(self, section: list[MasterGroup], site: Any) -> list[Problem]:
        """Point tables, commands, policies, TLS files and event buffers that cannot work as written."""
        return (_shared_event_buffers(section) + tls_problems(section)
                + group_problems(section, site.devices, site.unresolved)
                + command_problems(section, site.spec.command_policy, site.devices, site.unresolved))

    def summary(self, section: list[MasterGroup]) -> list[str]:
        """One line per group (and one for its TLS) for ``gridgate check``."""
        lines = []
        for group in section:
            lines.append(f"IEC 104 group {group.name}: {group.bind}:{group.port}, common address {group.common_address}, "
                         f"{len(group.points)} points, {len(group.comm_status)} comm-status points, "
                         f"{len(group.commands)} commands, wire time {group.wire_time_zone}"
                         + (f", fail-safe after {group.failsafe.after_s:g} s" if group.failsafe else ""))
            if group.tls is not None:
                lines.append(f"  {tls_summary(group.tls)}")
        return lines

    def spool_files(self, section: list[MasterGroup], spool_path: str) -> list[str]:
        """Each group's event buffer."""
        return [event_buffer_path(g, spool_path) for g in section]

    def commands(self, section: list[MasterGroup]) -> bool:
        """True when a group maps a command or has a fail-safe."""
        return any(g.commands or g.failsafe for g in section)

    def build(self, section: list[MasterGroup], context: Any) -> Sequence[Service]:
        """One OutstationService for every group (none without groups)."""
        if not section:
            return []
        reactor = context.reactor
        return [OutstationService([GroupOutstation(g, context.table, _event_buffer(g, context.spool_path, reactor),
                                                   reactor, gate=context.gate, audit=context.audit)
                                   for g in section])]


def event_buffer_path(group: MasterGroup, spool_path: str) -> str:
    """Where a group keeps its events: its own path, or next to the spool."""
    return group.event_buffer.path or f"{spool_path}.{group.name}.events"


def _event_buffer(group: MasterGroup, spool_path: str, reactor: Any) -> ThreadedSpool:
    spec = group.event_buffer
    return ThreadedSpool(Spool(event_buffer_path(group, spool_path), spec.max_bytes, spec.max_age_s, "drop_oldest",
                               memory_bytes=EVENT_MEMORY_BYTES), reactor)


def _shared_event_buffers(section: list[MasterGroup]) -> list[Problem]:
    """Two master groups on one event-buffer file would each delete the other's events."""
    seen: dict[str, str] = {}
    problems: list[Problem] = []
    for g, group in enumerate(section):
        path = group.event_buffer.path
        if path is not None and path in seen:
            problems.append((("master_groups", g, "event_buffer", "path"),
                             f"master groups {seen[path]} and {group.name} share the event buffer {path}: "
                             f"give each its own event_buffer.path"))
        elif path is not None:
            seen[path] = group.name
    return problems


PLUGIN = OutstationPlugin()
