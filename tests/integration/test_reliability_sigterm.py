"""SIGTERM (docs/reliability.md, case 6): stop consuming first, so that the prefetch slots
freed by finishing fragments pull nothing new; let the fragments in flight finish within
SIDECAR_SHUTDOWN_GRACE; give the rest back to the broker (nack, requeue); exit 0. Seen on
the wire through the AMQP proxy. The `gate` transformation holds each fragment until the
test opens its gate.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from .harness import B2C, C2B, AmqpProxy, Pipeline, Proc, S3Server
from .harness.rabbit import queue_counts
from .steps import check_descriptor, dead_letters, start_step, wait_until

pytestmark = pytest.mark.integration


def consume_channel(proxy: AmqpProxy) -> int:
    [consume] = proxy.wait_for("basic.consume", direction=C2B)
    return consume.channel


def test_sigterm_stops_consuming_first_then_finishes_the_fragments_in_flight(
        pipeline: Pipeline, amqp_proxy: AmqpProxy, tmp_path: Path):
    pipeline.broker_url = amqp_proxy.url()
    gate = tmp_path / "open"
    inputs = [pipeline.send_input({f"t{i}.txt": f"term {i}"}) for i in range(6)]
    ids = [b["metadata"]["fragment_id"] for b in inputs]
    sidecar, trans = start_step(pipeline, "gate", sidecar_env={"MQ_PREFETCH_COUNT": "2"},
                                transformation_env={"GATE_FILE": str(gate)})
    channel = consume_channel(amqp_proxy)
    amqp_proxy.wait_for("basic.deliver", 2, direction=B2C)
    assert wait_until(lambda: len(trans.record().get("received", [])) >= 1, timeout=30)

    sidecar.signal(signal.SIGTERM)
    [cancel] = amqp_proxy.wait_for("basic.cancel", direction=C2B, timeout=15)
    assert cancel.channel == channel
    sidecar.wait_for_log(r"\[shutdown-requested\] SIGTERM", timeout=5)
    gate.touch()  # the transformation finishes what it holds, within the grace
    sidecar.expect_exit(0, timeout=30)

    acks = amqp_proxy.frames("basic.ack", C2B, channel=channel)
    delivers = amqp_proxy.frames("basic.deliver", B2C, channel=channel)
    assert len(delivers) == 2  # the acks freed two slots, and nothing new came
    assert acks and min(a.time for a in acks) > cancel.time  # cancel first
    # both acked, once: one ack each, or one multiple ack when one confirm frame settled
    # both lineage messages (sidecar/shell/io/acks.py)
    acked = sorted(d.delivery_tag for a in acks for d in delivers
                   if d.delivery_tag == a.delivery_tag
                   or (a.multiple and d.delivery_tag < a.delivery_tag))
    assert acked == sorted(d.delivery_tag for d in delivers)
    assert amqp_proxy.frames("basic.nack", C2B, channel=channel) == []  # both finished
    done = trans.record()["done_with"]
    outputs = pipeline.outputs(2)
    assert sorted(m.json()["metadata"]["predecessors"][0] for m in outputs) == sorted(done)
    for m in outputs:
        [pred] = m.json()["metadata"]["predecessors"]
        i = ids.index(pred)
        check_descriptor(pipeline, m, predecessors=[pred],
                         contents={f"gated_t{i}.txt": f"term {i}".encode()})
    assert queue_counts(pipeline.input_queue) == (4, 0)  # the rest is untouched
    assert "Traceback" not in sidecar.logs
    trans.kill()


def test_sigterm_gives_back_what_does_not_finish_within_the_grace(
        pipeline: Pipeline, amqp_proxy: AmqpProxy, tmp_path: Path):
    pipeline.broker_url = amqp_proxy.url()
    for i in range(3):
        pipeline.send_input({f"held{i}.txt": "held"})
    sidecar, trans = start_step(pipeline, "gate", sidecar_env={
        "MQ_PREFETCH_COUNT": "2", "SIDECAR_SHUTDOWN_GRACE": "2"},
        transformation_env={"GATE_FILE": str(tmp_path / "never")})
    channel = consume_channel(amqp_proxy)
    delivers = amqp_proxy.wait_for("basic.deliver", 2, direction=B2C)
    assert wait_until(lambda: len(trans.record().get("received", [])) >= 1, timeout=30)

    sidecar.signal(signal.SIGTERM)
    sidecar.expect_exit(0, timeout=30)

    nacks = amqp_proxy.frames("basic.nack", C2B, channel=channel)
    assert sorted(n.delivery_tag for n in nacks) == sorted(d.delivery_tag for d in delivers)
    assert all(n.args[8] & 2 for n in nacks)  # requeue bit
    sidecar.wait_for_log(r"\[requeued-shutdown\] shutdown grace over", timeout=1)
    assert queue_counts(pipeline.input_queue) == (3, 0)
    assert pipeline.outputs() == [] and dead_letters(pipeline) == []
    trans.kill()


@pytest.mark.parametrize("hanging", ["GetObject", "PutObject"])
def test_sigterm_with_a_transfer_that_never_answers_still_exits_0_and_gives_back(
        pipeline: Pipeline, s3: S3Server, hanging: str):
    """A download hangs (the input is not dispatched yet), or the input is processed and
    its output's upload hangs: after the grace the input goes back (no output was
    published) and the sidecar exits 0 without waiting out the storage timeouts and
    retries; a new sidecar then completes it."""
    body = pipeline.send_input({"stuck.txt": "stuck transfer"})
    fid = body["metadata"]["fragment_id"]
    transfer = s3.stall(op=hanging)
    sidecar, trans = start_step(pipeline, "passthrough", sidecar_env={
        "SIDECAR_SHUTDOWN_GRACE": "2", "SIDECAR_STORAGE_TIMEOUT": "30"})
    assert transfer.wait_hit(30)
    if hanging == "PutObject":
        assert wait_until(lambda: trans.record().get("done_with") == [fid], timeout=15)

    sidecar.signal(signal.SIGTERM)
    sidecar.expect_exit(0, timeout=20)

    if hanging == "PutObject":
        sidecar.wait_for_log(r"\[output-abandoned\]", timeout=1)
        sidecar.wait_for_log(r"\[requeued-shutdown\]", timeout=1)
    else:
        sidecar.wait_for_log(r"\[requeued-stopping\]", timeout=1)
        sidecar.wait_for_log(r"\[downloads-abandoned\]", timeout=1)
    assert "Traceback" not in sidecar.logs
    assert queue_counts(pipeline.input_queue) == (1, 0)
    assert pipeline.outputs() == [] and pipeline.lineage() == []
    assert dead_letters(pipeline) == []
    trans.kill()
    transfer.release()
    _finish_elsewhere(pipeline, fid)


def _finish_elsewhere(pipeline: Pipeline, fid: str) -> None:
    """A new sidecar processes the given-back input: nothing was lost."""
    sidecar = pipeline.start_sidecar()
    pipeline.wait_for_sockets()
    trans: Proc = pipeline.start_transformation("passthrough")
    [out] = pipeline.outputs(1)
    assert out.json()["metadata"]["predecessors"] == [fid]
    pipeline.finish_upstream()
    trans.expect_exit(0, timeout=30)
    sidecar.expect_exit(0, timeout=30)
