"""SampleBatcher (gateway.batching): per-item pushes become one publish per reactor turn, in order."""

import logging
from typing import Sequence

import pytest
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gateway.batching import SampleBatcher
from gateway.interfaces import ISampleSink
from gateway.model import Quality, Sample


@implementer(ISampleSink)
class ListSink:
    """Keeps every batch it is given; raises instead for the batch numbers in ``fail_on`` (0-based)."""

    def __init__(self, fail_on: Sequence[int] = ()) -> None:
        self.batches: list[list[Sample]] = []
        self.calls = 0
        self._fail_on = set(fail_on)

    def publish(self, samples: Sequence[Sample]) -> None:
        call, self.calls = self.calls, self.calls + 1
        if call in self._fail_on:
            raise RuntimeError(f"sink broke on batch {call}")
        self.batches.append(list(samples))


def sample(i: int) -> Sample:
    return Sample(f"dev.p{i}", float(i), Quality.GOOD, 1000.0 + i, 2000.0 + i)


def test_it_is_a_sample_sink() -> None:
    assert verifyObject(ISampleSink, SampleBatcher(ListSink(), Clock()))


def test_many_adds_in_one_turn_become_one_publish_in_the_next() -> None:
    sink, clock = ListSink(), Clock()
    batcher = SampleBatcher(sink, clock)
    for i in range(500):
        batcher.add(sample(i))
    batcher.publish([sample(500), sample(501)])
    assert sink.batches == []
    assert batcher.pending == 502
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(0)
    assert [len(b) for b in sink.batches] == [502]
    assert batcher.pending == 0
    assert clock.getDelayedCalls() == []
    assert batcher.stats() == {"batches": 1, "items": 502, "largest": 502, "failed_batches": 0}


def test_each_turn_gets_its_own_batch_and_an_idle_turn_publishes_nothing() -> None:
    sink, clock = ListSink(), Clock()
    batcher = SampleBatcher(sink, clock)
    batcher.publish([sample(0), sample(1)])
    clock.advance(0)
    clock.advance(0)
    batcher.add(sample(2))
    clock.advance(0)
    batcher.publish([])
    clock.advance(0)
    assert sink.batches == [[sample(0), sample(1)], [sample(2)]]
    assert batcher.stats() == {"batches": 2, "items": 3, "largest": 2, "failed_batches": 0}


def test_order_is_kept_within_and_across_batches() -> None:
    sink, clock = ListSink(), Clock()
    batcher = SampleBatcher(sink, clock, max_items=4)
    expected = [sample(i) for i in range(10)]
    for s in expected[:3]:
        batcher.add(s)
    batcher.publish(expected[3:7])
    clock.advance(0)
    batcher.publish(expected[7:])
    clock.advance(0)
    assert [s for batch in sink.batches for s in batch] == expected
    assert [[s.point for s in b] for b in sink.batches] == [
        ["dev.p0", "dev.p1", "dev.p2", "dev.p3"], ["dev.p4", "dev.p5", "dev.p6"], ["dev.p7", "dev.p8", "dev.p9"]]


def test_max_items_flushes_at_once_and_the_rest_waits_for_the_turn() -> None:
    sink, clock = ListSink(), Clock()
    batcher = SampleBatcher(sink, clock, max_items=3)
    batcher.publish([sample(i) for i in range(7)])
    assert [[s.point for s in b] for b in sink.batches] == [["dev.p0", "dev.p1", "dev.p2"],
                                                           ["dev.p3", "dev.p4", "dev.p5"]]
    assert batcher.pending == 1
    clock.advance(0)
    assert [[s.point for s in b] for b in sink.batches][2:] == [["dev.p6"]]
    assert batcher.stats() == {"batches": 3, "items": 7, "largest": 3, "failed_batches": 0}


def test_max_items_reached_exactly_leaves_no_call_scheduled() -> None:
    sink, clock = ListSink(), Clock()
    batcher = SampleBatcher(sink, clock, max_items=2)
    batcher.publish([sample(0), sample(1)])
    assert [len(b) for b in sink.batches] == [2]
    assert clock.getDelayedCalls() == []


def test_max_items_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_items must be at least 1, not 0"):
        SampleBatcher(ListSink(), Clock(), max_items=0)


def test_flush_publishes_now_and_cancels_the_scheduled_call() -> None:
    sink, clock = ListSink(), Clock()
    batcher = SampleBatcher(sink, clock)
    batcher.publish([sample(0), sample(1)])
    scheduled = list(clock.getDelayedCalls())
    assert len(scheduled) == 1
    batcher.flush()
    assert sink.batches == [[sample(0), sample(1)]]
    assert clock.getDelayedCalls() == []
    assert scheduled[0].cancelled
    clock.advance(0)
    clock.advance(1)
    assert sink.calls == 1
    batcher.add(sample(2))
    clock.advance(0)
    assert sink.batches == [[sample(0), sample(1)], [sample(2)]]


def test_flush_with_nothing_pending_publishes_nothing() -> None:
    sink = ListSink()
    SampleBatcher(sink, Clock()).flush()
    assert sink.calls == 0


def test_a_failing_sink_drops_the_batch_logs_once_and_later_batches_flow(caplog) -> None:
    sink, clock = ListSink(fail_on=[0, 1]), Clock()
    batcher = SampleBatcher(sink, clock)
    with caplog.at_level(logging.ERROR, logger="gateway.batching"):
        batcher.publish([sample(0), sample(1)])
        clock.advance(0)
        batcher.add(sample(2))
        clock.advance(0)
        batcher.add(sample(3))
        clock.advance(0)
    errors = [r for r in caplog.records if r.name == "gateway.batching"]
    assert len(errors) == 1
    assert errors[0].levelno == logging.ERROR
    assert "failed on a batch of 2 item(s)" in errors[0].getMessage()
    assert str(errors[0].exc_info[1]) == "sink broke on batch 0"
    assert sink.batches == [[sample(3)]]  # the failed batches are not re-queued
    assert batcher.pending == 0
    assert batcher.stats() == {"batches": 1, "items": 1, "largest": 1, "failed_batches": 2}


def test_a_sink_failing_again_after_recovering_is_logged_again(caplog) -> None:
    sink, clock = ListSink(fail_on=[0, 2]), Clock()
    batcher = SampleBatcher(sink, clock)
    with caplog.at_level(logging.ERROR, logger="gateway.batching"):
        for i in range(3):
            batcher.add(sample(i))
            clock.advance(0)
    assert [str(r.exc_info[1]) for r in caplog.records if r.name == "gateway.batching"] == [
        "sink broke on batch 0", "sink broke on batch 2"]
    assert sink.batches == [[sample(1)]]
    assert batcher.stats()["failed_batches"] == 2
