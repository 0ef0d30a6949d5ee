"""Metrics updated on every job try, commit or API call: plain numbers owned by the event loop.

prometheus-client's metric objects take a `threading.Lock` on every update and build a key for
every `labels()` call: a few microseconds each, paid thousands of times a second on the loop
(three updates per job try). Every update of these metrics happens on the event loop's thread,
and so does every scrape (`GET /metrics` renders on the loop), so they need no lock: they are
ints and floats in dicts, turned into metric families only when a scrape asks (a
`Collector` on the daemon's registry). The exposition is the same as prometheus-client's
Counter (`_total`), Gauge and Histogram (cumulative `_bucket`, `_sum`, `_count`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar, cast

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString

Labels = tuple[str, ...]

#: prometheus-client's own formatting of an `le` bound (1 -> "1.0"), untyped there
_le_text = cast(Callable[[float], str], floatToGoString)


class LoopGauge:
    """A gauge without labels."""

    def __init__(self, name: str, doc: str) -> None:
        self.name = name
        self.doc = doc
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def family(self) -> Metric:
        return GaugeMetricFamily(self.name, self.doc, value=self.value)


class LoopCounter:
    """A counter by label values (given in `labelnames` order)."""

    def __init__(self, name: str, doc: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.doc = doc
        self.labelnames = list(labelnames)
        self.values: dict[Labels, float] = {}
        if not self.labelnames:
            self.values[()] = 0.0  # exported from the start, as prometheus-client does

    def inc(self, labels: Labels = (), amount: float = 1.0) -> None:
        values = self.values
        values[labels] = values.get(labels, 0.0) + amount

    def family(self) -> Metric:
        fam = CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
        for labels, value in sorted(self.values.items()):
            fam.add_metric(list(labels), value)
        return fam


class _Series:
    __slots__ = ("counts", "sum")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size  # per bucket (not cumulative); the last is +Inf
        self.sum = 0.0


class LoopHistogram:
    """A histogram by label values; `buckets` are the finite upper bounds, ascending."""

    def __init__(
        self, name: str, doc: str, buckets: Sequence[float], labelnames: Sequence[str] = ()
    ) -> None:
        bounds = [float(b) for b in buckets]
        if not bounds or bounds != sorted(set(bounds)):
            raise ValueError(f"{name}: buckets must be ascending and distinct, got {buckets}")
        self.name = name
        self.doc = doc
        self.labelnames = list(labelnames)
        self.bounds = bounds
        self.series: dict[Labels, _Series] = {}
        if not self.labelnames:
            self.series[()] = _Series(len(bounds) + 1)  # exported from the start

    def observe(self, value: float, labels: Labels = ()) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = _Series(len(self.bounds) + 1)
        # bisect_left: a value equal to a bound belongs to that bucket (`le`)
        series.counts[bisect_left(self.bounds, value)] += 1
        series.sum += value

    def family(self) -> Metric:
        fam = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        les = [_le_text(b) for b in self.bounds] + ["+Inf"]
        for labels, series in sorted(self.series.items()):
            total = 0
            buckets: list[tuple[str, float]] = []
            for le, count in zip(les, series.counts, strict=True):
                total += count
                buckets.append((le, float(total)))
            fam.add_metric(list(labels), buckets, series.sum)
        return fam


M = TypeVar("M", "LoopGauge", "LoopCounter", "LoopHistogram")


class LoopMetrics:
    """The loop-owned metrics of one registry, collected at scrape time."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._metrics: list[LoopGauge | LoopCounter | LoopHistogram] = []
        registry.register(self)  # collect() reads the metrics added later, at each scrape

    def gauge(self, name: str, doc: str) -> LoopGauge:
        return self._add(LoopGauge(name, doc))

    def counter(self, name: str, doc: str, labelnames: Sequence[str] = ()) -> LoopCounter:
        return self._add(LoopCounter(name, doc, labelnames))

    def histogram(
        self, name: str, doc: str, buckets: Sequence[float], labelnames: Sequence[str] = ()
    ) -> LoopHistogram:
        return self._add(LoopHistogram(name, doc, buckets, labelnames))

    def _add(self, metric: M) -> M:
        self._metrics.append(metric)
        return metric

    def collect(self) -> Iterator[Metric]:
        for metric in self._metrics:
            yield metric.family()
