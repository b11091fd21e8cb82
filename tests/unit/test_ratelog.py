"""Rate-limited peer log lines (gateway.ratelog), the refusal log built on them, and hat's close causes."""

import logging

import pytest
from hat.drivers import net
from hat.drivers.iec60870.apci import logger as hat_logger

from gateway.northbound.iec104.masterlink import CLOSE_CAUSES, HAT_CONNECTION_LOGGER
from gateway.northbound.iec104.tls import RefusalLog
from gateway.ratelog import RateLimitedLog

log = logging.getLogger("tests.ratelog")


@pytest.fixture
def clock() -> list[float]:
    return [0.0]


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == log.name]


def test_a_flood_of_one_kind_logs_one_line_per_window_and_then_the_count(caplog, clock) -> None:
    """500 malformed frames from one host within a minute: one line; the next one after the minute says 499 more."""
    lines = RateLimitedLog(log, 60.0, clock=lambda: clock[0])
    with caplog.at_level(logging.WARNING):
        for i in range(500):
            clock[0] = i * 0.01
            lines.warning(("g", "10.0.0.9", "malformed"), "master %s sent a malformed ASDU: %s", "10.0.0.9:5000", i)
        assert _lines(caplog) == ["master 10.0.0.9:5000 sent a malformed ASDU: 0"]
        clock[0] = 61.0
        assert lines.warning(("g", "10.0.0.9", "malformed"), "master %s sent a malformed ASDU: %s", "10.0.0.9:5001",
                             500)
    assert _lines(caplog)[1:] == ["master 10.0.0.9:5001 sent a malformed ASDU: 500 (499 more since the last report)"]
    assert caplog.records[-1].funcName == "test_a_flood_of_one_kind_logs_one_line_per_window_and_then_the_count"


def test_kinds_are_limited_apart(caplog, clock) -> None:
    """Another host, or another kind of the same host, gets its own line within the window."""
    lines = RateLimitedLog(log, 60.0, clock=lambda: clock[0])
    with caplog.at_level(logging.WARNING):
        for key in (("g", "a", "malformed"), ("g", "b", "malformed"), ("g", "a", "closed"), ("h", "a", "malformed"),
                    ("g", "a", "malformed")):
            lines.warning(key, "%s", "/".join(key))
    assert _lines(caplog) == ["g/a/malformed", "g/b/malformed", "g/a/closed", "h/a/malformed"]


def test_a_flood_that_stopped_is_counted_by_the_next_line_of_any_kind(caplog, clock) -> None:
    """A kind left out after its first line and then quiet: once its window ended, the next line logged (of
    another kind) first brings out its last line and count; flush_due does the same without a new line."""
    lines = RateLimitedLog(log, 60.0, clock=lambda: clock[0])
    with caplog.at_level(logging.INFO):
        for i in range(10):
            lines.warning("a", "a %d", i)
        lines.warning("c", "c %d", 0)
        clock[0] = 30.0
        lines.warning("b", "b %d", 0)  # a's window has not ended
        assert _lines(caplog) == ["a 0", "c 0", "b 0"]
        clock[0] = 60.0
        lines.log("b", logging.INFO, "b %d", 1)  # b itself is still left out
        assert _lines(caplog)[3:] == ["a 9 (8 more like it since the last report)"]
        assert caplog.records[-1].funcName == "test_a_flood_that_stopped_is_counted_by_the_next_line_of_any_kind"
        clock[0] = 90.0
        lines.flush_due()
    assert _lines(caplog)[4:] == ["b 1"]
    assert (caplog.records[-1].levelno, caplog.records[-1].funcName) == (
        logging.INFO, "test_a_flood_that_stopped_is_counted_by_the_next_line_of_any_kind")


def test_a_quiet_kind_is_forgotten_and_logged_again_without_a_count(caplog, clock) -> None:
    """A line, nothing for a window, a line: both logged, neither with a count; forget() restarts every kind."""
    lines = RateLimitedLog(log, 60.0, clock=lambda: clock[0])
    with caplog.at_level(logging.WARNING):
        lines.warning("a", "a")
        clock[0] = 120.0
        lines.warning("a", "a")
        lines.forget()
        lines.warning("a", "a")
    assert _lines(caplog) == ["a", "a", "a"]


def test_refusals_of_one_host_are_limited_whatever_its_source_port(caplog, clock) -> None:
    """A master refused at the TLS handshake from a new source port each second: one line a minute naming the
    latest address, the count of the others; another host is logged at once."""
    refusals = RefusalLog(60.0, clock=lambda: clock[0])
    with caplog.at_level(logging.WARNING):
        for second in range(61):
            clock[0] = float(second)
            refusals.report("dispatch", f"TLS handshake of master 10.0.0.9:{5000 + second}", "no certificate",
                            host="10.0.0.9")
        refusals.report("dispatch", "TLS handshake of master 10.0.0.7:6000", "no certificate", host="10.0.0.7")
    assert [r.getMessage() for r in caplog.records] == [
        "104 group dispatch: TLS handshake of master 10.0.0.9:5000 refused: no certificate",
        "104 group dispatch: TLS handshake of master 10.0.0.9:5060 refused: no certificate "
        "(59 more since the last report)",
        "104 group dispatch: TLS handshake of master 10.0.0.7:6000 refused: no certificate"]


def _hat_connection_log(remote_port: int) -> logging.LoggerAdapter:
    """The logger adapter hat 0.10.10 gives each APCI connection (its own factory, so its ``meta`` is hat's)."""
    info = net.TcpConnectionInfo(name=None, local_addr=net.TcpAddress("127.0.0.1", 2404),
                                 remote_addr=net.TcpAddress("10.0.0.9", remote_port))
    return hat_logger.create_connection_logger(logging.getLogger(HAT_CONNECTION_LOGGER), info)


def test_hats_close_traceback_is_kept_out_of_the_log_and_its_cause_kept(caplog) -> None:
    """hat's 'read loop error' WARNING with traceback is not logged; its cause is there, once, for the connection."""
    adapter = _hat_connection_log(40001)
    try:
        raise Exception("invalid start identifier")
    except Exception as exc:
        with caplog.at_level(logging.INFO):
            adapter.warning("read loop error: %s", exc, exc_info=exc)
    assert not [r for r in caplog.records if r.name.startswith("hat")]
    assert CLOSE_CAUSES.pop(("127.0.0.1", 2404, "10.0.0.9", 40001)) == "protocol error: invalid start identifier"
    assert CLOSE_CAUSES.pop(("127.0.0.1", 2404, "10.0.0.9", 40001)) is None


def test_hats_t1_closes_are_named_and_its_records_stay_at_debug(caplog) -> None:
    """A TESTFR not confirmed and I-frames not acknowledged read as t1 expiries; at DEBUG hat's record is logged too."""
    try:
        raise TimeoutError()
    except TimeoutError as exc:
        _hat_connection_log(40002).warning("test loop error: %s", exc, exc_info=exc)
    _hat_connection_log(40003).warning("response timeout occured - closing connection")
    assert CLOSE_CAUSES.pop(("127.0.0.1", 2404, "10.0.0.9", 40002)) == "t1 expired: TESTFR act not confirmed"
    assert CLOSE_CAUSES.pop(("127.0.0.1", 2404, "10.0.0.9", 40003)) == "t1 expired: I-frames sent were not acknowledged"
    with caplog.at_level(logging.DEBUG, logger=HAT_CONNECTION_LOGGER):
        _hat_connection_log(40004).warning("response timeout occured - closing connection")
    assert [r.name for r in caplog.records] == [HAT_CONNECTION_LOGGER]
    assert CLOSE_CAUSES.pop(("127.0.0.1", 2404, "10.0.0.9", 40004)) == "t1 expired: I-frames sent were not acknowledged"
