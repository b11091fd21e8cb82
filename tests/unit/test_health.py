"""DeviceHealth on a fake clock: NT, then IV|NT and _online False, recovery, episode logging, probing, silence."""

import logging
from typing import Sequence

import pytest
from twisted.internet.task import Clock

from gateway.health import DeviceHealth, TurnValues
from gateway.model import Quality, Sample
from gateway.retry import Backoff
from tests.sinks import RecordingSink

GOOD, NT, IV = Quality.GOOD, Quality.NT, Quality.IV
T0 = 1000.0


def _health(offline_after: int = 3, probe_max_s: float | None = None, silence_s: float | None = None,
            ) -> tuple[DeviceHealth, RecordingSink, Clock]:
    """Device "d" with points p and q at T0; ``probe_max_s`` adds a jitter-free probe from 0.5 s (poll_s)."""
    clock = Clock()
    clock.advance(T0)
    sink = RecordingSink()
    probe = None if probe_max_s is None else Backoff(clock, 0.5, probe_max_s, spread=0.0)
    return DeviceHealth("d", ["p", "q"], sink, clock, offline_after, probe, silence_s), sink, clock


def _new(sink: RecordingSink, since: int) -> list[tuple[str, object, Quality]]:
    return [(s.point, s.value, s.quality) for s in sink.history[since:]]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if getattr(r, "episode", None) == "failed"]


def test_first_good_publishes_values_and_online_true_with_clock_times() -> None:
    """One batch of values (gateway time from the clock, source time if given), then _online True once."""
    health, sink, clock = _health()
    health.good({"p": (5, GOOD), "q": (1.5, GOOD)}, source_time=990.0)
    assert sink.history == [Sample("d.p", 5, GOOD, 990.0, T0), Sample("d.q", 1.5, GOOD, 990.0, T0),
                            Sample("d._online", True, GOOD, T0, T0)]
    clock.advance(1.0)
    health.good({"p": (6, GOOD)})
    assert sink.history[3:] == [Sample("d.p", 6, GOOD, T0 + 1, T0 + 1)]


def test_first_failure_publishes_nt_once_with_last_values() -> None:
    """Every point NT with its last value at the first failure; the second failure publishes nothing."""
    health, sink, clock = _health(offline_after=3)
    health.good({"p": (5, GOOD)})
    seen = len(sink.history)
    clock.advance(2.0)
    health.failed("timeout")
    assert sink.history[seen:] == [Sample("d.p", 5, NT, T0 + 2, T0 + 2), Sample("d.q", None, NT, T0 + 2, T0 + 2)]
    health.failed("timeout")
    assert len(sink.history) == seen + 2
    assert health.failures == 2 and not health.offline


def test_offline_after_failures_publishes_iv_nt_and_online_false() -> None:
    """At exactly offline_after failures: every point IV|NT (last value kept), then _online False; not again."""
    health, sink, _ = _health(offline_after=2)
    health.good({"p": (5, GOOD), "q": (7, GOOD)})
    seen = len(sink.history)
    health.failed("timeout")
    health.failed("timeout")
    assert health.offline
    assert _new(sink, seen) == [("d.p", 5, NT), ("d.q", 7, NT), ("d.p", 5, IV | NT), ("d.q", 7, IV | NT),
                                ("d._online", False, GOOD)]
    health.failed("timeout")
    assert len(sink.history) == seen + 5


def test_offline_after_one_publishes_nt_then_iv_at_the_same_failure() -> None:
    """As the poller did: the NT batch, the IV|NT batch and _online False all at the first failure."""
    health, sink, _ = _health(offline_after=1)
    health.failed("connection")
    assert _new(sink, 0) == [("d.p", None, NT), ("d.q", None, NT), ("d.p", None, IV | NT),
                             ("d.q", None, IV | NT), ("d._online", False, GOOD)]


def test_recovery_publishes_fresh_values_and_online_true_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    """The first good exchange after going offline: fresh GOOD values, _online True, one INFO with the causes."""
    caplog.set_level(logging.INFO, logger="gateway.health")
    health, sink, _ = _health(offline_after=2)
    health.good({"p": (5, GOOD), "q": (7, GOOD)})
    for cause in ("timeout", "timeout", "crc"):
        health.failed(cause)
    seen = len(sink.history)
    health.good({"p": (6, GOOD), "q": (8, GOOD)})
    health.good({"p": (6, GOOD), "q": (8, GOOD)})
    assert _new(sink, seen) == [("d.p", 6, GOOD), ("d.q", 8, GOOD), ("d._online", True, GOOD),
                                ("d.p", 6, GOOD), ("d.q", 8, GOOD)]
    recovered = [r for r in caplog.records if getattr(r, "episode", None) == "recovered"]
    assert [(r.levelno, r.getMessage()) for r in recovered] == [
        (logging.INFO, "d: answering again after 3 failed poll(s) (timeout 2, crc 1)")]
    assert health.failures == 0 and not health.offline
    assert health.causes == {"timeout": 2, "crc": 1}


def test_iv_values_do_not_replace_the_last_value() -> None:
    """An IV sample is published but the NT at the next failure shows the value before it; NT alone does replace it."""
    health, sink, _ = _health()
    health.good({"p": (5, GOOD), "q": (1, GOOD)})
    health.publish({"p": (None, IV), "q": (2, NT)})
    assert (health.last("p"), health.last("q")) == (5, 2)
    assert sink.get("d.p").quality == IV
    seen = len(sink.history)
    health.failed("timeout")
    assert _new(sink, seen) == [("d.p", 5, NT), ("d.q", 2, NT)]


def test_publish_alone_does_not_end_an_episode_or_announce_online() -> None:
    """A readback after a command goes through publish(): no _online, the failure count stays."""
    health, sink, _ = _health()
    health.failed("timeout")
    seen = len(sink.history)
    health.publish({"p": (3, GOOD)})
    assert _new(sink, seen) == [("d.p", 3, GOOD)]
    assert health.failures == 1


def test_each_cause_logs_one_warning_per_episode(caplog: pytest.LogCaptureFixture) -> None:
    """Five failures of two causes log two WARNINGs (NT then IV by then); after a recovery the next episode logs again."""
    caplog.set_level(logging.INFO, logger="gateway.health")
    health, _, _ = _health(offline_after=2)
    for cause in ("timeout", "timeout", "timeout", "crc", "crc"):
        health.failed(cause, RuntimeError(f"{cause} detail"))
    assert _warnings(caplog) == ["d: poll failed (timeout), points NT: timeout detail",
                                 "d: poll failed (crc), points IV: crc detail"]
    offline = [r.getMessage() for r in caplog.records if "declared offline" in r.getMessage()]
    assert offline == ["d: declared offline after 2 failed polls, points IV"]
    assert all(r.exc_info is None for r in caplog.records)
    health.good({})
    health.failed("timeout")
    assert _warnings(caplog)[2:] == ["d: poll failed (timeout), points NT: no detail"]
    assert health.causes == {"timeout": 4, "crc": 2}


def test_internal_failures_log_their_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """A bug contained as cause "internal" is logged with exc_info; the record carries episode and cause."""
    health, _, _ = _health()
    try:
        [][1]
    except IndexError as exc:
        health.failed("internal", exc)
    (record,) = [r for r in caplog.records if getattr(r, "episode", None) == "failed"]
    assert record.cause == "internal"
    assert record.exc_info is not None and record.exc_info[0] is IndexError


def test_an_offline_device_is_probed_with_backoff() -> None:
    """Offline: the next exchange waits poll_s * 2**n (capped); a good exchange makes it due at once."""
    health, _, clock = _health(offline_after=2, probe_max_s=10.0)
    health.failed("timeout")
    assert health.probe_due()  # not offline yet: polls keep their period
    waits = []
    for _ in range(7):
        health.failed("timeout")
        assert not health.probe_due()
        waits.append(_time_until_due(health, clock))
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    health.failed("timeout")
    health.good({"p": (1, GOOD)})
    assert health.probe_due()
    health.failed("timeout")
    health.failed("timeout")  # offline again: the probe starts over at poll_s
    assert _time_until_due(health, clock) == 0.5


def _time_until_due(health: DeviceHealth, clock: Clock, step: float = 0.25) -> float:
    """Advance the clock in steps until the probe is due; the time that took."""
    start = clock.seconds()
    while not health.probe_due():
        clock.advance(step)
    return clock.seconds() - start


def test_probe_gating_starts_at_poll_s_when_declared_offline() -> None:
    """The failure that declares the device offline already sets the first probe, poll_s * 2**0 later."""
    clock = Clock()
    health = DeviceHealth("d", ["p"], RecordingSink(), clock, 2, Backoff(clock, 0.5, 10.0, spread=0.0))
    health.failed("timeout")
    health.failed("timeout")
    assert not health.probe_due()
    clock.advance(0.25)
    assert not health.probe_due()
    clock.advance(0.25)
    assert health.probe_due()


def test_without_a_probe_an_offline_device_is_always_due() -> None:
    """No Backoff given: offline changes the quality, not the schedule."""
    health, _, _ = _health(offline_after=1)
    health.failed("timeout")
    assert health.offline and health.probe_due()


def test_silence_watchdog_fails_the_device_after_silence_s() -> None:
    """Nothing heard for silence_s: a "silence" failure (NT); another silence_s: offline (IV|NT, _online False)."""
    health, sink, clock = _health(offline_after=2, silence_s=2.0)
    health.start()
    clock.advance(1.5)
    assert health.failures == 0 and sink.history == []
    clock.advance(0.5)
    assert health.failures == 1 and health.causes == {"silence": 1}
    assert _new(sink, 0) == [("d.p", None, NT), ("d.q", None, NT)]
    clock.advance(1.5)
    assert health.failures == 1
    clock.advance(0.5)
    assert health.offline and sink.get("d._online").value is False
    health.stop()


def test_silence_watchdog_stays_quiet_while_the_device_is_heard(caplog: pytest.LogCaptureFixture) -> None:
    """heard() and good() every second keep it quiet for 20 s; 2 s of silence after the last one fails it."""
    health, _, clock = _health(silence_s=2.0)
    health.start()
    for second in range(20):
        clock.advance(1.0)
        if second % 2:
            health.heard()
        else:
            health.good({"p": (second, GOOD)})
    assert health.failures == 0
    clock.advance(1.5)
    assert health.failures == 0
    clock.advance(0.5)
    assert health.failures == 1
    assert _warnings(caplog) == ["d: poll failed (silence), points NT: d: nothing heard for 2 s"]
    health.stop()


def test_stop_stops_the_watchdog() -> None:
    """After stop() no time passing fails the device, and nothing is left scheduled on the clock."""
    health, _, clock = _health(silence_s=2.0)
    health.start()
    assert len(clock.getDelayedCalls()) == 1
    health.stop()
    clock.advance(100.0)
    assert health.failures == 0 and clock.getDelayedCalls() == []


def test_without_silence_s_start_and_stop_do_nothing() -> None:
    """A polled device has no watchdog: start() schedules nothing."""
    health, _, clock = _health()
    health.start()
    assert clock.getDelayedCalls() == []
    clock.advance(1000.0)
    health.stop()
    assert health.failures == 0


class _BrokenSink:
    def publish(self, samples: Sequence[Sample]) -> None:
        raise OSError("disk full")


def test_a_watchdog_stopped_by_an_error_says_so(caplog: pytest.LogCaptureFixture) -> None:
    """A sink raising inside the watchdog ends the loop; that is logged at ERROR, not lost."""
    clock = Clock()
    health = DeviceHealth("d", ["p"], _BrokenSink(), clock, 3, silence_s=1.0)
    health.start()
    clock.advance(1.0)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == ["d: silence watchdog stopped by an unexpected error"]
    assert errors[0].exc_info is not None and errors[0].exc_info[0] is OSError
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize(("offline_after", "silence_s", "offline_after_s"),
                         [(0, None, None), (3, 0.0, None), (3, -1.0, None), (None, None, None), (None, None, 0.0)])
def test_impossible_parameters_are_refused(offline_after: int | None, silence_s: float | None,
                                           offline_after_s: float | None) -> None:
    """offline_after below 1 would start offline; a silence window of zero would spin; without
    either offline rule a device would never go offline."""
    with pytest.raises(ValueError, match="give offline_after >= 1 or offline_after_s > 0"):
        DeviceHealth("d", ["p"], RecordingSink(), Clock(), offline_after, silence_s=silence_s,
                     offline_after_s=offline_after_s)


def test_offline_after_seconds_declares_a_failing_device_offline_by_time() -> None:
    """A pushing driver counts time, not requests: NT at the first failure, IV and _online False
    once failures have lasted offline_after_s, however many failures were reported meanwhile."""
    sink, clock = RecordingSink(), Clock()
    health = DeviceHealth("d", ["p"], sink, clock, None, offline_after_s=10.0)
    health.good({"p": (1.5, Quality.GOOD)})
    health.failed("connection")
    for _ in range(50):
        health.failed("connection")
    assert sink.get("d.p").quality == Quality.NT and not health.offline
    clock.advance(9.9)
    assert not health.offline
    clock.advance(0.1)
    assert health.offline and sink.get("d.p").quality == Quality.IV | Quality.NT
    assert (sink.get("d.p").value, sink.get("d._online").value) == (1.5, False)
    health.good({"p": (2.0, Quality.GOOD)})
    assert not health.offline and sink.get("d._online").value is True


def test_recovery_before_offline_after_seconds_cancels_the_timer() -> None:
    sink, clock = RecordingSink(), Clock()
    health = DeviceHealth("d", ["p"], sink, clock, None, offline_after_s=10.0)
    health.failed("connection")
    clock.advance(5)
    health.good({"p": (1.0, Quality.GOOD)})
    assert clock.getDelayedCalls() == []
    clock.advance(10)
    assert not health.offline and sink.get("d._online").value is True


def test_a_turn_with_a_point_twice_publishes_both_values_in_order_each_with_its_time() -> None:
    """TurnValues: p twice in one turn makes two batches, none lost; the last valid value of the
    turn counts before the one published earlier."""
    health, sink, _ = _health()
    health.good({"p": (1, GOOD)})
    turn = TurnValues()
    assert turn.last_valid("p", health.last("p")) == 1
    turn.put("p", 2, GOOD, 10.0)
    turn.put("q", 5, GOOD, None)
    turn.put("p", 3, IV, 11.0)
    assert turn.last_valid("p", health.last("p")) == 2
    since = len(sink.history)
    turn.publish(health)
    assert [(s.point, s.value, s.quality, s.source_time) for s in sink.history[since:]] == [
        ("d.p", 2, GOOD, 10.0), ("d.q", 5, GOOD, T0), ("d.p", 3, IV, 11.0)]
