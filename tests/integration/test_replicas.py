"""Case 8 of docs/reliability.md: three replicas of a step (a sidecar and a transformation
each, each pair on its own volume, as pods of a Job with parallelism 3) compete for one
input queue; one pod is killed midway (SIGKILL, both containers). The broker requeues what
the killed sidecar had not acked and the survivors process it: every input has its outputs,
an output may be published twice but never with two different bodies under one message id,
and both survivors exit 0.

The killed replica talks to the broker through the AMQP proxy, whose publisher confirms are
held back before the kill: it dies with outputs published but its inputs unacked, so the
survivors produce those outputs again, with the same ids and bytes.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pytest

from sidecar.core.protocol import output_id

from .harness import AmqpProxy, Pipeline
from .harness.rabbit import queue_counts
from .steps import volume_files, wait_until
from .test_reliability_broker import Collector, no_exception_of_ours

pytestmark = pytest.mark.integration

FRAGMENTS = 90


def start_replica(pipeline: Pipeline, n: int, **env: str):
    volume = Path(tempfile.mkdtemp(prefix=f"rep{n}-"))  # short: AF_UNIX paths
    sidecar = pipeline.start_sidecar(DATA_VOLUME_PATH=str(volume), MQ_PREFETCH_COUNT="4",
                                     **env)
    assert wait_until(lambda: (volume / "tts.sock").exists() and (volume / "fts.sock").exists(),
                      timeout=20), sidecar.tail()
    trans = pipeline.start_transformation("passthrough", DATA_VOLUME_PATH=str(volume))
    return volume, sidecar, trans


def test_three_replicas_one_killed_midway(pipeline: Pipeline, amqp_proxy: AmqpProxy):
    inputs: list[dict] = []

    def send(n: int) -> None:
        inputs.extend(pipeline.send_input({f"r{len(inputs):02d}.txt": f"replica {len(inputs)}"})
                      for _ in range(n))

    send(FRAGMENTS // 3)
    got = Collector(pipeline)
    doomed = start_replica(pipeline, 0, MQ_BROKER_URL=amqp_proxy.url())
    survivors = [start_replica(pipeline, n) for n in (1, 2)]

    got.wait_for(FRAGMENTS // 3)
    amqp_proxy.hold_confirms()  # the doomed replica publishes, but is never confirmed
    send(FRAGMENTS // 3)
    assert wait_until(lambda: amqp_proxy.held >= 1, timeout=30), doomed[1].tail()
    time.sleep(0.2)
    held_at_kill = amqp_proxy.held
    _, sidecar0, trans0 = doomed
    sidecar0.kill()
    trans0.kill()  # the whole pod
    amqp_proxy.release()
    send(FRAGMENTS - len(inputs))

    got.wait_for(FRAGMENTS, timeout=60)
    pipeline.finish_upstream()
    for volume, sidecar, trans in survivors:
        trans.expect_exit(0, timeout=60)
        sidecar.expect_exit(0, timeout=60)
        assert volume_files(volume) == []
        assert no_exception_of_ours(sidecar.logs)

    got.poll()
    bodies: dict[str, set[bytes]] = defaultdict(set)
    for m in got.outputs:
        bodies[m.properties.message_id].add(m.body)
    expected = {output_id(pipeline.name, [b["metadata"]["fragment_id"]], 0) for b in inputs}
    assert set(bodies) == expected
    assert [k for k, v in bodies.items() if len(v) > 1] == []
    lineage: dict[str, set[bytes]] = defaultdict(set)
    for m in got.lineage:
        lineage[m.json()["description"]["metadata"]["fragment_id"]].add(m.body)
    assert set(lineage) <= expected and all(len(v) == 1 for v in lineage.values())
    assert queue_counts(pipeline.input_queue) == (0, 0)

    acked = [int(re.search(r"(\d+) input acked", s.logs).group(1)) for _, s, _ in survivors]
    redelivered = sum(len(re.findall(r"\[redelivered\]", s.logs)) for _, s, _ in survivors)
    assert sum(acked) >= FRAGMENTS // 2  # the survivors did most of it, and what the
    assert redelivered >= 1  # killed replica held unacked came back to them
    duplicates = len(got.outputs) - len(bodies)
    print(f"\nreplicas: {FRAGMENTS} fragments, survivors acked {acked}, confirms held at "
          f"the kill {held_at_kill}, redelivered to survivors {redelivered}, outputs "
          f"published {len(got.outputs)} ({duplicates} identical duplicates), "
          f"distinct {len(bodies)}")
