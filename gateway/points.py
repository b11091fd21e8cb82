"""PointTable: the single truth of the latest value, quality and time of every point.

Drivers publish into it; consumers (the spool, the live table, later the 104 outstation)
subscribe. A subscriber sees every sample of a batch, not only changes: the spool must persist
every observation, and deadband or change filters belong to the consumer that needs them.
"""

from typing import Callable, Iterable, Sequence

from zope.interface import implementer

from gateway.interfaces import ISampleSink
from gateway.model import Quality, Sample

Subscriber = Callable[[Sequence[Sample]], None]


@implementer(ISampleSink)
class PointTable:
    """Latest sample per point id, plus batch subscriptions."""

    def __init__(self, points: Iterable[str] = ()) -> None:
        self._latest: dict[str, Sample] = {}
        self._known = set(points)
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber`` with every published batch; returns the unsubscribe function."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def publish(self, samples: Sequence[Sample]) -> None:
        """Record a batch as the latest values, then hand it to every subscriber."""
        latest = self._latest
        for sample in samples:
            latest[sample.point] = sample
        for subscriber in self._subscribers:
            subscriber(samples)

    def get(self, point: str) -> Sample | None:
        """The latest sample of ``point``, or None before its first observation."""
        return self._latest.get(point)

    def snapshot(self) -> dict[str, Sample]:
        """A copy of the latest sample of every observed point."""
        return dict(self._latest)

    def count_by_quality(self) -> dict[str, int]:
        """How many points are good, NT or IV (IV wins over NT), for status lines."""
        counts = {"good": 0, "NT": 0, "IV": 0, "unseen": len(self._known - self._latest.keys())}
        for sample in self._latest.values():
            if sample.quality & Quality.IV:
                counts["IV"] += 1
            elif sample.quality & Quality.NT:
                counts["NT"] += 1
            else:
                counts["good"] += 1
        return counts
