"""A sample sink for tests that records batches and lets a test await a condition on them."""

from typing import Callable, Sequence

from twisted.internet.defer import Deferred
from zope.interface import implementer

from gateway.interfaces import ISampleSink
from gateway.model import Sample
from gateway.points import PointTable


@implementer(ISampleSink)
class RecordingSink(PointTable):
    """A PointTable that also keeps every sample and wakes waiters on each batch."""

    def __init__(self) -> None:
        super().__init__()
        self.history: list[Sample] = []
        self._waiters: list[tuple[Callable[[], bool], Deferred]] = []

    def publish(self, samples: Sequence[Sample]) -> None:
        self.history.extend(samples)
        super().publish(samples)
        for waiter in list(self._waiters):
            condition, d = waiter
            if condition():
                self._waiters.remove(waiter)
                d.callback(None)

    def wait_for(self, condition: Callable[[], bool], reactor, timeout_s: float = 10.0) -> Deferred:
        """Fires once ``condition()`` holds after a batch; fails with TimeoutError after ``timeout_s``."""
        d: Deferred = Deferred()
        if condition():
            d.callback(None)
            return d
        self._waiters.append((condition, d))
        return d.addTimeout(timeout_s, reactor)

    def samples_of(self, point: str) -> list[Sample]:
        """Every sample recorded for ``point``, oldest first."""
        return [s for s in self.history if s.point == point]
