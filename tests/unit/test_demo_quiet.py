"""The demo's filter on Twisted's log: factory and port chatter dropped, warnings and errors kept."""

import logging
from typing import Iterator

import pytest
from twisted.internet.protocol import Factory
from twisted.logger import Logger, STDLibLogObserver

from gateway.commissioning.demo import QUIET_TWISTED


@pytest.fixture
def twisted_log(caplog: pytest.LogCaptureFixture) -> Iterator[Logger]:
    """A Twisted logger bridged to stdlib 'twisted' as `gridgate` bridges it, with the demo's filter."""
    caplog.set_level(logging.INFO, logger="twisted")
    logging.getLogger("twisted").addFilter(QUIET_TWISTED)
    try:
        yield Logger(observer=STDLibLogObserver())
    finally:
        logging.getLogger("twisted").removeFilter(QUIET_TWISTED)


def test_factory_and_port_lines_below_warning_are_dropped(twisted_log: Logger,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Starting/Stopping factory (Twisted's own format) and port open/close lines at INFO vanish."""
    twisted_log.info("Starting factory {factory!r}", factory=Factory())
    twisted_log.info("Stopping factory {factory!r}", factory=Factory())
    twisted_log.info("Site starting on 40981")
    twisted_log.info("(TCP Port 40981 Closed)")
    assert [r for r in caplog.records if r.name == "twisted"] == []  # another test's stray asyncio warning is not ours


def test_warnings_errors_and_other_info_pass(twisted_log: Logger, caplog: pytest.LogCaptureFixture) -> None:
    """A warning or error passes even when it starts like factory chatter; unrelated INFO passes too."""
    twisted_log.warn("Starting factory {factory!r} failed", factory=Factory())
    twisted_log.error("Unhandled error in Deferred")
    twisted_log.info("something else")
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.ERROR, logging.INFO]
