"""Long-running commands on the reactor: the gateway itself, and site simulators.

Both end when the reactor shuts down (Ctrl-C, SIGTERM); their stop work is hooked to the
reactor's "before shutdown" trigger so that polls end, the spool commits and sockets close.
"""

import logging
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.task import LoopingCall

from gateway.config.loader import Site
from gateway.interfaces import DriverPlugin, ISimulator, group_by_protocol
from gateway.service import Gateway

log = logging.getLogger("gridgate")


def status_line(gateway: Gateway) -> str:
    """One line a night-shift engineer can read: quality counts, spool and writer state."""
    stats = gateway.stats()
    quality, spool = stats["quality"], stats["spool"]
    skipped = sum(dev["skipped_polls"] for drv in stats["drivers"] for dev in drv.get("devices", {}).values())
    offline = [name for drv in stats["drivers"] for name, dev in drv.get("devices", {}).items() if dev["offline"]]
    writer = stats["writer"]
    influx = "no influx" if writer is None else (
        f"influx {'up' if writer.get('connected') else 'DOWN'}, sent {writer.get('sent', 0)}")
    age = spool.get("oldest_age_s")
    return (f"points good {quality['good']} NT {quality['NT']} IV {quality['IV']} unseen {quality['unseen']}; "
            f"offline {offline or 'none'}; skipped polls {skipped}; spool depth {spool.get('depth')} "
            f"oldest {'-' if age is None else f'{age:.0f} s'}; {influx}")


def start_gateway(reactor: Any, site: Site, plugins: dict[str, DriverPlugin],
                  spool_path: str | None = None) -> Gateway:
    """Start the gateway's services and stop them (in order) when the reactor shuts down.

    ``gateway.ready`` fires once it is fully up, or fails with the start-up error."""
    gateway = Gateway(site, plugins, reactor, spool_path)
    gateway.start()
    reactor.addSystemEventTrigger("before", "shutdown", gateway.stopService)
    return gateway


@inlineCallbacks
def run_gateway(reactor: Any, site: Site, plugins: dict[str, DriverPlugin], status_every_s: float) -> Any:
    """Run until the reactor stops, logging a status line every ``status_every_s``; a start-up
    failure (a 104 port that cannot be bound) fails the returned Deferred, so the process exits."""
    gateway = start_gateway(reactor, site, plugins)
    yield gateway.ready
    log.info("site %s: %d device(s) started", site.spec.site, len(site.devices))
    status = LoopingCall(lambda: log.info("%s", status_line(gateway)))
    status.clock = reactor
    status.start(status_every_s, now=False)
    yield Deferred()


@inlineCallbacks
def start_simulators(reactor: Any, site: Site, plugins: dict[str, DriverPlugin]) -> Any:
    """Start a simulator per protocol of the site; fires with them once all listen."""
    simulators: list[ISimulator] = [plugins[protocol].simulator(devices, reactor)
                                    for protocol, devices in group_by_protocol(site.devices).items()]
    yield DeferredList([s.start() for s in simulators], fireOnOneErrback=True, consumeErrors=True)
    reactor.addSystemEventTrigger("before", "shutdown",
                                  lambda: DeferredList([s.stop() for s in simulators], consumeErrors=True))
    return simulators


@inlineCallbacks
def run_simulators(reactor: Any, site: Site, plugins: dict[str, DriverPlugin],
                   control: tuple[str, int] | None = None) -> Any:
    """Serve every device of the site until the reactor stops; ``control``: (host, port) of the control API."""
    simulators = yield start_simulators(reactor, site, plugins)
    for device in site.devices:
        log.info("simulating %s (%s) at %s", device.name, device.profile.model, device.connection)
    if control is not None:
        from gateway.simcontrol import control_url, start_control
        listening = start_control(reactor, simulators, site.devices, *control)
        log.info("simulator control API at %s (GET /values, POST /set)", control_url(listening))
    yield Deferred()
