"""PointTable: a failing subscriber is isolated, counted and logged once per episode."""

import logging

import pytest

from gateway.model import Quality, Sample
from gateway.points import PointTable


def _sample(value: float) -> list[Sample]:
    return [Sample("d.p", value, Quality.GOOD, 1.0, 1.0)]


def test_a_failing_subscriber_reaches_neither_the_publisher_nor_the_next_subscriber(caplog: pytest.LogCaptureFixture) -> None:
    """The second subscriber still gets every batch; the failure is logged once, counted, and its recovery logged."""
    table, seen, broken = PointTable(), [], [True]

    def flaky(samples: list[Sample]) -> None:
        if broken[0]:
            raise OSError("database or disk is full")

    table.subscribe(flaky)
    table.subscribe(lambda samples: seen.extend(s.value for s in samples))
    with caplog.at_level(logging.INFO, logger="gateway.points"):
        for value in (1.0, 2.0, 3.0):
            table.publish(_sample(value))
        broken[0] = False
        table.publish(_sample(4.0))
    assert seen == [1.0, 2.0, 3.0, 4.0]
    assert table.get("d.p").value == 4.0
    assert list(table.failures.values()) == [3]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("failed" in m for m in messages) == 1 and sum("works again" in m for m in messages) == 1
