"""Backoff: the delay sequences of the Modbus link, the InfluxDB writer and the offline probe, on a fake clock."""

import random

import pytest
from twisted.internet.task import Clock

from gateway.retry import Backoff


def _delays(backoff: Backoff, n: int) -> list[float]:
    return [backoff.failed() for _ in range(n)]


def test_modbus_link_sequence_doubles_from_half_a_second_to_8_s() -> None:
    """link.py: 0.5 s doubling to 8 s; no jitter drawn (rand 0) gives the policy itself."""
    backoff = Backoff(Clock(), 0.5, 8.0, rand=lambda: 0.0)
    assert _delays(backoff, 7) == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff.attempts == 7


def test_modbus_link_sequence_at_the_lowest_jitter_is_80_percent() -> None:
    """The jitter scales down (0.8-1.0 of the step), so the link's 8 s cap holds."""
    backoff = Backoff(Clock(), 0.5, 8.0, rand=lambda: 1.0)
    assert _delays(backoff, 6) == pytest.approx([0.4, 0.8, 1.6, 3.2, 6.4, 6.4])


def test_influx_sequence_doubles_from_1_s_to_30_s() -> None:
    """influx.py: 1 s doubling to 30 s."""
    backoff = Backoff(Clock(), 1.0, 30.0, rand=lambda: 0.0)
    assert _delays(backoff, 7) == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


@pytest.mark.parametrize(("poll_s", "expected"), [
    (0.5, [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]),
    (3.0, [3.0, 6.0, 10.0, 10.0]),
    (20.0, [20.0, 20.0, 20.0])])
def test_poller_probe_sequence_is_poll_s_doubling_to_max_10_s_or_poll_s(poll_s: float, expected: list[float]) -> None:
    """poller.py: poll_s * 2**n capped at max(10, poll_s), without jitter even when rand returns 1."""
    backoff = Backoff(Clock(), poll_s, max(10.0, poll_s), spread=0.0, rand=lambda: 1.0)
    assert _delays(backoff, len(expected)) == expected


def test_jitter_is_the_step_scaled_by_one_minus_spread_times_rand() -> None:
    """A fixed rand of 0.5 with spread 0.2 takes 10 % off every step, the capped ones included."""
    backoff = Backoff(Clock(), 1.0, 4.0, spread=0.2, rand=lambda: 0.5)
    assert _delays(backoff, 4) == pytest.approx([0.9, 1.8, 3.6, 3.6])


def test_random_jitter_stays_between_80_and_100_percent_of_the_cap() -> None:
    """Many draws at the cap: none above it, none below 80 % of it, and they do spread."""
    backoff = Backoff(Clock(), 8.0, 8.0, rand=random.Random(7).random)
    delays = _delays(backoff, 1000)
    assert min(delays) >= 6.4 and max(delays) <= 8.0
    assert max(delays) - min(delays) > 1.0


def test_ten_thousand_failures_do_not_overflow() -> None:
    """The exponent is capped: after 10,000 failures the delay is still the cap."""
    backoff = Backoff(Clock(), 0.1, 8.0, rand=lambda: 0.0)
    delays = _delays(backoff, 10_000)
    assert delays[-1] == 8.0 and max(delays) == 8.0
    assert backoff.attempts == 10_000


def test_before_any_failure_an_attempt_is_due() -> None:
    """A fresh backoff holds nothing back."""
    clock = Clock()
    clock.advance(50.0)
    backoff = Backoff(clock, 0.5, 8.0)
    assert (backoff.attempts, backoff.next_at, backoff.current_s) == (0, 0.0, 0.0)
    assert backoff.due() and backoff.remaining() == 0.0


def test_due_and_remaining_follow_the_clock_from_the_failure() -> None:
    """next_at is the clock at the failure plus the delay; due() turns True exactly then."""
    clock = Clock()
    clock.advance(100.0)
    backoff = Backoff(clock, 2.0, 8.0, rand=lambda: 0.0)
    assert backoff.failed() == 2.0
    assert backoff.next_at == 102.0 and backoff.current_s == 2.0
    assert not backoff.due() and backoff.remaining() == 2.0
    clock.advance(1.5)
    assert not backoff.due() and backoff.remaining() == 0.5
    clock.advance(0.5)
    assert backoff.due() and backoff.remaining() == 0.0
    clock.advance(3.0)
    assert backoff.due() and backoff.remaining() == 0.0


def test_succeeded_starts_over() -> None:
    """After a success the attempt is due at once and the next failure waits initial_s again."""
    clock = Clock()
    backoff = Backoff(clock, 0.5, 8.0, rand=lambda: 0.0)
    assert _delays(backoff, 4) == [0.5, 1.0, 2.0, 4.0]
    assert not backoff.due()
    backoff.succeeded()
    assert (backoff.attempts, backoff.next_at, backoff.current_s) == (0, 0.0, 0.0)
    assert backoff.due()
    assert backoff.failed() == 0.5 and backoff.next_at == 0.5


@pytest.mark.parametrize(("initial_s", "max_s", "factor", "spread"), [
    (0.0, 8.0, 2.0, 0.2), (10.0, 8.0, 2.0, 0.2), (0.5, 8.0, 0.5, 0.2), (0.5, 8.0, 2.0, 1.5), (0.5, 8.0, 2.0, -0.1)])
def test_impossible_parameters_are_refused(initial_s: float, max_s: float, factor: float, spread: float) -> None:
    """A backoff that would shrink, start at zero, exceed its cap or jitter upwards is a configuration error."""
    with pytest.raises(ValueError, match="backoff needs"):
        Backoff(Clock(), initial_s, max_s, factor, spread)
