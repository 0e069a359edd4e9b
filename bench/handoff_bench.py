"""The loop ↔ storage-worker hand-offs alone, without S3, RabbitMQ or the core.

The real ``Runner`` (its pika IOLoop, ``post``) and the real ``Storage`` pool run fragments
of ``--files`` downloads each, ``--prefetch`` in flight; S3 is replaced by Python work
that holds the GIL (``--work-us``, as the client's own code does) and a sleep that
releases it (``--request-ms``, as waiting for the server does); each fragment ends with
a ``DeleteFiles`` as the core's do. Reports per fragment:
process CPU, context switches of all its threads (voluntary + involuntary,
/proc/self/task/*/status), loop wake-ups and worker queue puts. Best (least CPU) of
``--repeat`` runs. Runs against whichever ``sidecar`` is on the path, so the same script
measures before and after a change:

    python bench/handoff_bench.py --files 1
    PYTHONPATH=/path/to/other/tree python bench/handoff_bench.py --files 10
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "unit"))

from test_config import manager_env

from sidecar.core import effects as fx
from sidecar.core.events import FileDownloaded
from sidecar.shell import config
from sidecar.shell.loop import Runner


def switches() -> int:
    total = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/status") as f:
                total += sum(int(line.split()[1]) for line in f if "ctxt_switches:" in line)
        except FileNotFoundError:
            continue
    return total


def fake_request(work_s: float, wait_s: float) -> tuple[int, str, str]:
    until = time.perf_counter() + work_s
    while time.perf_counter() < until:
        pass
    time.sleep(wait_s)
    return 1024, "etag", ""  # size, ETag, SHA-256: what Transfers.get returns


def run_once(fragments: int, files: int, prefetch: int, work_s: float,
             request_s: float, workers: int) -> dict[str, float]:
    tmp = tempfile.mkdtemp()  # deletions find nothing there, as most of a real run's do
    env = {**manager_env(Path(tmp)), "SIDECAR_STORAGE_WORKERS": str(workers)}
    runner = Runner(config.load(env))
    storage = runner.storage
    storage.transfers.get = lambda *_a: fake_request(work_s, request_s)
    tasks = storage.pool._tasks
    puts = [0]

    class CountedQueue:  # the workers are blocked in the same queue's get()
        get = tasks.get

        def put(self, item) -> None:
            puts[0] += 1
            tasks.put(item)

    storage.pool._tasks = CountedQueue()
    posts, left = [0], {}
    started = [0]

    def start_fragment() -> None:
        n = started[0]
        started[0] += 1
        left[n] = files
        for i in range(files):
            storage.download(fx.DownloadFile(n, i, "b", f"k{i}", f"/nowhere/{n}/{i}"))
        if hasattr(storage, "flush"):
            storage.flush()

    def feed(event) -> None:
        posts[0] += 1
        assert isinstance(event, FileDownloaded), event
        left[event.input_id] -= 1
        if left[event.input_id] == 0:
            del left[event.input_id]
            # its input and output files, as the core asks when a fragment is done
            delete(fx.DeleteFiles((f"{tmp}/{event.input_id}/i", f"{tmp}/{event.input_id}/o"),
                                  (tmp + "/missing",)))
            if started[0] < fragments:
                start_fragment()
            elif not left:
                runner.ioloop.stop()

    delete = runner._performers[fx.DeleteFiles]  # on the loop, or handed to the pool
    runner.feed = feed
    for _ in range(min(prefetch, fragments)):
        start_fragment()
    cpu0, sw0, t0 = time.process_time(), switches(), time.perf_counter()
    runner.ioloop.start()
    cpu, sw, wall = time.process_time() - cpu0, switches() - sw0, time.perf_counter() - t0
    storage.shutdown()
    runner.ioloop.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return {"cpu_us": cpu / fragments * 1e6, "switches": sw / fragments,
            "wakeups": getattr(runner, "wakeups", posts[0]) / fragments,
            "posts": posts[0] / fragments, "puts": puts[0] / fragments,
            "per_s": fragments / wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fragments", type=int, default=2000)
    p.add_argument("--files", type=int, default=1)
    p.add_argument("--prefetch", type=int, default=16)
    p.add_argument("--work-us", type=float, default=300)
    p.add_argument("--request-ms", type=float, default=0.5)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    runs = [run_once(a.fragments, a.files, a.prefetch, a.work_us / 1e6,
                     a.request_ms / 1000, a.workers)
            for _ in range(a.repeat)]
    best = min(runs, key=lambda r: r["cpu_us"])
    all_cpu = ", ".join(f"{r['cpu_us']:.0f}" for r in runs)
    print(f"{a.files} file(s)/fragment, prefetch {a.prefetch}, {a.workers} workers, "
          f"{a.fragments} fragments, "
          f"{a.work_us:.0f} µs GIL + {a.request_ms} ms wait per request, "
          f"best of {a.repeat} by CPU: {best['cpu_us']:.0f} µs CPU, "
          f"{best['switches']:.1f} context switches, {best['posts']:.1f} posts, "
          f"{best['wakeups']:.1f} loop wake-ups, {best['puts']:.1f} worker queue puts "
          f"per fragment; {best['per_s']:.0f} fragments/s "
          f"(CPU of all runs: {all_cpu} µs)")


if __name__ == "__main__":
    main()
