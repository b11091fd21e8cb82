"""Running a site (simulators + gateway) on the test reactor, and waiting on it.

conftest imports this module before pytest-twisted installs the asyncio reactor, so the reactor
is imported where it is used, never at module level.
"""

import time
from pathlib import Path
from typing import Any, Callable

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater

from gateway.config.loader import load_site
from gateway.model import Quality
from gateway.registry import load_plugins
from gateway.service import Gateway
from gateway.simulation.runner import start_simulators


class Running:
    """A site's simulators and gateway on the test reactor."""

    def __init__(self, site_path: Path) -> None:
        self.plugins = load_plugins()
        self.site = load_site(site_path, self.plugins)
        self.simulators: list = []
        self.gateway: Gateway | None = None

    @inlineCallbacks
    def start(self) -> Any:
        from twisted.internet import reactor
        self.simulators = yield start_simulators(reactor, self.site, self.plugins)
        yield self.start_gateway()

    @inlineCallbacks
    def start_gateway(self) -> Any:
        from twisted.internet import reactor
        self.gateway = Gateway(self.site, self.plugins, reactor)
        yield self.gateway.start()

    def all_good(self) -> bool:
        """Every profile point of every device has a good sample."""
        table = self.gateway.table
        return all((s := table.get(f"{d.name}.{p.id}")) is not None and s.quality == Quality.GOOD
                   for d in self.site.devices for p in d.profile.points)

    @inlineCallbacks
    def stop(self) -> Any:
        if self.gateway is not None and self.gateway.running:
            yield self.gateway.stopService()
        for simulator in self.simulators:
            yield simulator.stop()


def until(predicate: Callable[[], Any], timeout_s: float = 10.0) -> Deferred:
    """Poll ``predicate()`` on the reactor every 50 ms until it holds; fails after ``timeout_s``."""
    from twisted.internet import reactor

    @inlineCallbacks
    def loop() -> Any:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s")
            yield deferLater(reactor, 0.05, lambda: None)
    return loop()


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.1) -> None:
    """Blocking twin of ``until`` for tests that drive subprocesses: poll ``predicate()`` until it holds.

    Raises AssertionError naming ``what`` after ``timeout_s``. Never call it on the reactor thread.
    """
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)
