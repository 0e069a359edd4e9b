"""Journal benchmarks: the loop's cost of recording, and the time to replay a big journal.

    python bench/journal_bench.py [--fragments 10000] [--keep DIR]

A synthetic run drives the real core through a fake shell (storage, broker and a 1→1
pyterum transformation that answer at once, prefetch 16), so only the core and the journal
are measured. It times ``Core.handle`` over the whole run without and with the journal's
Recorder (writing to a temporary directory, as on the volume), then replays the recorded
journal with ``iterum-sidecar replay DIR --quiet`` (which checks every transition and
effect). Benchmarks measure; no test asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sidecar.core import Core, CoreConfig
from sidecar.core import effects as fx
from sidecar.core import events as ev
from sidecar.shell.journal import Recorder

VOLUME = "/data"
KILL = b'{"status":"complete"}'


def config(prefetch: int = 16, stuck_after: float = 0.0) -> CoreConfig:
    return CoreConfig(volume=VOLUME, step="bench-step", output_bucket="bench-step-output",
                      output_queue="bench-out", lineage_queue="bench-lineage",
                      dead_letter_queue="bench-in-dead", prefetch=prefetch,
                      stuck_after=stuck_after)


def body(i: int) -> bytes:
    fid = f"{i:064x}"
    return json.dumps({"files": [{"name": f"img-{i}.jpg", "path": f"iterum_data/img-{i}.jpg",
                                  "bucket": "bench-fragmenter-output"}],
                       "metadata": {"fragment_id": fid, "predecessors": []}}).encode()


def synthetic_run(fragments: int, observe: Callable[[Core], Callable] | None = None,
                  prefetch: int = 16, stuck_after: float = 0.0) -> tuple[Core, int, float]:
    """Run ``fragments`` 1→1 fragments through a core; return it, the number of events fed
    and the seconds spent in ``Core.handle`` plus the observer that ``observe(core)``
    returns (the Runner calls its observers in the same place)."""
    core = Core(config(prefetch, stuck_after))
    observer = observe(core) if observe is not None else None
    pending: deque[ev.Event] = deque()
    state = {"clock": 0.0, "events": 0, "busy": 0.0, "unacked": 0, "next": 0, "done": False}

    def feed(event: ev.Event) -> None:
        state["clock"] += 0.0001
        now = state["clock"]
        start = time.perf_counter()
        out = core.handle(event, now)
        if observer is not None:
            observer(event, now, out, core.transitions)
        state["busy"] += time.perf_counter() - start
        state["events"] += 1
        for e in out:
            react(e)

    def react(e: fx.Effect) -> None:
        if isinstance(e, fx.DownloadFile):
            pending.append(ev.FileDownloaded(e.input_id, e.index, 1000))
        elif isinstance(e, fx.UploadFile):
            pending.append(ev.FileUploaded(e.output_id, e.index, 1000))
        elif isinstance(e, fx.Publish):
            pending.append(ev.PublishConfirmed(e.publish_id))
        elif isinstance(e, fx.SendFrame):
            if e.payload == KILL:
                pending.append(ev.FrameReceived(2, KILL))
                return
            msg = json.loads(e.payload)
            fid = msg["metadata"]["fragment_id"]
            files = [{"name": "out_" + f["name"], "path": f"{VOLUME}/out/{fid}/{f['name']}"}
                     for f in msg["files"]]
            pending.append(ev.FrameReceived(2, json.dumps(
                {"files": files, "metadata": {"predecessors": [fid]}}).encode()))
            pending.append(ev.FrameReceived(2, json.dumps({"fragment_id": fid}).encode()))
        elif isinstance(e, fx.InspectQueue):
            pending.append(ev.QueueInspected(fragments - state["next"]))
        elif isinstance(e, fx.StopConsuming):
            pending.append(ev.ConsumerStopped())
        elif isinstance(e, fx.Ack | fx.Nack):
            state["unacked"] -= 1
        elif isinstance(e, fx.Exit):
            state["done"] = True

    feed(ev.BrokerReady())
    feed(ev.Connected(1, "tts"))
    feed(ev.Connected(2, "fts"))
    while not state["done"]:
        while state["unacked"] < prefetch and state["next"] < fragments:
            state["next"] += 1
            state["unacked"] += 1
            feed(ev.Delivered(state["next"], body(state["next"])))
        if state["next"] == fragments and not core.upstream_finished:
            feed(ev.UpstreamFinished())
        if not pending:
            raise RuntimeError(f"the synthetic run is stuck in {core.step.state}")
        feed(pending.popleft())
    return core, state["events"], state["busy"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fragments", type=int, default=10_000)
    parser.add_argument("--keep", help="also copy the recorded journal to this directory")
    args = parser.parse_args()
    n = args.fragments

    synthetic_run(200)  # warm up imports and caches
    _, fed, bare = min((synthetic_run(n) for _ in range(3)), key=lambda r: r[2])
    tmp = tempfile.mkdtemp(prefix="journal-bench-")
    try:
        runs = []
        for attempt in range(3):
            directory = os.path.join(tmp, str(attempt))
            recorders: list[Recorder] = []

            def observe(core: Core, directory: str = directory,
                        recorders: list[Recorder] = recorders) -> Recorder:
                recorders.append(Recorder(directory, core, max_bytes=1 << 40, keep=4))
                return recorders[-1]

            _, _, busy = synthetic_run(n, observe)
            recorders[0].close()
            runs.append((busy, directory))
        recorded, directory = min(runs)
        size = sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory))

        # the command as a user runs it (process start, imports, reading, printing)
        command = [sys.executable, "-m", "sidecar", "replay", directory, "--quiet"]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        timings = []
        for _ in range(3):
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            timings.append(time.perf_counter() - start)
            if done.returncode != 0:
                print(done.stdout + done.stderr, file=sys.stderr)
                return 1
        events = int(done.stdout.split("replay OK: ")[1].split()[0])
        if args.keep:
            shutil.copytree(directory, args.keep, dirs_exist_ok=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def per_event(seconds: float) -> str:
        return f"{1e6 * seconds / fed:.1f} µs/event"

    print(f"synthetic run: {n} fragments, {fed} events (best of 3)")
    print(f"  core alone:      {bare:.3f} s ({per_event(bare)})")
    print(f"  core + journal:  {recorded:.3f} s ({per_event(recorded)}; the journal adds "
          f"{per_event(recorded - bare)}, {100 * (recorded / bare - 1):.0f}%)")
    print(f"  journal size:    {size / 1e6:.1f} MB ({size / n:.0f} bytes/fragment)")
    print(f"`iterum-sidecar replay DIR --quiet`: {min(timings):.2f} s (best of 3; "
          f"{', '.join(f'{t:.2f}' for t in timings)}), {events} events, every transition "
          "and effect checked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
