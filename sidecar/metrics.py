"""Prometheus metrics, in a registry of their own (never the global one).

Two sources, neither of which is the core:

* ``MetricsObserver`` is a Runner observer: it sees every event, the clock reading, the
  effects and the transitions, on the loop thread. Time in a state is the difference of
  the clock readings of a fragment's transitions; end-to-end latency runs from an input's
  "new" (received) to its outcome. It also reads the core's in-flight counts after an
  event (reading, on the loop thread, is allowed; the HTTP thread never does).
* ``StorageMetrics`` (and two callbacks) are hooks the shell adapters call: S3 requests by
  operation and result, bytes and seconds transferred, retries, confirm latency.

No label is ever a fragment id: every label value comes from a small, fixed set.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from states import INPUT, OUTPUT, STEP

from . import __version__
from . import effects as fx
from . import events as ev
from .core import Core, Transition

PREFIX = "iterum_sidecar"
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
           300.0, 600.0, 1800.0, 3600.0)
CONFIRM_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)
LIFECYCLES = {lc.name: lc for lc in (INPUT, OUTPUT)}


class Metrics:
    """Every metric of the sidecar, registered in ``self.registry``."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = r = registry or CollectorRegistry()
        self.info = Info(PREFIX, "The sidecar's version and step", registry=r)
        self.fragments = Counter(
            f"{PREFIX}_fragments", "Fragments that reached an outcome (input: acked, "
            "dead_lettered, requeued; output: recorded, failed)", ["lifecycle", "outcome"],
            registry=r)
        self.state_entries = Counter(
            f"{PREFIX}_state_entries", "Fragments that entered each lifecycle state",
            ["lifecycle", "state"], registry=r)
        self.in_flight = Gauge(
            f"{PREFIX}_fragments_in_flight", "Fragments in flight, per lifecycle state",
            ["lifecycle", "state"], registry=r)
        self.state_seconds = Histogram(
            f"{PREFIX}_state_seconds", "Time a fragment spent in a lifecycle state",
            ["lifecycle", "state"], buckets=SECONDS, registry=r)
        self.latency = Histogram(
            f"{PREFIX}_fragment_latency_seconds", "End to end: input received until its "
            "outcome (acked, dead_lettered, requeued)", ["outcome"], buckets=SECONDS,
            registry=r)
        self.transfer_bytes = Counter(
            f"{PREFIX}_transfer_bytes", "Bytes moved to or from S3 (completed transfers)",
            ["direction"], registry=r)
        self.transfer_seconds = Counter(
            f"{PREFIX}_transfer_seconds", "Seconds spent moving files to or from S3 (every "
            "attempt)", ["direction"], registry=r)
        self.s3_requests = Counter(
            f"{PREFIX}_s3_requests", "HTTP requests to S3 by operation and result (status "
            "code, or error when no answer came)", ["operation", "result"], registry=r)
        self.retries = Counter(
            f"{PREFIX}_retries", "Transient failures retried (download, upload, bucket, "
            "manager)", ["operation"], registry=r)
        self.redeliveries = Counter(
            f"{PREFIX}_redeliveries", "Inputs the broker delivered again (redelivered flag)",
            registry=r)
        self.dead_letters = Counter(
            f"{PREFIX}_dead_letters", "Inputs dead-lettered, by reason", ["reason"],
            registry=r)
        self.confirm_seconds = Histogram(
            f"{PREFIX}_confirm_seconds", "Publish to broker confirm (publisher confirms)",
            ["result"], buckets=CONFIRM_SECONDS, registry=r)
        self.transformation = Gauge(
            f"{PREFIX}_transformation_connected", "1 while the transformation has a "
            "connection on tts.sock or fts.sock", registry=r)
        self.volume_free = Gauge(
            f"{PREFIX}_volume_free_bytes", "Free bytes on DATA_VOLUME_PATH", registry=r)
        self.intake_paused = Gauge(
            f"{PREFIX}_intake_paused", "1 while consuming is paused, by reason",
            ["reason"], registry=r)
        self.stuck = Counter(
            f"{PREFIX}_stuck_fragments", "Fragments reported stuck (longer than "
            "SIDECAR_STUCK_AFTER in one state)", ["lifecycle", "state"], registry=r)
        self.step_state = Gauge(
            f"{PREFIX}_step_state", "1 for the sidecar's current step state", ["state"],
            registry=r)
        self.logs = Counter(
            f"{PREFIX}_log_events", "Log events of the core, by level and stable code",
            ["level", "code"], registry=r)
        self.refused = Counter(
            f"{PREFIX}_connections_refused", "Connections to tts.sock or fts.sock refused "
            "because the peer runs as another uid than SIDECAR_PEER_UID", ["channel"],
            registry=r)
        self.openlineage = Counter(
            f"{PREFIX}_openlineage_events", "OpenLineage events: emitted, failed, dropped",
            ["result"], registry=r)
        for lc in LIFECYCLES.values():
            for state in lc.states:
                if state not in lc.terminal:
                    self.in_flight.labels(lc.name, state).set(0)
        for reason in ("transformation-absent", "volume-low"):
            self.intake_paused.labels(reason).set(0)
        for state in STEP.states:
            self.step_state.labels(state).set(1 if state == STEP.initial else 0)

    def describe_step(self, step: str) -> None:
        self.info.info({"version": __version__, "step": step})


class MetricsObserver:
    """A Runner observer (loop thread): events, effects and transitions become metrics."""

    def __init__(self, metrics: Metrics, core: Core):
        self.m = metrics
        self.core = core
        self.entered: dict[int, float] = {}  # serial -> clock reading of its last transition
        self.born: dict[int, float] = {}  # input serial -> clock reading when received
        self.paused: tuple[str, ...] = ()

    def __call__(self, event: ev.Event, now: float, effects: list[fx.Effect],
                 transitions: list[Transition]) -> None:
        m = self.m
        if isinstance(event, ev.Delivered) and event.redelivered:
            m.redeliveries.inc()
        elif isinstance(event, ev.VolumeSpace):
            m.volume_free.set(event.free_bytes)
        for t in transitions:
            self._transition(t, now)
        for effect in effects:
            if isinstance(effect, fx.Log):
                self._log(effect)
        if transitions or isinstance(event, ev.Connected | ev.Disconnected | ev.VolumeSpace):
            self._gauges()

    def _transition(self, t: Transition, now: float) -> None:
        m = self.m
        if t.machine == STEP.name:
            m.step_state.labels(t.source).set(0)
            m.step_state.labels(t.dest).set(1)
            return
        lc = LIFECYCLES[t.machine]
        if t.trigger == "new":
            if t.machine == INPUT.name:
                self.born[t.serial] = now
        else:
            since = self.entered.get(t.serial)
            if since is not None:
                m.state_seconds.labels(t.machine, t.source).observe(now - since)
        m.state_entries.labels(t.machine, t.dest).inc()
        if t.dest in lc.terminal:
            m.fragments.labels(t.machine, t.dest).inc()
            self.entered.pop(t.serial, None)
            born = self.born.pop(t.serial, None)
            if born is not None:
                m.latency.labels(t.dest).observe(now - born)
        else:
            self.entered[t.serial] = now

    def _log(self, e: fx.Log) -> None:
        m = self.m
        m.logs.labels(e.level, e.code).inc()
        if e.code.startswith("dead-letter-") and e.code != "dead-letter-refused":
            m.dead_letters.labels(e.code.removeprefix("dead-letter-")).inc()
        elif e.code.startswith("stuck-"):
            lifecycle, _, state = e.code.removeprefix("stuck-").partition("-")
            m.stuck.labels(lifecycle, state).inc()

    def _gauges(self) -> None:
        m, core = self.m, self.core
        for name, counts in core.states.items():
            lc = LIFECYCLES[name]
            for state in lc.states:
                if state not in lc.terminal:
                    m.in_flight.labels(name, state).set(counts[state])
        m.transformation.set(1 if core.tts or core.fts else 0)
        if core.paused != self.paused:
            for reason in set(self.paused) | set(core.paused):
                m.intake_paused.labels(reason).set(1 if reason in core.paused else 0)
            self.paused = core.paused
        # a fragment forgotten without a final transition (a duplicate delivery's copy)
        tracked = len(core.inputs) + len(core.outputs)
        if len(self.entered) > 2 * tracked + 64:
            alive = core.inputs.keys() | core.outputs.keys()
            for table in (self.entered, self.born):
                for serial in [s for s in table if s not in alive]:
                    del table[serial]


class StorageMetrics:
    """The storage adapter's hooks (worker threads; prometheus_client is thread-safe).

    It also keeps the readiness signal for storage: reachable unless the last request got
    no answer or a 5xx. No extra request is ever made for it.
    """

    def __init__(self, metrics: Metrics):
        self.m = metrics
        self.reachable = True
        self.last_result = ""

    def request(self, operation: str, result: str, seconds: float) -> None:
        self.m.s3_requests.labels(operation, result).inc()
        self.last_result = result
        self.reachable = not (result == "error" or result.startswith("5"))

    def transfer(self, direction: str, size: int, seconds: float) -> None:
        self.m.transfer_seconds.labels(direction).inc(seconds)
        if size:
            self.m.transfer_bytes.labels(direction).inc(size)

    def retry(self, operation: str) -> None:
        self.m.retries.labels(operation).inc()


def instrument(runner: Any, metrics: Metrics) -> StorageMetrics:
    """Attach the metrics to a Runner: its observer list and its adapters' hooks."""
    metrics.describe_step(runner.s.iterum_name)
    runner.observers.append(MetricsObserver(metrics, runner.core))
    storage = StorageMetrics(metrics)
    runner.storage.hooks = storage
    runner.broker.on_confirm = lambda result, seconds: metrics.confirm_seconds.labels(
        result).observe(seconds)
    runner.checker.on_retry = lambda: metrics.retries.labels("manager").inc()
    runner.sockets.on_refused = lambda channel: metrics.refused.labels(channel).inc()
    return storage
