"""The long-running ``gridgate simulate``: every device of a site served by its protocol's simulator.

It ends when the reactor shuts down (Ctrl-C, SIGTERM); the simulators' stop is hooked to the
reactor's "before shutdown" trigger so that their sockets close.
"""

import logging
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks

from gateway.config.loader import Site
from gateway.interfaces import ISimulator, ISimulatorPlugin
from gateway.model import group_by_protocol
from gateway.registry import Plugins

log = logging.getLogger("gridgate")


@inlineCallbacks
def start_simulators(reactor: Any, site: Site, plugins: Plugins) -> Any:
    """Start a simulator per protocol of the site; fires with them once all listen. A protocol
    whose plugin has no simulator (``ISimulatorPlugin`` is optional) is logged and left out."""
    simulators: list[ISimulator] = []
    for protocol, devices in group_by_protocol(site.devices).items():
        plugin = plugins.drivers[protocol]
        if ISimulatorPlugin.providedBy(plugin):
            simulators.append(plugin.simulator(devices, reactor))
        else:
            log.warning("protocol %s has no simulator: %s not simulated", protocol,
                        ", ".join(d.name for d in devices))
    yield DeferredList([s.start() for s in simulators], fireOnOneErrback=True, consumeErrors=True)
    reactor.addSystemEventTrigger("before", "shutdown",
                                  lambda: DeferredList([s.stop() for s in simulators], consumeErrors=True))
    return simulators


@inlineCallbacks
def run_simulators(reactor: Any, site: Site, plugins: Plugins,
                   control: tuple[str, int] | None = None) -> Any:
    """Serve every device of the site until the reactor stops; ``control``: (host, port) of the control API."""
    simulators = yield start_simulators(reactor, site, plugins)
    for device in (d for d in site.devices if ISimulatorPlugin.providedBy(plugins.drivers[d.profile.protocol])):
        log.info("simulating %s (%s) at %s", device.name, device.profile.model, device.connection)
    if control is not None:
        from gateway.simulation.simcontrol import control_url, start_control
        listening = start_control(reactor, simulators, site.devices, *control)
        log.info("simulator control API at %s (GET /values, POST /set)", control_url(listening))
    yield Deferred()
