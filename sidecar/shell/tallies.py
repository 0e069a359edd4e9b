"""Counters and histograms kept in plain dicts, turned into samples only when collected.

prometheus_client's ``labels()``, ``Counter.inc`` and ``Histogram.observe`` validate their
arguments and take a lock on every call (1-5 µs each, a dozen per fragment on the loop
thread). The metrics updated per fragment are instead one dict entry per label set
(``tally[key] += 1``, ``buckets.observe(key, seconds)``), and a custom collector
(prometheus_client's documented ``collect()`` API) builds the families from them when
/metrics is scraped. The samples are the ones prometheus_client's own Counter and
Histogram show: same names, labels, order (label sets in order of first use), values and
``_created`` series (tests/unit/test_metrics_exposition.py, test_tallies.py).

Keys are the label values: a tuple, or a str for a one-label family.

Threads: a scrape (the HTTP thread) copies a dict before it reads it (``dict.copy`` and a
list slice run in one piece under the GIL), and every value it reads was stored whole.
A family written from one thread needs nothing more; one written from several (the
storage workers) is incremented under a lock its writers share (``AdapterMetrics``).
As with prometheus_client, a histogram's sum and buckets are not read atomically together.
"""

from __future__ import annotations

import time
from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.samples import Sample

Key = tuple[str, ...] | str
_PROBE_COUNTER = Counter("probe", "", registry=None)  # never registered: a reference


def created_series() -> bool:
    """Whether prometheus_client shows ``_created`` series now (off with
    PROMETHEUS_DISABLE_CREATED_SERIES or ``disable_created_metrics()``): read, through
    the public API, from what one of its own counters shows."""
    [family] = _PROBE_COUNTER.collect()
    return len(family.samples) > 1


def _values(key: Key) -> tuple[str, ...]:
    return key if isinstance(key, tuple) else (key,)


class Tally(dict[Key, float]):
    """Label values -> count; a key's first use is its creation time."""

    def __init__(self) -> None:
        super().__init__()
        self.created: dict[Key, float] = {}

    def __missing__(self, key: Key) -> float:
        self.created[key] = time.time()
        return 0.0


class Buckets(dict[Key, list[float]]):
    """Label values -> [observations per bucket (upper bounds, then +Inf), sum]."""

    def __init__(self, bounds: tuple[float, ...]):
        super().__init__()
        self.bounds = (*bounds, float("inf"))
        self.created: dict[Key, float] = {}

    def __missing__(self, key: Key) -> list[float]:
        self.created[key] = time.time()
        counts = self[key] = [0.0] * (len(self.bounds) + 1)
        return counts

    def observe(self, key: Key, amount: float) -> None:
        counts = self[key]
        counts[-1] += amount
        counts[bisect_left(self.bounds, amount)] += 1  # the first bound >= amount


class CounterTally:
    """A counter family: ``values`` are incremented, ``collect()`` shows them."""

    def __init__(self, name: str, documentation: str, labels: list[str],
                 registry: CollectorRegistry):
        self.name, self.documentation, self.labelnames = name, documentation, labels
        self.values = Tally()
        registry.register(self)

    def describe(self) -> list[CounterMetricFamily]:
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> list[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        created = self.values.created if created_series() else {}
        for key, value in self.values.copy().items():
            family.add_metric(_values(key), value, created.get(key))
        return [family]


class HistogramTally:
    """A histogram family: ``values.observe(key, amount)``, ``collect()`` shows them."""

    def __init__(self, name: str, documentation: str, labels: list[str],
                 buckets: tuple[float, ...], registry: CollectorRegistry):
        self.name, self.documentation, self.labelnames = name, documentation, labels
        self.values = Buckets(buckets)
        self.les = _bucket_labels(buckets)
        registry.register(self)

    def describe(self) -> list[HistogramMetricFamily]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> list[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        created = self.values.created if created_series() else {}
        for key, counts in self.values.copy().items():
            counts = counts[:]  # the loop thread may observe meanwhile
            cumulative, total = [], 0.0
            for le, count in zip(self.les, counts[:-1], strict=True):
                total += count
                cumulative.append((le, total))
            values = _values(key)
            family.add_metric(values, cumulative, counts[-1])
            if key in created:  # HistogramMetricFamily has no `created` argument
                family.samples.append(Sample(f"{self.name}_created",
                                             dict(zip(self.labelnames, values, strict=True)),
                                             created[key]))
        return [family]


def _bucket_labels(buckets: tuple[float, ...]) -> list[str]:
    """The ``le`` label of each bucket, +Inf included, as prometheus_client writes it."""
    [family] = Histogram("probe", "", buckets=buckets, registry=None).collect()
    return [s.labels["le"] for s in family.samples if s.name.endswith("_bucket")]
