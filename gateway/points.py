"""PointTable: the single truth of the latest value, quality and time of every point.

Drivers publish into it; consumers (the spool, the live table, the 104 outstations) subscribe.
A subscriber sees every sample of a batch, not only changes: the spool must persist every
observation, and deadband or change filters belong to the consumer that needs them.

Publishing is isolated: a subscriber that raises (a full disk under an event buffer) neither
reaches the driver that published nor keeps the subscribers after it from their batch. Its
failure is logged once per episode (the first error; then silence until it succeeds again,
logged as recovered) and counted per subscriber in ``failures``.
"""

import logging
from typing import Callable, Iterable, Sequence

from zope.interface import implementer

from gateway.interfaces import ISampleSink
from gateway.model import Quality, Sample

log = logging.getLogger(__name__)

Subscriber = Callable[[Sequence[Sample]], None]


@implementer(ISampleSink)
class PointTable:
    """Latest sample per point id, plus batch subscriptions."""

    def __init__(self, points: Iterable[str] = ()) -> None:
        self._latest: dict[str, Sample] = {}
        self._known = set(points)
        self._subscribers: list[Subscriber] = []
        self._failing: set[str] = set()
        self.failures: dict[str, int] = {}

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
            try:
                subscriber(samples)
            except Exception as exc:  # noqa: BLE001 - one consumer's failure stays with it
                self._failed(subscriber, exc)
            else:
                if self._failing:
                    self._recovered(subscriber)

    def _failed(self, subscriber: Subscriber, exc: Exception) -> None:
        name = _name(subscriber)
        self.failures[name] = self.failures.get(name, 0) + 1
        if name not in self._failing:
            self._failing.add(name)
            log.error("point table: subscriber %s failed (%s: %s); it is retried with every batch, further "
                      "failures counted", name, type(exc).__name__, exc)

    def _recovered(self, subscriber: Subscriber) -> None:
        name = _name(subscriber)
        if name in self._failing:
            self._failing.discard(name)
            log.info("point table: subscriber %s works again (%d failures)", name, self.failures[name])

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


def _name(subscriber: Subscriber) -> str:
    """A subscriber's name for logs: its qualified name and, for a bound method, its object's id."""
    owner = getattr(subscriber, "__self__", None)
    qualname = getattr(subscriber, "__qualname__", repr(subscriber))
    return f"{qualname}@{id(owner):x}" if owner is not None else qualname
