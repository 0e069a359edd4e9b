"""Ack only when the outputs are durable (protocol §16.8, §16.13).

With the publish of an output held back, the input stays unacked; once the confirm
arrives, it is acked. The Go original acked on done_with: it would fail here.
"""

from __future__ import annotations

import time

import pytest

from .harness import B2C, C2B, AmqpProxy, Pipeline
from .harness.rabbit import queue_counts
from .steps import check_descriptor, check_lineage, finish_step, start_step, wait_until

pytestmark = pytest.mark.integration

HOLD_SECONDS = 3.0  # how long the input is watched staying unacked


def test_input_is_acked_only_after_the_output_publish_is_confirmed(pipeline: Pipeline,
                                                                   amqp_proxy: AmqpProxy):
    amqp_proxy.hold_confirms()  # the broker's publisher confirms to the sidecar are parked
    pipeline.broker_url = amqp_proxy.url()
    body = pipeline.send_input({"gated.txt": "hold my ack"})
    fid = body["metadata"]["fragment_id"]
    sidecar, trans = start_step(pipeline, "passthrough")

    # The output's descriptor reaches the output queue, and the transformation said done_with.
    [out] = pipeline.outputs(1)
    assert wait_until(lambda: trans.record().get("done_with") == [fid]), trans.record()
    # the sidecar handled done_with: it deleted its copy of the input
    assert wait_until(lambda: not (pipeline.volume / pipeline.input_bucket / fid).exists())

    [consume] = amqp_proxy.frames("basic.consume", C2B)
    [deliver] = amqp_proxy.frames("basic.deliver", B2C, channel=consume.channel)
    time.sleep(HOLD_SECONDS)  # the input must stay unacked however long the confirm takes
    assert amqp_proxy.frames("basic.ack", C2B, channel=consume.channel) == []
    assert queue_counts(pipeline.input_queue) == (0, 1)
    assert amqp_proxy.held >= 1
    assert pipeline.lineage() == []  # lineage waits for the descriptor's confirm (§16.13)

    released = amqp_proxy.release()
    assert released >= 1
    [ack] = amqp_proxy.wait_for("basic.ack", direction=C2B, timeout=15)
    assert ack.channel == consume.channel
    assert ack.delivery_tag == deliver.delivery_tag and ack.multiple is False
    lineage = pipeline.lineage(1)
    assert wait_until(lambda: queue_counts(pipeline.input_queue) == (0, 0))
    # the ack came after the lineage publish was confirmed too
    confirms = [f for f in amqp_proxy.frames("basic.ack", B2C)
                if f.channel != consume.channel]
    assert len(confirms) == 2  # the descriptor's, then the lineage's
    assert ack.time >= max(f.time for f in confirms)

    finish_step(pipeline, sidecar, trans)
    check_descriptor(pipeline, out, predecessors=[fid],
                     contents={"out_gated.txt": b"hold my ack"})
    check_lineage(pipeline, [out], lineage)
    assert len(amqp_proxy.frames("basic.ack", C2B, channel=consume.channel)) == 1
