"""Which samples become spontaneous events: a change beyond the deadband, or any quality change.

Pure: it remembers what was last reported per IOA and nothing else. A point's first sample is
always an event (its quality leaves the start-up IV+NT).
"""

from gateway.model import Sample, Value
from gateway.northbound.iec104.section import PointMap


class SpontaneousFilter:
    """Deadband and quality-change filter for one master group."""

    def __init__(self) -> None:
        self._reported: dict[int, tuple[Value, int]] = {}

    def accept(self, mapping: PointMap, sample: Sample) -> bool:
        """True when ``sample`` must be reported for ``mapping``; it then becomes the reference."""
        previous = self._reported.get(mapping.ioa)
        quality = int(sample.quality)
        if previous is None or previous[1] != quality or _moved(previous[0], sample.value, mapping.threshold):
            self._reported[mapping.ioa] = (sample.value, quality)
            return True
        return False


def _moved(before: Value, now: Value, threshold: float) -> bool:
    if now is None or before is None:
        return now is not before
    if isinstance(now, (bool, str)) or isinstance(before, (bool, str)):
        return now != before
    change = abs(float(now) - float(before))
    return change > threshold if threshold > 0 else change != 0
