"""Metrics: a Core driven by events with the metrics observer attached, then the registry
scraped. Time in a state and end-to-end latency come from the clock readings the core was
given, so they are exact here."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from unit_driver import Driver, fid, of, remote_body

from sidecar.core import effects as fx
from sidecar.core import events as ev
from sidecar.shell.metrics import AdapterMetrics, Metrics, MetricsObserver

A, B = fid("a"), fid("b")


class Observed(Driver):
    """The unit driver with a metrics observer, as the Runner calls it: each event fed is
    one loop turn (``feed_turn`` feeds several in one)."""

    def __init__(self, **overrides):
        super().__init__(**overrides)
        self.metrics = Metrics()
        self.observer = MetricsObserver(self.metrics, self.core)

    def feed(self, event, at=None):
        out = self.feed_in_turn(event, at)
        self.observer.turn_ended()
        return out

    def feed_in_turn(self, event, at=None):
        out = super().feed(event, at)
        self.observer(event, self.clock, out, list(self.core.transitions))
        return out

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)


def one_fragment_run(drv: Observed) -> None:
    drv.start()
    drv.connect()
    drv.deliver(1, remote_body(A), redelivered=True)  # received at t0
    drv.after(2.0, ev.FileDownloaded(drv.inputs[A].serial, 0, size=100))  # 2 s received
    uploads = drv.output([A])
    drv.after(3.0)  # 3 s dispatched (the Tick changes nothing)
    drv.done(A)
    drv.record(uploads)


def test_fragments_by_outcome_time_in_state_and_latency() -> None:
    drv = Observed()
    one_fragment_run(drv)
    assert drv.state(A) == "acked"
    assert drv.value("iterum_sidecar_fragments_total", lifecycle="input", outcome="acked") == 1
    assert drv.value("iterum_sidecar_fragments_total", lifecycle="output",
                     outcome="recorded") == 1
    assert drv.value("iterum_sidecar_state_entries_total", lifecycle="input",
                     state="dispatched") == 1

    history = drv.inputs[A].history
    times = dict(history)
    received = drv.value("iterum_sidecar_state_seconds_sum", lifecycle="input", state="received")
    assert received == pytest.approx(times["downloaded"] - times["received"])
    assert received == pytest.approx(2.0, abs=0.01)
    dispatched = drv.value("iterum_sidecar_state_seconds_sum", lifecycle="input",
                           state="dispatched")
    assert dispatched == pytest.approx(times["processed"] - times["dispatched"])
    assert drv.value("iterum_sidecar_state_seconds_count", lifecycle="input",
                     state="dispatched") == 1

    latency = drv.value("iterum_sidecar_fragment_latency_seconds_sum", outcome="acked")
    assert latency == pytest.approx(history[-1][1] - history[0][1])
    assert drv.value("iterum_sidecar_fragment_latency_seconds_count", outcome="acked") == 1
    assert drv.value("iterum_sidecar_redeliveries_total") == 1
    assert drv.value("iterum_sidecar_log_events_total", level="info", code="redelivered") == 1


def test_in_flight_per_state_and_the_transformation_gauge() -> None:
    drv = Observed()
    drv.start()
    drv.connect()
    assert drv.value("iterum_sidecar_transformation_connected") == 1
    drv.deliver_fragment(1, A)
    drv.deliver_fragment(2, B)
    drv.download(A)
    assert drv.value("iterum_sidecar_fragments_in_flight", lifecycle="input",
                     state="received") == 1
    assert drv.value("iterum_sidecar_fragments_in_flight", lifecycle="input",
                     state="dispatched") == 1
    drv.disconnect()
    assert drv.value("iterum_sidecar_transformation_connected") == 0
    assert drv.value("iterum_sidecar_step_state", state="consuming") == 1
    assert drv.value("iterum_sidecar_step_state", state="starting") == 0


def test_dead_letters_by_reason() -> None:
    drv = Observed()
    drv.start()
    out = drv.deliver(1, b"not json")
    [dead] = [p for p in of(out, fx.Publish)]
    reason = dict(dead.headers)["x-iterum-error-class"]
    drv.confirm(dead)
    assert drv.value("iterum_sidecar_dead_letters_total", reason=reason) == 1
    assert drv.value("iterum_sidecar_fragments_total", lifecycle="input",
                     outcome="dead_lettered") == 1
    assert drv.value("iterum_sidecar_fragment_latency_seconds_count",
                     outcome="dead_lettered") == 1


def test_stuck_fragments_volume_and_intake_pause() -> None:
    drv = Observed(stuck_after=10.0, volume_min_free=100)
    drv.start()
    drv.connect()
    drv.ready_input(1, A)
    drv.after(11)
    assert drv.value("iterum_sidecar_stuck_fragments_total", lifecycle="input",
                     state="dispatched") == 1
    drv.feed(ev.VolumeSpace(50, 1000))
    assert drv.value("iterum_sidecar_volume_free_bytes") == 50
    assert drv.value("iterum_sidecar_intake_paused", reason="volume-low") == 1
    drv.feed(ev.ConsumerStopped())
    drv.feed(ev.VolumeSpace(1000, 1000))
    assert drv.value("iterum_sidecar_intake_paused", reason="volume-low") == 0


def test_no_label_is_a_fragment_id() -> None:
    drv = Observed(stuck_after=1.0)
    one_fragment_run(drv)
    drv.deliver(2, b"{}")
    ids = {t.fragment for t in drv.transitions if t.fragment}
    assert A in ids and len(ids) == 2  # the input and its output
    text = generate_latest(drv.metrics.registry).decode()
    values = {v for family in text_string_to_metric_families(text)
              for sample in family.samples for v in sample.labels.values()}
    assert not values & ids
    assert all(len(v) < 40 for v in values), values


def test_storage_hooks_count_requests_bytes_and_reachability() -> None:
    metrics = Metrics()
    hooks = AdapterMetrics(metrics)
    hooks.request("GetObject", "200", 0.01)
    hooks.request("PutObject", "503", 0.01)
    assert hooks.reachable is False
    hooks.request("GetObject", "404", 0.01)  # an answer: S3 is reachable
    assert hooks.reachable is True
    hooks.request("PutObject", "error", 0.01)
    assert hooks.reachable is False
    hooks.transfer("download", 1000, 0.5)
    hooks.transfer("download", 0, 0.25)  # a failed attempt: time, no bytes
    hooks.retry("download")
    get = metrics.registry.get_sample_value
    assert get("iterum_sidecar_s3_requests_total",
               {"operation": "GetObject", "result": "200"}) == 1
    assert get("iterum_sidecar_s3_requests_total",
               {"operation": "PutObject", "result": "error"}) == 1
    assert get("iterum_sidecar_transfer_bytes_total", {"direction": "download"}) == 1000
    assert get("iterum_sidecar_transfer_seconds_total", {"direction": "download"}) == 0.75
    assert get("iterum_sidecar_retries_total", {"operation": "download"}) == 1


def test_every_metric_is_in_the_operations_table() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    for family in Metrics().registry.collect():
        suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
        assert f"| `{family.name}{suffix}` |" in doc, family.name


def test_a_scrape_reads_the_view_of_the_last_turn_never_the_core() -> None:
    """The state gauges are computed when /metrics is scraped (the HTTP thread), from the
    view the loop thread copied at the end of its last loop turn: never from the live core,
    so never from the middle of a turn (of an event, or between two events of one turn)."""
    drv = Observed()
    drv.start()
    drv.connect()
    drv.deliver_fragment(1, A)
    drv.core.states["input"]["received"] = 99  # the loop, in the middle of its next event
    drv.core.tts.clear()
    drv.core.fts.clear()
    assert drv.value("iterum_sidecar_fragments_in_flight", lifecycle="input",
                     state="received") == 1
    assert drv.value("iterum_sidecar_transformation_connected") == 1
    drv.feed_in_turn(ev.Tick())  # an event of the next turn: the turn has not ended
    drv.feed_in_turn(ev.Tick())
    assert drv.value("iterum_sidecar_fragments_in_flight", lifecycle="input",
                     state="received") == 1
    drv.observer.turn_ended()  # that turn's end: the view is the core's state again
    assert drv.value("iterum_sidecar_fragments_in_flight", lifecycle="input",
                     state="received") == 99
    assert drv.value("iterum_sidecar_transformation_connected") == 0


def test_a_pause_reason_once_seen_stays_at_0() -> None:
    drv = Observed()
    drv.start()
    # a reason not known in advance (the intake control's own field: no rule sets it)
    drv.core.parts.intake._paused = ("broker-busy",)
    drv.observer.turn_ended()  # as after a turn whose event paused intake
    assert drv.value("iterum_sidecar_intake_paused", reason="broker-busy") == 1
    drv.core.parts.intake._paused = ()
    drv.observer.turn_ended()
    assert drv.value("iterum_sidecar_intake_paused", reason="broker-busy") == 0
    assert drv.value("iterum_sidecar_intake_paused", reason="volume-low") == 0


def test_storage_hooks_lose_no_count_across_worker_threads() -> None:
    """The per-request tallies are plain dicts: the storage workers increment them under
    one lock, so concurrent calls lose nothing."""
    metrics = Metrics()
    hooks = AdapterMetrics(metrics)

    def work() -> None:
        for _ in range(2000):
            hooks.request("GetObject", "200", 0.01)
            hooks.transfer("download", 1, 0.5)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    get = metrics.registry.get_sample_value
    assert get("iterum_sidecar_s3_requests_total",
               {"operation": "GetObject", "result": "200"}) == 8000
    assert get("iterum_sidecar_transfer_bytes_total", {"direction": "download"}) == 8000
    assert get("iterum_sidecar_transfer_seconds_total", {"direction": "download"}) == 4000
