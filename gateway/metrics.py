"""Counters and gauges that every part of the gateway registers in one place.

The status line reads them now; a Prometheus endpoint and a web page will read them later, so
each part counts once, in one registry, instead of growing its own ``stats()`` keys for every
reader. The registry is small and ours (counters, gauges set or read from their owner when
collected, labels, ``unregister`` when a driver stops); the text exposition is
``prometheus_client``'s (``render_text``), so escaping, special values and the format's rules
are the reference implementation's, not a copy of them.

Metrics are updated and collected on the reactor thread; state owned by another thread is
exposed through a gauge's ``read`` callable.
"""

import logging
import math
import re
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Sequence, cast

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

log = logging.getLogger(__name__)

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

Kind = Literal["counter", "gauge"]
LabelKey = tuple[tuple[str, str], ...]


class Counter:
    """A value that only goes up (requests sent, batches dropped...)."""

    def __init__(self) -> None:
        self._value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount``; ValueError if it is negative."""
        if amount < 0:
            raise ValueError(f"a counter only goes up; cannot add {amount}")
        self._value += amount

    @property
    def value(self) -> float:
        """The count so far."""
        return self._value


class Gauge:
    """A value that goes up and down (queue depth, devices online...).

    With ``read``, the value is whatever ``read()`` returns when asked; ``set``/``inc``/``dec``
    then have no visible effect."""

    def __init__(self, read: Callable[[], float] | None = None) -> None:
        self._value = 0.0
        self.read = read
        self.read_failing = False  # set by Metrics while read() keeps raising, so that it logs once

    def set(self, v: float) -> None:
        """Make the value ``v``."""
        self._value = float(v)

    def inc(self, v: float = 1.0) -> None:
        """Add ``v``."""
        self._value += v

    def dec(self, v: float = 1.0) -> None:
        """Subtract ``v``."""
        self._value -= v

    @property
    def value(self) -> float:
        """``read()`` if given (its exceptions propagate), else the value set."""
        return float(self.read()) if self.read is not None else self._value


@dataclass(frozen=True)
class MetricFamily:
    """One metric name as collected: each of its label sets with its value."""

    name: str
    help: str
    kind: Kind
    samples: list[tuple[dict[str, str], float]]


@dataclass
class _Family:
    help: str
    kind: Kind
    children: dict[LabelKey, Counter | Gauge]


class Metrics:
    """The registry: metrics by name and label set."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}

    def counter(self, name: str, help: str, **labels: str) -> Counter:
        """The counter ``name`` with ``labels``, created on first use; ValueError if ``name`` is a gauge."""
        return cast(Counter, self._child(name, help, "counter", labels, Counter))

    def gauge(self, name: str, help: str, read: Callable[[], float] | None = None, **labels: str) -> Gauge:
        """The gauge ``name`` with ``labels``, created on first use; ValueError if ``name`` is a counter.

        ``read`` is called at collection time; given again for an existing gauge, it replaces the old
        one (a restarted driver registers its new reader)."""
        gauge = cast(Gauge, self._child(name, help, "gauge", labels, Gauge))
        if read is not None and read != gauge.read:
            gauge.read, gauge.read_failing = read, False
        return gauge

    def _child(self, name: str, help: str, kind: Kind, labels: dict[str, str],
               create: Callable[[], Counter | Gauge]) -> Counter | Gauge:
        _check_names(name, labels)
        family = self._families.setdefault(name, _Family(help, kind, {}))
        if family.kind != kind:
            raise ValueError(f"metric {name!r} is registered as a {family.kind}, not a {kind}")
        key = _key(labels)
        if key not in family.children:
            family.children[key] = create()
        return family.children[key]

    def value(self, name: str, **labels: str) -> float:
        """The value of ``name`` with exactly ``labels``; KeyError naming it if not registered.

        A gauge whose ``read()`` raises raises here too."""
        family = self._families.get(name)
        metric = None if family is None else family.children.get(_key(labels))
        if metric is None:
            raise KeyError(f"no metric {name!r} with labels {labels}")
        return metric.value

    def total(self, name: str) -> float:
        """The sum of ``name`` over all its label sets; 0.0 if none is registered."""
        return sum(self.series(name).values(), 0.0)

    def series(self, name: str) -> dict[LabelKey, float]:
        """Each label set of ``name`` (sorted (label, value) pairs) with its value, sorted; {} if none.

        Gauges whose ``read()`` raises are left out (logged once)."""
        family = self._families.get(name)
        if family is None:
            return {}
        return {key: value for key, metric in sorted(family.children.items())
                if (value := _read(name, key, metric)) is not None}

    def collect(self) -> list[MetricFamily]:
        """Every metric, sorted by name, label sets sorted; gauges whose ``read()`` raises are left out (logged once)."""
        return [MetricFamily(name, family.help, family.kind,
                             [(dict(key), value) for key, value in self.series(name).items()])
                for name, family in sorted(self._families.items())]

    def unregister(self, name: str, **labels: str) -> None:
        """Forget ``name`` with exactly ``labels`` (a device removed, a driver stopped), and the name once it
        has no label set left. Nothing happens if it is not registered, so stop paths may repeat it."""
        family = self._families.get(name)
        if family is None:
            return
        family.children.pop(_key(labels), None)
        if not family.children:
            del self._families[name]


def _read(name: str, key: LabelKey, metric: Counter | Gauge) -> float | None:
    """The metric's value, or None for a gauge whose read() raises (logged when it starts failing)."""
    if isinstance(metric, Counter):
        return metric.value
    try:
        value = metric.value
    except Exception:
        if not metric.read_failing:
            log.error("gauge %s%s: read() failed; left out until it works again", name, dict(key), exc_info=True)
        metric.read_failing = True
        return None
    metric.read_failing = False
    return value


def _key(labels: dict[str, str]) -> LabelKey:
    return tuple(sorted(labels.items()))


def _check_names(name: str, labels: dict[str, str]) -> None:
    if not _NAME.fullmatch(name):
        raise ValueError(f"invalid metric name {name!r}: must match {_NAME.pattern}")
    for label in labels:
        if not _LABEL_NAME.fullmatch(label):
            raise ValueError(f"invalid label name {label!r} on metric {name!r}: must match {_LABEL_NAME.pattern}")


CONTENT_TYPE = CONTENT_TYPE_LATEST  # what an HTTP endpoint serving ``render_text`` says it is


class _Exposition:
    """A prometheus_client collector over one ``Metrics``: read at every scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for family in self._metrics.collect():
            exposed = Metric(family.name.removesuffix("_total") if family.kind == "counter" else family.name,
                             family.help, family.kind)
            for labels, value in family.samples:
                exposed.add_sample(family.name, labels, value)
            yield exposed


def render_text(metrics: Metrics) -> str:
    """Every metric in the Prometheus text exposition format (``CONTENT_TYPE``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Exposition(metrics))
    return generate_latest(registry).decode()


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of a non-empty sample: the smallest value with at least ``fraction``
    of the sample at or below it (p99 of 100 values is the 99th, not the largest)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]
