"""Case 7 of docs/reliability.md: the sidecar is killed (SIGKILL) at random moments and
started again on the same volume. Two kinds of restart keep the volume: the kubelet
restarting the crashed sidecar container in place (the pod's emptyDir stays, and so does
the transformation, which pyterum reconnects by itself, finishing its fragment with the new
sidecar), and both containers restarted. In the end every input has its output, nothing is
left in the queues or on the volume, and no message id is ever published with two different
bodies. Inputs whose outputs were already in S3 are resumed from the journal instead of
being processed again.

The kills follow a seeded RNG (printed; ITERUM_CRASH_SEED=<seed> repeats a run). Before
some kills the broker's publisher confirms are held back by the AMQP proxy, so that the
sidecar dies with outputs uploaded but not confirmed: the case the journal resumes. A kill
with the transformation kept costs about 15 s of pyterum's fixed reconnect sleeps, so half
the kills restart both containers.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
from collections import defaultdict

import pytest

from sidecar.core.protocol import output_id

from .harness import AmqpProxy, Pipeline
from .harness.pipeline import REPO
from .harness.rabbit import queue_counts
from .steps import volume_files, wait_until
from .test_reliability_broker import Collector, no_exception_of_ours

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.s3]

FRAGMENTS = 300
KILLS = 4


def test_sigkill_at_random_moments_and_restarts_on_the_same_volume(pipeline: Pipeline,
                                                                   amqp_proxy: AmqpProxy):
    seed = int(os.environ.get("ITERUM_CRASH_SEED") or random.SystemRandom().randrange(1 << 30))
    rng = random.Random(seed)
    print(f"\ncrash test seed {seed} (ITERUM_CRASH_SEED={seed} repeats it)")
    pipeline.broker_url = amqp_proxy.url()
    inputs = [pipeline.send_input({f"c{i:03d}.txt": f"crash {i}"}) for i in range(FRAGMENTS)]
    env = {"MQ_PREFETCH_COUNT": "16"}
    got = Collector(pipeline)
    sidecars = []
    plan = []

    sidecar = pipeline.start_sidecar(**env)
    sidecars.append(sidecar)
    pipeline.wait_for_sockets()
    trans = pipeline.start_transformation("passthrough")
    transformations = [trans]
    kinds = ["sidecar", "both"] * (KILLS // 2)
    rng.shuffle(kinds)
    for kind in kinds:
        progress = rng.randint(15, 45)
        hold = rng.random() < 0.6
        extra = rng.uniform(0.0, 0.4)
        plan.append((kind, progress, hold, round(extra, 2)))
        got.wait_for(min(FRAGMENTS, len(got.ids()) + progress), timeout=60)
        if hold:  # outputs uploaded, their publishes unconfirmed: resumable work
            amqp_proxy.hold_confirms()
            assert wait_until(lambda: amqp_proxy.held >= 1, timeout=30), "nothing to hold"
            time.sleep(0.3)  # > the journal's flush interval: the journal knows it
        time.sleep(extra)
        sidecar.kill()
        amqp_proxy.release()
        assert sidecar.returncode == -9
        assert trans.alive, trans.tail()  # pyterum outlives the sidecar and reconnects
        if kind == "both":
            trans.kill()
            for name in ("tts.sock", "fts.sock"):  # SIGKILL left them: no stale sockets
                (pipeline.volume / name).unlink(missing_ok=True)
        sidecar = pipeline.start_sidecar(**env)
        sidecars.append(sidecar)
        # Its first act is to read its predecessor's journal. Outputs the killed run had
        # published count toward the next `progress`, so without this wait it could be
        # killed before that, and the next restart would find no journal of it to read.
        sidecar.wait_for_log(r"\[resuming\] journal run", timeout=60)
        if kind == "both":
            pipeline.wait_for_sockets()
            trans = pipeline.start_transformation("passthrough")
            transformations.append(trans)

    got.wait_for(FRAGMENTS, timeout=90)
    pipeline.finish_upstream()
    trans.expect_exit(0, timeout=60)
    sidecar.expect_exit(0, timeout=60)

    # every input has its output; one body per message id, on both queues
    got.poll()
    bodies: dict[str, set[bytes]] = defaultdict(set)
    for m in got.outputs:
        bodies[m.properties.message_id].add(m.body)
    expected = {output_id(pipeline.name, [b["metadata"]["fragment_id"]], 0) for b in inputs}
    assert set(bodies) == expected, (len(bodies), len(set(bodies) - expected))
    assert [k for k, v in bodies.items() if len(v) > 1] == []
    lineage: dict[str, set[bytes]] = defaultdict(set)
    for m in got.lineage:
        lineage[m.json()["description"]["metadata"]["fragment_id"]].add(m.body)
    assert set(lineage) == expected and all(len(v) == 1 for v in lineage.values())
    # nothing left behind: queues, dead letters, volume
    assert queue_counts(pipeline.input_queue) == (0, 0)
    assert not pipeline.rabbit.exists(pipeline.dead_queue) or \
        pipeline.rabbit.ready(pipeline.dead_queue) == 0
    assert volume_files(pipeline.volume) == []
    for proc in sidecars:
        assert no_exception_of_ours(proc.logs), proc.tail()

    # the counts
    logs = "".join(p.logs for p in sidecars)
    resumable = [int(n) for n in re.findall(r"\[resuming\] journal run \d+ of a killed "
                                            r"sidecar on this volume: (\d+) input", logs)]
    resumed = len(re.findall(r"\[resumed\]", logs))
    # A transformation writes its record at its first done_with: one started at a restart
    # and killed at the next before it finished a fragment (outputs its predecessor's run
    # published count toward `progress`) has none; it received nothing it finished.
    received = [r for t in transformations for r in t.record().get("received", [])]
    dispatches = len(received)
    processed_again = dispatches - len({r["fragment_id"] for r in received})
    assert len(resumable) == KILLS  # every restart read its predecessor's journal
    if any(hold for _, _, hold, _ in plan):
        assert resumed >= 1, "no input was resumed although confirms were held at a kill"
    counts = {"seed": seed, "kills": KILLS,
              "plan (restarted, progress, confirms held, delay)": plan,
              "fragments": FRAGMENTS, "resumable at each restart": resumable,
              "resumed from the journal": resumed, "processed again": processed_again,
              "dispatches to the transformation": dispatches,
              "outputs published (with re-sends)": len(got.outputs),
              "distinct outputs": len(bodies)}
    print("crash test counts: " + "; ".join(f"{k}: {v}" for k, v in counts.items()))

    # the final run's journal replays; so do the killed runs' (cut short where they died)
    journal = pipeline.volume / ".sidecar" / "journal"
    for run in sorted({int(p.name[3:7]) for p in journal.glob("run*-seg*.jsonl")}):
        done = subprocess.run([sys.executable, "-m", "sidecar", "replay", str(journal),
                               "--run", str(run), "--quiet"], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
