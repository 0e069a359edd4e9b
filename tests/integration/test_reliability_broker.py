"""Case 3 of docs/reliability.md: the broker connection is lost (dropped by a proxy, closed
by the broker, stalled) while a step runs. The sidecar reconnects with backoff, declares
again, re-sends what was not confirmed and resumes; nothing is lost, no fragment is stuck,
and no message id is ever published with two different bodies. Past its budget it exits 1
with one error line, having acked nothing it should not have.

Faults are injected in front of the real RabbitMQ: the AmqpProxy drops, stalls or refuses
connections, and `rabbitmqctl close_connection` has the broker itself close the sidecar's
connection (the targeted form of `close_all_connections`, harness/rabbit.py).
"""

from __future__ import annotations

import re
import time
from collections import defaultdict

import pytest

from sidecar.core.protocol import output_id

from .harness import B2C, C2B, AmqpProxy, Message, Pipeline
from .harness.rabbit import close_connections, queue_counts
from .steps import finish_step, log_lines, start_step, volume_files, wait_until

pytestmark = pytest.mark.integration


class Collector:
    """Takes messages off the output and lineage queues as they come (the combiner)."""

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self.outputs: list[Message] = []
        self.lineage: list[Message] = []

    def poll(self) -> None:
        self.outputs += self.pipeline.rabbit.drain(self.pipeline.output_queue)
        self.lineage += self.pipeline.rabbit.drain(self.pipeline.lineage_queue)

    def ids(self) -> set[str]:
        return {m.properties.message_id for m in self.outputs}

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        def enough() -> bool:
            self.poll()
            return len(self.ids()) >= count

        assert wait_until(enough, timeout), f"{len(self.ids())} of {count} outputs"


def check_outputs(pipeline: Pipeline, inputs: list[dict], got: Collector,
                  unacked: list[dict] = ()) -> dict[str, int]:
    """Every input has its output (the deterministic id of its first output); every message
    id has one body on the output queue and one on the lineage queue. Inputs not acked
    (back in the queue) may have published theirs already. Returns counts."""
    got.poll()
    bodies: dict[str, set[bytes]] = defaultdict(set)
    for m in got.outputs:
        bodies[m.properties.message_id].add(m.body)
    expected = {output_id(pipeline.name, [b["metadata"]["fragment_id"]], 0) for b in inputs}
    allowed = expected | {output_id(pipeline.name, [b["metadata"]["fragment_id"]], 0)
                          for b in unacked}
    assert expected <= set(bodies) <= allowed, (len(set(bodies)), len(expected))
    conflicting = {k: v for k, v in bodies.items() if len(v) != 1}
    assert conflicting == {}, "a message id published with different bodies"
    described: dict[str, set[bytes]] = defaultdict(set)
    for m in got.lineage:
        described[m.json()["description"]["metadata"]["fragment_id"]].add(m.body)
    assert expected <= set(described) <= allowed
    assert all(len(v) == 1 for v in described.values())
    return {"inputs": len(inputs), "outputs published": len(got.outputs),
            "distinct outputs": len(bodies), "lineage published": len(got.lineage)}


def no_exception_of_ours(logs: str) -> bool:
    """No stack through the sidecar's own code (at DEBUG, pika's own stacks for a lost
    connection are kept: they are warnings, sidecar/shell/logs.py)."""
    return re.search(r'File "[^"]*/sidecar/', logs) is None


def check_acks(proxy: AmqpProxy) -> int:
    """Per connection and channel, every ack names a tag delivered on it, and settles each
    at most once (a tag of a lost channel is never acked on a new one). A multiple ack (the
    acks of one confirm frame, sidecar/shell/io/acks.py) settles every tag delivered on its
    channel up to its own that was not settled before, in the order the frames were sent.
    Returns the number of deliveries acked."""
    delivered = defaultdict(set)
    for f in proxy.frames("basic.deliver", B2C):
        delivered[(f.conn, f.channel)].add(f.delivery_tag)
    acks = 0
    seen = set()
    settles = ("basic.ack", "basic.nack", "basic.reject")
    for f in proxy.frames(direction=C2B):  # in the order sent
        if f.name not in settles:
            continue
        channel, key = (f.conn, f.channel), (f.conn, f.channel, f.delivery_tag)
        assert f.delivery_tag in delivered[channel], f"{f.name} of unknown {key}"
        assert key not in seen, f"{key} settled twice"
        covered = {key}
        if f.multiple:
            assert f.name == "basic.ack", f"multiple {f.name}"
            covered |= {(*channel, t) for t in delivered[channel] if t < f.delivery_tag} - seen
        seen |= covered
        acks += len(covered) if f.name == "basic.ack" else 0
    return acks


def test_dropped_and_closed_connections_lose_nothing(pipeline: Pipeline,
                                                     amqp_proxy: AmqpProxy):
    """~50 fragments; the proxy drops every connection twice (once while confirms are held
    back, so publishes are unconfirmed at the drop) and the broker closes the sidecar's
    connection once (confirms held again). In the end every input is acked, every output
    published with one body per id, the volume is clean and the sidecar exits 0."""
    pipeline.broker_url = amqp_proxy.url()
    inputs: list[dict] = []

    def send(n: int) -> None:
        inputs.extend(pipeline.send_input({f"b{len(inputs):02d}.txt": f"broker {len(inputs)}"})
                      for _ in range(n))

    send(15)
    sidecar, trans = start_step(pipeline, "passthrough",
                                sidecar_env={"MQ_PREFETCH_COUNT": "8"})
    got = Collector(pipeline)
    reconnects = 0

    def reconnected() -> None:
        nonlocal reconnects
        reconnects += 1
        sidecar.wait_for_log(rf"(?s)(broker-reconnected.*){{{reconnects}}}", timeout=30)

    # 1. confirms held back while 10 more are processed, then every connection dropped
    got.wait_for(15)
    amqp_proxy.hold_confirms()
    send(10)
    assert wait_until(lambda: amqp_proxy.held >= 2, timeout=15), "no confirm to hold"
    amqp_proxy.drop_all()
    amqp_proxy.release()  # nothing is left to release: the parked frames died with the drop
    reconnected()
    # 2. a plain drop with deliveries on their way
    got.wait_for(25)
    send(10)
    amqp_proxy.drop_all()
    reconnected()
    # 3. the broker closes the sidecar's connection, confirms held back again
    got.wait_for(35)
    amqp_proxy.hold_confirms()
    send(10)
    assert wait_until(lambda: amqp_proxy.held >= 1, timeout=15), "no confirm to hold"
    assert close_connections(pipeline.input_queue) == 1
    sidecar.wait_for_log(r"CONNECTION_FORCED", timeout=15)
    amqp_proxy.release()
    reconnected()
    send(5)

    got.wait_for(50, timeout=60)
    pipeline.finish_upstream()
    trans.expect_exit(0, timeout=60)
    sidecar.expect_exit(0, timeout=60)

    counts = check_outputs(pipeline, inputs, got)
    assert queue_counts(pipeline.input_queue) == (0, 0)
    assert pipeline.rabbit.ready(pipeline.dead_queue) == 0 if pipeline.rabbit.exists(
        pipeline.dead_queue) else True
    acks = check_acks(amqp_proxy)
    resent = [int(n) for n in re.findall(r"(\d+) unconfirmed publish\(es\) sent again",
                                         sidecar.logs)]
    assert len(resent) == 3 and resent[0] >= 1 and resent[2] >= 1, resent
    assert volume_files(pipeline.volume) == []
    assert no_exception_of_ours(sidecar.logs)
    assert log_lines(sidecar.logs, "ERROR") == []
    summary = sidecar.wait_for_log(r"exiting with code 0 after [0-9.]+s: done \((.*)\)", 1)
    acked = int(re.search(r"(\d+) input acked", summary.group(1)).group(1))
    assert acked >= 50 and acks >= 50
    print(f"\nbroker faults: 3 (2 proxy drops, 1 broker close); {counts}; acks {acks}; "
          f"re-sent after each reconnect {resent}; sidecar summary: {summary.group(1)}")


def test_a_stalled_connection_is_detected_and_replaced(pipeline: Pipeline,
                                                      amqp_proxy: AmqpProxy):
    """Nothing moves either way (heartbeats too): the sidecar's heartbeat check gives up on
    the connection and opens a new one once traffic flows again."""
    pipeline.broker_url = amqp_proxy.url(heartbeat=1)
    inputs = [pipeline.send_input({f"s{i}.txt": f"stall {i}"}) for i in range(6)]
    sidecar, trans = start_step(pipeline, "passthrough")
    got = Collector(pipeline)
    got.wait_for(3)
    amqp_proxy.stall()
    sidecar.wait_for_log(r"broker-lost", timeout=30)
    amqp_proxy.resume()
    sidecar.wait_for_log(r"broker-reconnected", timeout=30)
    more = [pipeline.send_input({f"t{i}.txt": f"after {i}"}) for i in range(4)]
    got.wait_for(10)
    pipeline.finish_upstream()
    trans.expect_exit(0, timeout=30)
    sidecar.expect_exit(0, timeout=30)
    check_outputs(pipeline, inputs + more, got)
    assert queue_counts(pipeline.input_queue) == (0, 0)
    assert volume_files(pipeline.volume) == []


def test_broker_gone_beyond_the_budget_exits_1_with_one_line(pipeline: Pipeline,
                                                            amqp_proxy: AmqpProxy, s3):
    """The broker stays unreachable past SIDECAR_BROKER_RETRY_SECONDS while inputs are in
    flight (confirms held back, one upload stalled): exit 1 with one error line; every
    input not acked is back in the queue, every acked one has its output, and the
    output whose upload was in flight does not stay on the volume."""
    pipeline.broker_url = amqp_proxy.url()
    first = [pipeline.send_input({f"g{i}.txt": f"good {i}"}) for i in range(3)]
    sidecar, trans = start_step(pipeline, "passthrough",
                                sidecar_env={"SIDECAR_BROKER_RETRY_SECONDS": "2"})
    got = Collector(pipeline)
    got.wait_for(3)
    assert wait_until(lambda: queue_counts(pipeline.input_queue) == (0, 0))
    amqp_proxy.hold_confirms()
    held = pipeline.send_input({"held.txt": "its confirm never comes"})
    assert wait_until(lambda: amqp_proxy.held >= 1, timeout=15)
    stall = s3.stall(op="PutObject", bucket=pipeline.output_bucket)
    stuck = pipeline.send_input({"stuck.txt": "its upload hangs"})
    assert stall.wait_hit(15)
    amqp_proxy.refuse_new(True)
    amqp_proxy.drop_all()
    sidecar.wait_for_log(r"broker-unreachable", timeout=30)
    stall.release()
    sidecar.expect_exit(1, timeout=30)
    trans.stop()

    errors = log_lines(sidecar.logs, "ERROR")
    assert len(errors) == 1 and "SIDECAR_BROKER_RETRY_SECONDS=2s" in errors[0], errors
    assert no_exception_of_ours(sidecar.logs)
    # the two inputs in flight are back in the queue; the three before stay acked
    assert wait_until(lambda: queue_counts(pipeline.input_queue) == (2, 0))
    check_outputs(pipeline, first, got, unacked=[held, stuck])
    check_acks(amqp_proxy)
    assert volume_files(pipeline.volume) == []


def test_broker_unreachable_at_start_exits_1_with_one_line(pipeline: Pipeline,
                                                          amqp_proxy: AmqpProxy):
    amqp_proxy.refuse_new(True)
    pipeline.broker_url = amqp_proxy.url()
    started = time.monotonic()
    sidecar = pipeline.start_sidecar(SIDECAR_BROKER_RETRY_SECONDS="1.5")
    sidecar.expect_exit(1, timeout=30)
    errors = log_lines(sidecar.logs, "ERROR")
    assert len(errors) == 1 and "cannot connect to the broker" in errors[0], errors
    assert no_exception_of_ours(sidecar.logs)
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_an_outage_logs_one_line_per_reconnect_attempt(pipeline: Pipeline,
                                                       amqp_proxy: AmqpProxy, level: str):
    """The broker unreachable mid-run for at least four reconnect attempts (counted in the
    log, not timed). Below DEBUG the outage is the loss, one line per attempt naming the
    broker, the attempt and the time left, and the reconnection: a bounded number of lines
    per outage second, none of pika's. At DEBUG pika's own records are there too."""
    pipeline.broker_url = amqp_proxy.url()
    first = pipeline.send_input({"o1.txt": "before the outage"})
    sidecar, trans = start_step(pipeline, "passthrough", sidecar_env={
        "SIDECAR_LOG_LEVEL": level, "SIDECAR_BROKER_RETRY_SECONDS": "120"})
    got = Collector(pipeline)
    got.wait_for(1)
    before = len(sidecar.logs.splitlines())
    amqp_proxy.refuse_new(True)
    amqp_proxy.drop_all()
    started = time.monotonic()
    sidecar.wait_for_log(r"\(attempt 4\); next attempt", timeout=60)
    amqp_proxy.refuse_new(False)
    sidecar.wait_for_log(r"\[broker-reconnected\]", timeout=60)
    outage = time.monotonic() - started
    lines = sidecar.logs.splitlines()[before:]
    lines = lines[:next(i for i, ln in enumerate(lines) if "[broker-reconnected]" in ln) + 1]
    second = pipeline.send_input({"o2.txt": "after the outage"})
    got.wait_for(2)
    finish_step(pipeline, sidecar, trans)
    check_outputs(pipeline, [first, second], got)

    address = f"{amqp_proxy.host}:{amqp_proxy.port}"
    attempts = [ln for ln in lines if re.search(r"cannot connect to the broker at .*\(attempt ",
                                                 ln)]
    numbers = [int(re.search(r"\(attempt (\d+)\)", ln).group(1)) for ln in attempts]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 4, attempts
    for ln in attempts:
        assert f"at {address}: ConnectionRefusedError" in ln, ln
        assert re.search(r"next attempt in [\d.]+s, \d+s left of "
                         r"SIDECAR_BROKER_RETRY_SECONDS=120s$", ln), ln
    pika = [ln for ln in lines if " pika." in ln]
    if level == "DEBUG":
        assert any(" WARNING pika." in ln for ln in pika), "pika's records are kept at DEBUG"
        return
    # the loss (the core's line, the adapter's first retry), the attempts, the reconnection
    assert len(lines) <= 3 + 2 * outage, (len(lines), outage, "\n".join(lines))
    assert len(lines) <= len(attempts) + 3, "\n".join(lines)
    assert pika == [], pika
