"""SIGTERM at the edges of a run (docs/reliability.md, case 6): during start-up, before the
broker connection is open (TCP accepted, the AMQP handshake pending or half done, a retry
backoff between attempts). Nothing was taken from any queue at start-up, so the exit
status is 0, without a traceback.

The AMQP proxy plays the slow broker: it accepts TCP and forwards nothing (stall), or
holds one handshake method of the broker's (connection.start, .tune, .open-ok).
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from .harness import C2B, AmqpProxy, Pipeline, Proc
from .harness.rabbit import queue_counts
from .steps import wait_until

pytestmark = pytest.mark.integration
CLEAN_EXIT = r"exiting with code 0 after [\d.]+s: "


def sigterm_once_logged(sidecar: Proc, pattern: str) -> None:
    """SIGTERM once the sidecar logged `pattern`; it exits 0, cleanly."""
    sidecar.wait_for_log(pattern, timeout=20)
    sidecar.terminate()
    expect_clean_exit(sidecar)


def expect_clean_exit(sidecar: Proc) -> None:
    sidecar.expect_exit(0, timeout=30)
    assert "Traceback" not in sidecar.logs, sidecar.tail()
    assert "AssertionError" not in sidecar.logs, sidecar.tail()
    sidecar.wait_for_log(r"\[shutdown-requested\] SIGTERM", timeout=1)
    sidecar.wait_for_log(CLEAN_EXIT, timeout=1)


class FullBacklog:
    """A port whose accept queue is full: the kernel drops a new connection's SYN, so the
    sidecar's connect() stays pending (TCP not even accepted)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=0)
        self.port = self.listener.getsockname()[1]
        self.fillers = [socket.socket() for _ in range(3)]
        for filler in self.fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", self.port))

    def close(self) -> None:
        for sock in (*self.fillers, self.listener):
            sock.close()


def holding(method: str) -> Callable[[AmqpProxy], None]:
    return lambda proxy: proxy.hold(lambda f: f.name == method)


@pytest.mark.parametrize("slow_broker", [
    pytest.param(AmqpProxy.stall, id="tcp-accepted-nothing-answered"),
    pytest.param(holding("connection.start"), id="protocol-header-unanswered"),
    pytest.param(holding("connection.tune"), id="start-ok-unanswered"),
    pytest.param(holding("connection.open-ok"), id="open-unanswered"),
])
def test_sigterm_while_the_broker_connection_opens_exits_0(
        pipeline: Pipeline, amqp_proxy: AmqpProxy,
        slow_broker: Callable[[AmqpProxy], None]):
    pipeline.send_input({"untouched.txt": "never taken"})
    slow_broker(amqp_proxy)
    pipeline.broker_url = amqp_proxy.url()
    sidecar = pipeline.start_sidecar()
    if slow_broker is AmqpProxy.stall:
        assert wait_until(lambda: amqp_proxy.accepted >= 1, timeout=20), sidecar.tail()
    else:  # the broker's answer is parked in the proxy: the handshake is pending
        assert wait_until(lambda: amqp_proxy.held >= 1, timeout=20), sidecar.tail()
    sigterm_once_logged(sidecar, r"started: consuming")
    amqp_proxy.resume()
    assert queue_counts(pipeline.input_queue) == (1, 0)


def test_sigterm_while_tcp_connect_is_pending_exits_0(pipeline: Pipeline):
    backlog = FullBacklog()
    try:
        pipeline.broker_url = f"amqp://guest:guest@127.0.0.1:{backlog.port}/%2F"
        sidecar = pipeline.start_sidecar()
        sigterm_once_logged(sidecar, r"started: consuming")
    finally:
        backlog.close()


def test_sigterm_before_the_broker_connection_is_tried_exits_0(pipeline: Pipeline):
    """As soon as the HTTP endpoint is up (the first thing the run binds), before the
    sockets and the broker: the loop handles the signal once it runs."""
    sidecar = pipeline.start_sidecar()
    sigterm_once_logged(sidecar, r"http: /metrics")


def test_sigterm_during_the_backoff_between_connection_attempts_exits_0(
        pipeline: Pipeline, amqp_proxy: AmqpProxy):
    amqp_proxy.refuse_new(True)
    pipeline.broker_url = amqp_proxy.url()
    sidecar = pipeline.start_sidecar()
    sigterm_once_logged(sidecar, r"cannot connect to the broker: .*; retrying in")


def test_sigterm_just_after_the_consumer_started_exits_0(
        pipeline: Pipeline, amqp_proxy: AmqpProxy):
    """No transformation yet: what the consumer received is given back."""
    for i in range(3):
        pipeline.send_input({f"early{i}.txt": "given back"})
    pipeline.broker_url = amqp_proxy.url()
    sidecar = pipeline.start_sidecar()
    amqp_proxy.wait_for("basic.consume", direction=C2B, timeout=20)
    sidecar.terminate()
    expect_clean_exit(sidecar)
    assert wait_until(lambda: queue_counts(pipeline.input_queue) == (3, 0))
