"""The tallies collect exactly what prometheus_client's own Counter and Histogram show for
the same calls: the same families and samples, in the same order (only the ``_created``
timestamps differ, each taken when its label set was first used)."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics import disable_created_metrics, enable_created_metrics

from sidecar.shell.metrics import CONFIRM_SECONDS, SECONDS
from sidecar.shell.tallies import CounterTally, HistogramTally, created_series

KEYS = [("input", "received"), ("output", "published"), ("input", "acked")]


def masked(registry: CollectorRegistry) -> list:
    families = list(registry.collect())
    for family in families:
        family.samples = [s._replace(value=0.0) if s.name.endswith("_created") else s
                          for s in family.samples]
    return families


@pytest.mark.parametrize("buckets", [SECONDS, CONFIRM_SECONDS])
def test_the_same_samples_as_prometheus_client_metrics(buckets: tuple[float, ...]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    tally = CounterTally("t_things", "Things", ["lifecycle", "state"], ours)
    one = CounterTally("t_bytes", "Bytes", ["direction"], ours)
    hist = HistogramTally("t_seconds", "Seconds", ["lifecycle", "state"], buckets, ours)
    counter = Counter("t_things", "Things", ["lifecycle", "state"], registry=theirs)
    bytes_ = Counter("t_bytes", "Bytes", ["direction"], registry=theirs)
    histogram = Histogram("t_seconds", "Seconds", ["lifecycle", "state"], buckets=buckets,
                          registry=theirs)
    chance = random.Random(14)
    # every bound exactly, around it, and far beyond the last one
    amounts = [b * f for b in buckets for f in (0.5, 1.0, 1.0000001)] + [0.0, 1e6]
    for amount in amounts * 3:
        key = chance.choice(KEYS)
        tally.values[key] += 1
        counter.labels(*key).inc()
        one.values["upload"] += amount
        bytes_.labels("upload").inc(amount)
        hist.values.observe(key, amount)
        histogram.labels(*key).observe(amount)
    assert masked(ours) == masked(theirs)
    was = created_series()  # PROMETHEUS_DISABLE_CREATED_SERIES may have turned them off
    disable_created_metrics()
    try:
        assert list(ours.collect()) == list(theirs.collect())  # no _created samples at all
    finally:
        if was:
            enable_created_metrics()
