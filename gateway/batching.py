"""Turn a push driver's per-item callbacks into one batch per reactor turn.

Push libraries (OPC UA data-change callbacks, a 104 master receiving one ASDU per object) call
back once per item. Passed on one by one, every sample would cost the PointTable, the spool and
the 104 event path a call of their own, and a burst of thousands of changes would arrive as
thousands of one-sample batches. ``TurnBatcher`` collects what arrives during one reactor turn
and hands it on as one list in the next; ``SampleBatcher`` is one between a driver and its sink,
so the rest of the gateway sees batches as it does from a poll. A driver whose raw items need
work per batch (quality, scaling, one health update per turn) batches those with ``TurnBatcher``.
"""

import logging
from typing import Callable, Generic, Sequence, TypeVar

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer

from gateway.interfaces import ISampleSink
from gateway.model import Sample

log = logging.getLogger(__name__)
T = TypeVar("T")


class TurnBatcher(Generic[T]):
    """Hands what it was given to ``deliver`` once per reactor turn, in order.

    A turn that brings ``max_items`` items flushes at once, so no batch is larger. A batch
    ``deliver`` raises on is dropped, not retried: it is counted in ``failed_batches`` and logged at
    ERROR on the first failure of a run (failing every turn logs once, not every turn)."""

    def __init__(self, deliver: Callable[[list[T]], None], clock: IReactorTime, max_items: int = 10_000) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, not {max_items}")
        self._deliver = deliver
        self._clock = clock
        self._max_items = max_items
        self._pending: list[T] = []
        self._call: IDelayedCall | None = None
        self._failing = False
        self._batches = self._items = self._largest = self._failed_batches = 0

    @property
    def pending(self) -> int:
        """Items waiting for the next flush."""
        return len(self._pending)

    def add(self, item: T) -> None:
        """Queue one item; flush at once if that makes ``max_items``, else make sure a flush is scheduled."""
        self._pending.append(item)
        if len(self._pending) >= self._max_items:
            self.flush()
        elif self._call is None:
            self._call = self._clock.callLater(0, self.flush)

    def flush(self) -> None:
        """Hand what is pending to the sink now, and cancel the scheduled flush."""
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            self._deliver(batch)
        except Exception:
            self._failed(batch)
        else:
            self._delivered(batch)

    def _delivered(self, batch: list[T]) -> None:
        self._failing = False
        self._batches += 1
        self._items += len(batch)
        self._largest = max(self._largest, len(batch))

    def _failed(self, batch: list[T]) -> None:
        self._failed_batches += 1
        if not self._failing:
            log.error("%r failed on a batch of %d item(s); the batch is dropped "
                      "(further failures in a row are only counted)", self._deliver, len(batch), exc_info=True)
        self._failing = True

    def stats(self) -> dict[str, int]:
        """Batches and items delivered, the largest batch, and the batches ``deliver`` raised on."""
        return {"batches": self._batches, "items": self._items, "largest": self._largest,
                "failed_batches": self._failed_batches}


@implementer(ISampleSink)
class SampleBatcher(TurnBatcher[Sample]):
    """An ``ISampleSink`` that hands what it was given to ``sink`` once per reactor turn, in order."""

    def __init__(self, sink: ISampleSink, clock: IReactorTime, max_items: int = 10_000) -> None:
        super().__init__(sink.publish, clock, max_items)

    def publish(self, samples: Sequence[Sample]) -> None:
        """Queue ``samples`` for the next flush."""
        for sample in samples:
            self.add(sample)
