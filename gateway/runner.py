"""The long-running ``gridgate run``: the gateway on the reactor and its status line.

It ends when the reactor shuts down (Ctrl-C, SIGTERM); its stop work is hooked to the
reactor's "before shutdown" trigger so that polls end, the spool commits and sockets close.
"""

import logging
import math
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import LoopingCall

from gateway.config.loader import Site
from gateway.registry import Plugins
from gateway.service import Gateway

log = logging.getLogger("gridgate")


def status_line(gateway: Gateway) -> str:
    """One line a night-shift engineer can read: quality counts, spool and writer state.

    Read from the gateway's metrics, which every driver registers the same way, so the line
    needs no knowledge of any protocol's counters."""
    metrics = gateway.metrics
    quality = {labels[0][1]: int(value) for labels, value in metrics.series("gridgate_points").items()}
    offline = [dict(labels)["device"] for labels, value in metrics.series("gridgate_device_offline").items() if value]
    skipped = int(metrics.total("gridgate_skipped_polls_total"))
    influx = "no influx"
    if gateway.writer is not None:
        up = metrics.value("gridgate_influx_up")
        influx = f"influx {'up' if up else 'DOWN'}, sent {int(metrics.value('gridgate_influx_sent'))}"
    age = metrics.value("gridgate_spool_oldest_age_seconds")
    return (f"points good {quality['good']} NT {quality['NT']} IV {quality['IV']} unseen {quality['unseen']}; "
            f"offline {sorted(offline) or 'none'}; skipped polls {skipped}; "
            f"spool depth {int(metrics.value('gridgate_spool_depth'))} "
            f"oldest {'-' if math.isnan(age) else f'{age:.0f} s'}; {influx}")


def start_gateway(reactor: Any, site: Site, plugins: Plugins,
                  spool_path: str | None = None) -> Gateway:
    """Start the gateway's services and stop them (in order) when the reactor shuts down.

    ``gateway.ready`` fires once it is fully up, or fails with the start-up error."""
    gateway = Gateway(site, plugins, reactor, spool_path)
    gateway.start()
    reactor.addSystemEventTrigger("before", "shutdown", gateway.stopService)
    return gateway


@inlineCallbacks
def run_gateway(reactor: Any, site: Site, plugins: Plugins, status_every_s: float) -> Any:
    """Run until the reactor stops, logging a status line every ``status_every_s``; a start-up
    failure (a 104 port that cannot be bound) fails the returned Deferred, so the process exits."""
    gateway = start_gateway(reactor, site, plugins)
    yield gateway.ready
    log.info("site %s: %d device(s) started", site.spec.site, len(site.devices))
    status = LoopingCall(lambda: log.info("%s", status_line(gateway)))
    status.clock = reactor
    status.start(status_every_s, now=False)
    yield Deferred()
