"""The HTTP endpoint on an ephemeral port: /metrics from the sidecar's own registry,
/healthz and /readyz as Kubernetes probes, /debug/fragments as JSON. It only reads the
snapshot the loop thread published (here: built from a unit-driven Core)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from unit_driver import Driver, fid, remote_body

from sidecar.core import events as ev
from sidecar.shell.config import ANY_PORT
from sidecar.shell.http import HEARTBEAT_LIMIT, LISTENING_PORT, Board, HttpServer
from sidecar.shell.metrics import Metrics
from sidecar.shell.operate import bind_failure, snapshot

A, B = fid("a"), fid("b")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def storage() -> dict[str, bool]:
    return {"reachable": True}


@pytest.fixture
def board(clock: Clock, storage: dict[str, bool]) -> Board:
    return Board(clock, lambda: storage["reachable"])


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def server(board: Board, metrics: Metrics) -> Iterator[HttpServer]:
    srv = HttpServer("127.0.0.1", 0, board, metrics.registry)
    srv.start()
    yield srv
    srv.stop()


def get(server: HttpServer, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read()


def running_core(clock: Clock) -> Driver:
    drv = Driver(stuck_after=30.0)
    drv.start()
    drv.feed(ev.Connected(1, "tts"), at=clock.now - 50)
    drv.feed(ev.Connected(2, "fts"))
    drv.ready_input(1, A)  # dispatched 50 s ago: stuck after 30 s
    drv.feed(ev.Delivered(2, remote_body(B)), at=clock.now - 20)  # not stuck yet
    drv.feed(ev.Tick(), at=clock.now - 10)
    return drv


def test_metrics_are_served_in_the_prometheus_format(server, metrics) -> None:
    metrics.redeliveries.inc()
    status, content_type, body = get(server, "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    text = body.decode()
    assert "iterum_sidecar_redeliveries_total 1.0" in text
    assert "iterum_sidecar_fragments_in_flight{" in text
    assert "python_gc" not in text  # a registry of its own, not the global one


def test_healthz_is_ok_while_the_loop_publishes(server, board, clock) -> None:
    board.publish(snapshot(Driver().core, clock.now, {}))
    status, content_type, body = get(server, "/healthz")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body)["alive"] is True
    clock.now += HEARTBEAT_LIMIT + 1  # the loop stopped publishing
    assert get(server, "/healthz")[0] == 503


def test_readyz_needs_broker_storage_transformation_and_volume(server, board, clock,
                                                                 storage) -> None:
    status, _, body = get(server, "/readyz")  # before the loop ran
    assert status == 503
    assert json.loads(body)["checks"]["broker"] is False

    drv = running_core(clock)
    board.publish(snapshot(drv.core, clock.now, {}))
    status, _, body = get(server, "/readyz")
    doc = json.loads(body)
    assert status == 200, doc
    assert doc["checks"] == {"broker": True, "storage": True, "transformation": True,
                             "volume": True}
    assert doc["stuck"] == 1

    storage["reachable"] = False
    status, _, body = get(server, "/readyz")
    assert status == 503 and json.loads(body)["checks"]["storage"] is False
    storage["reachable"] = True

    drv.disconnect()  # the transformation is gone
    board.publish(snapshot(drv.core, clock.now, {}))
    status, _, body = get(server, "/readyz")
    assert status == 503 and json.loads(body)["checks"]["transformation"] is False


def test_readyz_fails_while_the_volume_is_nearly_full(server, board, clock) -> None:
    drv = Driver(volume_min_free=1000)
    drv.start()
    drv.connect()
    drv.feed(ev.VolumeSpace(10, 10_000))
    board.publish(snapshot(drv.core, clock.now, {}))
    status, _, body = get(server, "/readyz")
    doc = json.loads(body)
    assert status == 503
    assert doc["checks"]["volume"] is False and doc["paused"] == ["volume-low"]
    assert doc["intake"] == "pausing"  # the consumer's cancel is on its way


def test_debug_fragments_lists_state_and_age(server, board, clock) -> None:
    drv = running_core(clock)
    board.publish(snapshot(drv.core, clock.now - 1, {"input acked": 3}))
    status, content_type, body = get(server, "/debug/fragments")
    assert (status, content_type) == (200, "application/json")
    doc = json.loads(body)
    assert doc["step"] == "consuming" and doc["intake"] == "consuming"
    assert doc["totals"] == {"input acked": 3}
    assert doc["counts"]["input"] == {"dispatched": 1, "received": 1}
    by_id = {f["fragment_id"]: f for f in doc["in_flight"]}
    assert by_id[A]["state"] == "dispatched" and by_id[A]["stuck"] is True
    assert by_id[B]["state"] == "received" and by_id[B]["stuck"] is False
    assert by_id[A]["in_state_seconds"] == pytest.approx(
        clock.now - drv.inputs[A].history[-1][1], abs=0.01)
    assert by_id[A]["age_seconds"] >= by_id[A]["in_state_seconds"]


def test_unknown_paths_are_404(server) -> None:
    status, _, body = get(server, "/nope")
    assert status == 404 and "/readyz" in json.loads(body)["endpoints"]


def test_a_taken_port_fails_at_bind(server, board, metrics) -> None:
    with pytest.raises(OSError):
        HttpServer("127.0.0.1", server.port, board, metrics.registry)


@pytest.mark.parametrize("port", [9090, ANY_PORT])
def test_a_taken_port_says_what_to_do(server, board, metrics, port: int) -> None:
    with pytest.raises(OSError) as err:
        HttpServer("127.0.0.1", server.port, board, metrics.registry)
    line = bind_failure("127.0.0.1", port, err.value)
    where = "auto" if port == ANY_PORT else str(port)
    assert line.startswith(f"HTTP endpoint 127.0.0.1:{where} (SIDECAR_HTTP_PORT): ")
    assert "SIDECAR_HTTP_PORT to a free port" in line and "`auto`" in line
    assert "0 to switch the endpoint off" in line


def test_the_started_line_names_the_bound_port(board, metrics, caplog) -> None:
    """SIDECAR_HTTP_PORT=auto: the kernel's port is what the log line names (and what the
    demo and the test harness read back)."""
    srv = HttpServer("127.0.0.1", 0, board, metrics.registry)
    with caplog.at_level("INFO", logger="sidecar.http"):
        srv.start(auto=True)
    srv.stop()
    [line] = [r.getMessage() for r in caplog.records if r.name == "sidecar.http"]
    match = LISTENING_PORT.search(line)
    assert match and int(match.group(1)) == srv.port != 0
    assert "SIDECAR_HTTP_PORT=auto" in line
