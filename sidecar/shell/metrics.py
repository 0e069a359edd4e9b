"""Prometheus metrics, in a registry of their own (never the global one).

Two sources, neither of which is the core:

* ``MetricsObserver`` is a Runner observer: it sees every event, the clock reading, the
  effects and the transitions, on the loop thread. Time in a state is the difference of
  the clock readings of a fragment's transitions; end-to-end latency runs from an input's
  "new" (received) to its outcome. At the end of each loop turn that handled events it
  copies what the state gauges show (in-flight counts, step, transformation, pauses) into
  one immutable ``StateView`` (reading the core, on the loop thread, is allowed; the HTTP
  thread never does). The gauges are collectors that turn the latest view into samples
  only when /metrics is scraped: a scrape reads one reference, so it always sees the
  consistent state between two loop turns, never the core in the middle of one.
* ``AdapterMetrics`` implements the hooks the shell adapters call (sidecar/shell/hooks.py):
  S3 requests by operation and result, bytes and seconds transferred, retries, confirm
  latency, refused connections.

What changes per fragment is counted in plain dicts (sidecar/shell/tallies.py) and turned
into samples at scrape time; the rare metrics are prometheus_client's own.

No label is ever a fragment id: every label value comes from a small, fixed set.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, Info
from prometheus_client.core import GaugeMetricFamily

from states import INPUT, OUTPUT, STEP

from .. import __version__
from ..core import Core, Transition
from ..core import effects as fx
from ..core import events as ev
from .hooks import AdapterHooks, Observer
from .tallies import CounterTally, HistogramTally

PREFIX = "iterum_sidecar"
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
           300.0, 600.0, 1800.0, 3600.0)
CONFIRM_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)
LIFECYCLES = {lc.name: lc for lc in (INPUT, OUTPUT)}
_TERMINAL = {name: frozenset(lc.terminal) for name, lc in LIFECYCLES.items()}
_STEP, _INPUT, _OUTPUT = STEP.name, INPUT.name, OUTPUT.name
_LOG, _DELIVERED = fx.Log, ev.Delivered
_FORGET_ABOVE = 64  # clock readings kept before the observer looks for forgotten fragments
_copy = dict.copy  # of a Counter: a plain dict
PAUSE_REASONS = ("transformation-absent", "volume-low")  # always shown, 0 when not paused


class StateView(NamedTuple):
    """What the state gauges show, copied from the core on the loop thread at the end of a
    loop turn (as a plain tuple: this class's constructor costs ten times as much)."""

    inputs: dict[str, int] = {}  # state -> input fragments in it (may lack 0s)
    outputs: dict[str, int] = {}  # the same for outputs
    transformation: bool = False
    paused: tuple[str, ...] = ()
    step: str = STEP.initial


class StateGauge:
    """A gauge family computed from the latest ``StateView`` when the registry is
    collected (a scrape, on the HTTP thread), instead of set after every event."""

    def __init__(self, name: str, documentation: str, labels: list[str],
                 samples: Callable[[StateView], Iterator[tuple[list[str], float]]],
                 view: Callable[[], StateView], registry: CollectorRegistry):
        self.name, self.documentation, self.labels = name, documentation, labels
        self.samples, self.view = samples, view
        registry.register(self)

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(self.name, self.documentation, labels=self.labels)]

    def collect(self) -> list[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in self.samples(self.view()):
            family.add_metric(labels, value)
        return [family]


class Metrics:
    """Every metric of the sidecar, registered in ``self.registry``."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = r = registry or CollectorRegistry()
        self.info = Info(PREFIX, "The sidecar's version and step", registry=r)
        self.fragments = CounterTally(
            f"{PREFIX}_fragments", "Fragments that reached an outcome (input: acked, "
            "dead_lettered, requeued; output: recorded, failed)", ["lifecycle", "outcome"],
            r)
        self.state_entries = CounterTally(
            f"{PREFIX}_state_entries", "Fragments that entered each lifecycle state",
            ["lifecycle", "state"], r)
        # written by the loop thread (one reference), read by the state gauges' scrapes
        self.view: tuple[Any, ...] = tuple(StateView())
        self.pause_reasons = list(PAUSE_REASONS)  # every reason seen, as the gauge shows
        self.in_flight = StateGauge(
            f"{PREFIX}_fragments_in_flight", "Fragments in flight, per lifecycle state",
            ["lifecycle", "state"], _in_flight, self._view, r)
        self.state_seconds = HistogramTally(
            f"{PREFIX}_state_seconds", "Time a fragment spent in a lifecycle state",
            ["lifecycle", "state"], SECONDS, r)
        self.latency = HistogramTally(
            f"{PREFIX}_fragment_latency_seconds", "End to end: input received until its "
            "outcome (acked, dead_lettered, requeued)", ["outcome"], SECONDS, r)
        self.transfer_bytes = CounterTally(
            f"{PREFIX}_transfer_bytes", "Bytes moved to or from S3 (completed transfers)",
            ["direction"], r)
        self.transfer_seconds = CounterTally(
            f"{PREFIX}_transfer_seconds", "Seconds spent moving files to or from S3 (every "
            "attempt)", ["direction"], r)
        self.s3_requests = CounterTally(
            f"{PREFIX}_s3_requests", "HTTP requests to S3 by operation and result (status "
            "code, or error when no answer came)", ["operation", "result"], r)
        self.retries = Counter(
            f"{PREFIX}_retries", "Transient failures retried (download, upload, bucket, "
            "manager)", ["operation"], registry=r)
        self.redeliveries = Counter(
            f"{PREFIX}_redeliveries", "Inputs the broker delivered again (redelivered flag)",
            registry=r)
        self.dead_letters = Counter(
            f"{PREFIX}_dead_letters", "Inputs dead-lettered, by reason", ["reason"],
            registry=r)
        self.confirm_seconds = HistogramTally(
            f"{PREFIX}_confirm_seconds", "Publish to broker confirm (publisher confirms)",
            ["result"], CONFIRM_SECONDS, r)
        self.transformation = StateGauge(
            f"{PREFIX}_transformation_connected", "1 while the transformation has a "
            "connection on tts.sock or fts.sock", [],
            lambda v: iter([([], 1.0 if v.transformation else 0.0)]), self._view, r)
        self.volume_free = Gauge(
            f"{PREFIX}_volume_free_bytes", "Free bytes on DATA_VOLUME_PATH", registry=r)
        self.intake_paused = StateGauge(
            f"{PREFIX}_intake_paused", "1 while consuming is paused, by reason",
            ["reason"], self._paused, self._view, r)
        self.stuck = Counter(
            f"{PREFIX}_stuck_fragments", "Fragments reported stuck (longer than "
            "SIDECAR_STUCK_AFTER in one state)", ["lifecycle", "state"], registry=r)
        self.step_state = StateGauge(
            f"{PREFIX}_step_state", "1 for the sidecar's current step state", ["state"],
            lambda v: (([s], 1.0 if s == v.step else 0.0) for s in STEP.states),
            self._view, r)
        self.logs = CounterTally(
            f"{PREFIX}_log_events", "Log events of the core, by level and stable code",
            ["level", "code"], r)
        self.refused = Counter(
            f"{PREFIX}_connections_refused", "Connections to tts.sock or fts.sock refused "
            "because the peer runs as another uid than SIDECAR_PEER_UID", ["channel"],
            registry=r)
        self.openlineage = Counter(
            f"{PREFIX}_openlineage_events", "OpenLineage events: emitted, failed, dropped",
            ["result"], registry=r)

    def _view(self) -> StateView:
        return StateView(*self.view)

    def _paused(self, view: StateView) -> Iterator[tuple[list[str], float]]:
        for reason in tuple(self.pause_reasons):  # a copy: the loop thread may append
            yield [reason], 1.0 if reason in view.paused else 0.0

    def describe_step(self, step: str) -> None:
        self.info.info({"version": __version__, "step": step})


class MetricsObserver(Observer):
    """A Runner observer (loop thread): events, effects and transitions become metrics.
    Per event it only adds to the tallies it alone writes; per loop turn it copies the
    state view (about eight events a turn when busy)."""

    def __init__(self, metrics: Metrics, core: Core):
        self.m = metrics
        self.core = core
        self.entered: dict[int, float] = {}  # serial -> clock reading of its last transition
        self.born: dict[int, float] = {}  # input serial -> clock reading when received
        self.state_seconds = metrics.state_seconds.values
        self.state_entries = metrics.state_entries.values
        self.fragments = metrics.fragments.values
        self.latency = metrics.latency.values
        self.logs = metrics.logs.values

    def __call__(self, event: ev.Event, now: float, effects: list[fx.Effect],
                 transitions: list[Transition]) -> None:
        if transitions:
            self._transitions(transitions, now)
            if len(self.entered) > _FORGET_ABOVE:
                self._forget()
        for effect in effects:
            if isinstance(effect, _LOG):
                self._log(effect)
        if isinstance(event, _DELIVERED):
            if event.redelivered:
                self.m.redeliveries.inc()
        elif isinstance(event, ev.VolumeSpace):
            self.m.volume_free.set(event.free_bytes)

    def turn_ended(self) -> None:
        # the state view: the in-flight counts copied (two small dicts), the rest immutable
        m, core = self.m, self.core
        states, paused = core.states, core.paused
        if paused is not m.view[3] and paused != m.view[3]:
            m.pause_reasons.extend(r for r in paused if r not in m.pause_reasons)
        m.view = (_copy(states[_INPUT]), _copy(states[_OUTPUT]), bool(core.tts or core.fts),
                  paused, core.step.state)

    def _transitions(self, transitions: list[Transition], now: float) -> None:
        entered, entries, seconds = self.entered, self.state_entries, self.state_seconds
        for machine, serial, _, trigger, source, dest in transitions:
            if machine == _STEP:
                continue  # the step_state gauge reads the view
            if trigger == "new":
                if machine == _INPUT:
                    self.born[serial] = now
            else:
                since = entered.get(serial)
                if since is not None:
                    seconds.observe((machine, source), now - since)
            entries[machine, dest] += 1
            if dest in _TERMINAL[machine]:
                self._ended(machine, serial, dest, now)
            else:
                entered[serial] = now

    def _ended(self, machine: str, serial: int, outcome: str, now: float) -> None:
        self.fragments[machine, outcome] += 1
        self.entered.pop(serial, None)
        born = self.born.pop(serial, None)
        if born is not None:
            self.latency.observe(outcome, now - born)

    def _log(self, e: fx.Log) -> None:
        self.logs[e.level, e.code] += 1
        if e.code.startswith("dead-letter-") and e.code != "dead-letter-refused":
            self.m.dead_letters.labels(e.code.removeprefix("dead-letter-")).inc()  # rare
        elif e.code.startswith("stuck-"):  # rare: no cache
            lifecycle, _, state = e.code.removeprefix("stuck-").partition("-")
            self.m.stuck.labels(lifecycle, state).inc()

    def _forget(self) -> None:
        """Drop the clock readings of fragments forgotten without a final transition (a
        duplicate delivery's copy), once they outnumber the tracked ones."""
        core = self.core
        tracked = len(core.inputs) + len(core.outputs)
        if len(self.entered) > 2 * tracked + _FORGET_ABOVE:
            alive = core.inputs.keys() | core.outputs.keys()
            for table in (self.entered, self.born):
                for serial in [s for s in table if s not in alive]:
                    del table[serial]


def _in_flight(view: StateView) -> Iterator[tuple[list[str], float]]:
    for lc, counts in ((INPUT, view.inputs), (OUTPUT, view.outputs)):
        for state in lc.states:
            if state not in lc.terminal:
                yield [lc.name, state], float(counts.get(state, 0))


class AdapterMetrics(AdapterHooks):
    """The adapters' hooks: S3 requests, transfers and retries (worker threads: their
    tallies are incremented under one lock; retries are prometheus_client's, thread-safe),
    confirms and refused connections (loop thread).

    It also keeps the readiness signal for storage: reachable unless the last request got
    no answer or a 5xx. No extra request is ever made for it.
    """

    def __init__(self, metrics: Metrics):
        self.m = metrics
        self.reachable = True
        self.last_result = ""
        self.lock = threading.Lock()  # the storage workers' increments would race
        self.requests = metrics.s3_requests.values
        self.seconds = metrics.transfer_seconds.values
        self.bytes = metrics.transfer_bytes.values
        self.confirms = metrics.confirm_seconds.values  # loop thread only

    def request(self, operation: str, result: str, seconds: float) -> None:
        with self.lock:
            self.requests[operation, result] += 1
        self.last_result = result
        self.reachable = not (result == "error" or result.startswith("5"))

    def transfer(self, direction: str, size: int, seconds: float) -> None:
        with self.lock:
            self.seconds[direction] += seconds
            if size:
                self.bytes[direction] += size

    def retry(self, operation: str) -> None:
        self.m.retries.labels(operation).inc()  # rare: no cache

    def on_confirm(self, result: str, seconds: float) -> None:
        self.confirms.observe(result, seconds)

    def on_refused(self, channel: str) -> None:
        self.m.refused.labels(channel).inc()  # rare: no cache
