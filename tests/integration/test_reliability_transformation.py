"""The transformation crashes, disconnects or never connects (docs/reliability.md, case 4;
§16.5). A crash is a SIGKILL of the pyterum process; a disconnect is a raw client that
closes both sockets holding a fragment. Within SIDECAR_TRANSFORMATION_GRACE a reconnected
transformation gets the unfinished fragments again and every input is acked exactly once;
past it the inputs go back to the broker and the sidecar exits 3. One that never connects
ends the run after SIDECAR_TRANSFORMATION_CONNECT_TIMEOUT, the same way. (A crash and
reconnect with one fragment, replayed from the journal: test_journal.py.)
"""

from __future__ import annotations

import pytest

from .harness import Pipeline
from .harness.rabbit import queue_counts
from .harness.raw import RawTransformation
from .steps import (
    by_predecessors,
    check_descriptor,
    check_lineage,
    dead_letters,
    finish_step,
    start_step,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_sigkill_then_a_new_transformation_gets_the_unfinished_fragments(pipeline: Pipeline):
    """`pair` has finished two inputs (one output) and holds the third when it is killed;
    a passthrough reconnects and gets the held one again: three inputs acked, two outputs,
    nothing lost and nothing published twice."""
    inputs = [pipeline.send_input({f"k{i}.txt": f"kill {i}"}) for i in range(3)]
    ids = [b["metadata"]["fragment_id"] for b in inputs]
    sidecar, holder = start_step(pipeline, "pair", sidecar_env={"MQ_PREFETCH_COUNT": "3"})
    [pair] = pipeline.outputs(1)
    assert wait_until(lambda: len(holder.record().get("received", [])) == 3, timeout=30)
    holder.kill()  # SIGKILL: no kill message, no done_with for the held input
    sidecar.wait_for_log(r"\[transformation-disconnected\]", timeout=15)
    held = sorted(set(ids) - set(pair.json()["metadata"]["predecessors"]))
    assert queue_counts(pipeline.input_queue) == (0, 1)  # the held one, still unacked

    trans = pipeline.start_transformation("passthrough")
    [single] = pipeline.outputs(1)
    sidecar.wait_for_log(r"\[redispatched\] 1 fragment\(s\) sent again", timeout=1)
    lineage = pipeline.lineage(2)
    finish_step(pipeline, sidecar, trans)

    assert [r["fragment_id"] for r in trans.record()["received"]] == held
    check_descriptor(pipeline, single, predecessors=held,
                     contents={f"out_{inputs[ids.index(held[0])]['files'][0]['name']}":
                               f"kill {ids.index(held[0])}".encode()})
    assert sorted(by_predecessors([pair, single])) == sorted(
        [tuple(sorted(pair.json()["metadata"]["predecessors"])), tuple(held)])
    check_lineage(pipeline, [pair, single], lineage)
    assert pipeline.outputs() == [] and dead_letters(pipeline) == []
    assert queue_counts(pipeline.input_queue) == (0, 0)


def test_a_clean_disconnect_mid_fragment_is_redispatched_on_reconnect(pipeline: Pipeline):
    body = pipeline.send_input({"d.txt": "disconnected"})
    fid = body["metadata"]["fragment_id"]
    sidecar = pipeline.start_sidecar()
    pipeline.wait_for_sockets()
    raw = RawTransformation(pipeline.volume)
    first = raw.receive()
    assert first["metadata"]["fragment_id"] == fid
    raw.close()  # both sockets closed, no done_with, no kill
    sidecar.wait_for_log(r"\[transformation-disconnected\]", timeout=15)

    again = RawTransformation(pipeline.volume)
    assert again.receive() == first  # the same LocalFragmentDesc, same files
    again.send({"fragment_id": fid})  # done_with (a 1→0 step)
    assert wait_until(lambda: queue_counts(pipeline.input_queue) == (0, 0), timeout=15)
    pipeline.finish_upstream()
    assert again.receive() == {"status": "complete"}
    again.send({"status": "complete"})
    again.close()
    sidecar.expect_exit(0, timeout=30)


def test_sigkill_without_a_return_gives_the_inputs_back_and_exits_3(pipeline: Pipeline):
    for i in range(2):
        pipeline.send_input({f"lost{i}.txt": "held"})
    sidecar, holder = start_step(pipeline, "pair", sidecar_env={
        "SIDECAR_TRANSFORMATION_GRACE": "2", "MQ_PREFETCH_COUNT": "1"})
    # prefetch 1: pair holds the first input and waits for a partner it never gets
    assert wait_until(lambda: len(holder.record().get("received", [])) == 1, timeout=30)
    holder.kill()
    sidecar.expect_exit(3, timeout=30)

    sidecar.wait_for_log(r"\[transformation-lost\] the transformation did not reconnect "
                         r"within 2s", timeout=1)
    sidecar.wait_for_log(r"\[requeued-stopping\]", timeout=1)
    assert "Traceback" not in sidecar.logs
    # both inputs are back in the queue (the held one requeued, the other never taken)
    assert wait_until(lambda: queue_counts(pipeline.input_queue) == (2, 0), timeout=15)
    assert dead_letters(pipeline) == [] and pipeline.outputs() == []


def test_a_transformation_that_never_connects_ends_the_run_with_exit_3(pipeline: Pipeline):
    pipeline.send_input({"nobody.txt": "waiting"})
    sidecar = pipeline.start_sidecar(SIDECAR_TRANSFORMATION_CONNECT_TIMEOUT="2")
    sidecar.expect_exit(3, timeout=30)

    sidecar.wait_for_log(r"\[transformation-never-connected\] the transformation did not "
                         r"connect to the sockets within 2s", timeout=1)
    assert "Traceback" not in sidecar.logs
    assert not (pipeline.volume / "tts.sock").exists()
    assert queue_counts(pipeline.input_queue) == (1, 0)  # given back, not dead-lettered
    assert dead_letters(pipeline) == []
