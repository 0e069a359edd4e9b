"""One measured run of the real sidecar process(es) on one input queue, end to end.

What a run does:

1. puts the input objects in S3 (as the fragmenter-sidecar would) and declares the queues;
2. starts ``replicas`` sidecars (``python -m sidecar``, production settings except the
   knobs under test), each with the pass-through pyterum transformation
   (bench/transformations/link_passthrough.py) on its own volume, and times each from
   process start to its consumer being registered on the input queue;
3. warms up (a few fragments, so that connections are open, the output bucket checked and
   the transformation connected), then optionally measures idle CPU with no input;
4. the loaded run: publishes ``fragments`` descriptors at once and waits until every
   output's lineage message arrived, reading CPU (user+sys) of every process around it;
5. optionally the light-load run: fragments one at a time (latency without queueing);
6. SIGTERM to each sidecar (it must exit 0), then reads their journals for per-fragment
   latency (received → acked, the sidecar's own clock) and transfer times.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import shutil
import signal
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import procstat
from .endpoints import ACCESS_KEY, REPO, SECRET_KEY, Arrivals, Broker, FakeManager, S3Endpoint

TRANSFORMATIONS = Path(__file__).resolve().parent / "transformations"
TRANSFORMATION = TRANSFORMATIONS / "link_passthrough.py"
ALPHABET = string.ascii_lowercase + string.digits
MIB = 1 << 20
_SCRUB = ("ITERUM_", "MINIO_", "MQ_", "SIDECAR_", "TRANSFORMATION_STEP_", "DATA_VOLUME_PATH",
          "PIPELINE_HASH", "MANAGER_URL", "ENC_MSG_SIZE_LENGTH")


@dataclass
class Scenario:
    name: str
    fragments: int
    files: int = 1  # files per fragment (the output fragment has as many)
    file_bytes: int = 1024
    prefetch: int | None = None  # None: the sidecar's default
    workers: int | None = None  # SIDECAR_STORAGE_WORKERS; None: default
    part_size: int | None = None  # SIDECAR_PART_SIZE; None: default
    replicas: int = 1
    warmup: int = 4
    idle_seconds: float = 0.0
    light_load: int = 0
    # "py-spy": record the (first) sidecar during the loaded run, samples holding the GIL
    # (Python running); "py-spy-wall": every sample of a busy thread (also time in C code
    # that releases the GIL, such as hashing, and in blocking calls)
    profile: str | None = None
    journal: bool = True
    plain_copy: bool = False  # then copy the first input object with a plain client
    env: dict[str, str] = field(default_factory=dict)  # extra sidecar variables
    # the pyterum script run beside each sidecar (a str: the result JSON holds the Scenario)
    transformation: str = str(TRANSFORMATION)

    def sidecar_knobs(self) -> dict[str, str]:
        knobs = {"MQ_PREFETCH_COUNT": str(self.prefetch or "")}
        if self.workers:
            knobs["SIDECAR_STORAGE_WORKERS"] = str(self.workers)
        if self.part_size:
            knobs["SIDECAR_PART_SIZE"] = str(self.part_size)
        if not self.journal:
            knobs["SIDECAR_JOURNAL"] = "off"
        return {**knobs, **self.env}


@dataclass
class Context:
    """What every scenario of one benchmark invocation shares."""

    s3: S3Endpoint
    broker_url: str
    manager: FakeManager
    workdir: Path  # scratch space (volumes, logs); removed at the end
    results_dir: Path  # profiles are kept here


class Step:
    """One sidecar and its transformation on their own volume."""

    def __init__(self, root: Path, index: int):
        self.root = root / f"replica-{index}"
        self.volume = self.root / "volume"
        self.volume.mkdir(parents=True)
        self.sidecar: subprocess.Popen | None = None
        self.transformation: subprocess.Popen | None = None
        self.spawned = 0.0
        self.consuming = 0.0
        # what os.wait4 reported when each process was reaped by stop(): the CPU and the
        # peak resident set of its whole life (Popen.wait discards them)
        self.sidecar_rusage: resource.struct_rusage | None = None
        self.transformation_rusage: resource.struct_rusage | None = None

    def start_sidecar(self, env: dict[str, str], prefix: Sequence[str] = (),
                      python: str = sys.executable) -> None:
        """``prefix``: a command to run it under (valgrind, for bench/whole_callgrind.py);
        ``python``: another checkout's interpreter (bench/trees.py)."""
        with open(self.root / "sidecar.log", "wb") as log:
            self.spawned = time.monotonic()
            self.sidecar = subprocess.Popen([*prefix, python, "-m", "sidecar"], env=env,
                                            cwd=self.root, stdout=log, stderr=log,
                                            stdin=subprocess.DEVNULL)

    def start_transformation(self, env: dict[str, str], timeout: float = 20.0,
                             script: str | Path = TRANSFORMATION) -> None:
        deadline = time.monotonic() + timeout
        sockets = [self.volume / "tts.sock", self.volume / "fts.sock"]
        while not all(s.exists() for s in sockets):  # pyterum sleeps 5 s after a failure
            self.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"no sockets after {timeout}s\n{self.log_tail()}")
            time.sleep(0.01)
        cwd = self.root / "transformation"
        cwd.mkdir()
        with open(self.root / "transformation.log", "wb") as log:
            self.transformation = subprocess.Popen(
                [sys.executable, str(script)], env=env, cwd=cwd, stdout=log,
                stderr=log, stdin=subprocess.DEVNULL)

    def check_alive(self) -> None:
        if self.sidecar is not None and self.sidecar.poll() is not None:
            raise RuntimeError(f"the sidecar exited with {self.sidecar.returncode}\n"
                               f"{self.log_tail()}")
        if self.transformation is not None and self.transformation.poll() is not None:
            raise RuntimeError(f"the transformation exited with "
                               f"{self.transformation.returncode}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.root / "sidecar.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM to the sidecar (a clean exit is 0), then end the transformation.

        Signals go by os.kill, not Popen.send_signal: that polls first, and a poll reaps
        a child that already exited (the transformation does once told there is no more
        input) with waitpid, which loses its rusage. An unreaped child keeps its pid."""
        code = None
        if self.sidecar is not None:
            if self.sidecar.returncode is None:
                os.kill(self.sidecar.pid, signal.SIGTERM)
            try:
                self.sidecar_rusage = reap(self.sidecar, timeout) or self.sidecar_rusage
                code = self.sidecar.returncode
            except subprocess.TimeoutExpired:
                self.sidecar.kill()
                self.sidecar.wait(10)
        if self.transformation is not None:
            if self.transformation.returncode is None:
                os.kill(self.transformation.pid, signal.SIGTERM)
            try:
                self.transformation_rusage = (reap(self.transformation, 10)
                                              or self.transformation_rusage)
            except subprocess.TimeoutExpired:
                self.transformation.kill()
                self.transformation.wait(10)
        return code


def reap(proc: subprocess.Popen, timeout: float) -> resource.struct_rusage | None:
    """Wait for ``proc`` to exit with ``os.wait4``: sets its returncode and returns its
    rusage (user+sys CPU of every thread from fork to exit, ru_maxrss), or None when it
    was already reaped (by Popen.poll: it had exited before)."""
    if proc.returncode is not None:
        return None
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:
            proc.wait(timeout)  # reaped already: Popen knows its returncode
            return None
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage
        if time.monotonic() > deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        time.sleep(0.005)


def random_id(n: int) -> str:
    return "".join(random.choices(ALPHABET, k=n))


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


class RepeatingReader:
    """A file-like object of ``size`` bytes, one random MiB repeated (no big buffers)."""

    def __init__(self, size: int):
        self.left = size
        self.block = os.urandom(MIB)

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        reps, rest = divmod(n, MIB)
        return self.block * reps + self.block[:rest]


def run(ctx: Context, sc: Scenario) -> dict[str, Any]:
    """Run one scenario; return its measurements (see the module docstring)."""
    run_hash = random_id(32)
    step = "bench"
    names = run_names(run_hash, step)
    root = Path(tempfile.mkdtemp(prefix=f"{sc.name[:12]}-", dir=ctx.workdir))
    broker = Broker(ctx.broker_url)
    s3 = ctx.s3.client()
    steps: list[Step] = []
    arrivals: Arrivals | None = None
    profiler: subprocess.Popen | None = None
    result: dict[str, Any] = {"scenario": asdict(sc)}
    try:
        for q in ("input", "output", "lineage"):
            broker.declare(names[q])
        keys = _put_inputs(s3, names["input_bucket"], sc)
        small = "iterum_data/warmup.bin"  # warm-up fragments are small whatever the scenario
        s3.put_object(names["input_bucket"], small, RepeatingReader(1024), 1024)
        arrivals = Arrivals(ctx.broker_url, names["lineage"])

        def body(i: int, warmup: bool = False) -> bytes:
            return descriptor([small] * sc.files if warmup else
                              [keys[(i * sc.files + j) % len(keys)] for j in range(sc.files)],
                              names["input_bucket"])

        # --- start -------------------------------------------------------------------
        for r in range(sc.replicas):
            st = Step(root, r)
            steps.append(st)
            st.start_sidecar(_sidecar_env(ctx, sc, st, run_hash, step, names))
            st.start_transformation(_transformation_env(st), script=sc.transformation)
            st.consuming = broker.wait_consumers(names["input"], r + 1, 30)
        result["start_to_consuming_s"] = [st.consuming - st.spawned for st in steps]

        def alive() -> None:
            for st in steps:
                st.check_alive()

        # --- warm-up -----------------------------------------------------------------
        done = 0
        for i in range(sc.warmup):
            broker.publish(names["input"], body(i, warmup=True))
        done += sc.warmup
        arrivals.wait(done * _outputs_per_fragment(sc), 120, alive)
        time.sleep(0.2)  # let the last acks go out

        # --- idle --------------------------------------------------------------------
        pids = {"sidecar": [st.sidecar.pid for st in steps if st.sidecar],
                "transformation": [st.transformation.pid for st in steps
                                   if st.transformation]}
        if sc.idle_seconds > 0:
            polls0 = ctx.manager.polls
            before = [procstat.sched(p) for p in pids["sidecar"]]
            time.sleep(sc.idle_seconds)
            after = [procstat.sched(p) for p in pids["sidecar"]]
            per = sc.idle_seconds * len(before)
            spent = [(a[0] - b[0], a[1] - b[1]) for a, b in zip(after, before, strict=True)]
            result["idle"] = {
                "seconds": sc.idle_seconds,
                "cpu_ms_per_s": 1000 * sum(c for c, _ in spent) / per,
                "wakeups_per_s": sum(w for _, w in spent) / per,
                "manager_polls": ctx.manager.polls - polls0,
            }

        # --- the loaded run ----------------------------------------------------------
        ctx.s3.stats(reset=True)
        rabbit = procstat.find_rabbitmq()
        cpu0 = _cpu_readings(ctx, pids, rabbit)
        switches0 = sum(procstat.sched(p)[1] for p in pids["sidecar"])
        if sc.profile:
            profiler = _start_profiler(ctx, sc, pids["sidecar"][0])
        t0 = time.monotonic()
        bodies = [body(done + i) for i in range(sc.fragments)]
        for b in bodies:
            broker.publish(names["input"], b)
        t_published = time.monotonic()
        done += sc.fragments
        expected = done * _outputs_per_fragment(sc)
        timeout = 120 + sc.fragments * sc.files * (sc.file_bytes / (20 * MIB) + 0.05)
        t_last = arrivals.wait(expected, timeout, alive)
        time.sleep(0.1)  # the acks follow the last lineage confirm
        cpu1 = _cpu_readings(ctx, pids, rabbit)
        switches = sum(procstat.sched(p)[1] for p in pids["sidecar"]) - switches0
        if profiler is not None:
            result["profile"] = _stop_profiler(profiler)
            profiler = None
        s3_stats = ctx.s3.stats()
        samples = [procstat.sample(p) for p in pids["sidecar"]]
        window_start = t0

        # --- light load: one fragment at a time ---------------------------------------
        light_start = None
        if sc.light_load:
            light_start = time.monotonic()
            for i in range(sc.light_load):
                broker.publish(names["input"], body(done + i))
                arrivals.wait((done + i + 1) * _outputs_per_fragment(sc), 60, alive)
                time.sleep(0.01)
            done += sc.light_load
            time.sleep(0.1)

        # --- stop, then read the journals --------------------------------------------
        result["exit_codes"] = [st.stop() for st in steps]
        journals = [_read_journal(st.volume) for st in steps]
        if sc.plain_copy:  # the same object, the same endpoint, a plain client
            result["plain_copy"] = raw_copy(ctx, names["input_bucket"], keys[0],
                                            sc.part_size or 16 * MIB)

        n = sc.fragments
        used = {k: cpu1[k] - cpu0[k] for k in cpu0}
        loaded = [lat for j in journals for lat in j.latencies(window_start, light_start)]
        light = ([lat for j in journals for lat in j.latencies(light_start, None)]
                 if light_start else [])
        first_delivery = min((j.first_delivery(window_start) for j in journals), default=None)
        last_ack = max((j.last_ack(window_start, light_start) for j in journals),
                       default=None)
        journal_window = (last_ack - first_delivery) if first_delivery and last_ack else None
        ops = s3_stats["ops"]
        result.update({
            "fragments": n,
            "files_per_fragment": sc.files,
            "file_bytes": sc.file_bytes,
            "publish_s": t_published - t0,
            "wall_s": t_last - t0,
            "fragments_per_s": n / journal_window if journal_window else n / (t_last - t0),
            "fragments_per_s_observed": n / (t_last - t0),
            "latency_ms": _percentiles(loaded),
            "latency_light_ms": _percentiles(light) if light else None,
            "cpu_ms_per_fragment": 1000 * used["sidecar"] / n,
            "cpu_ms_per_fragment_by_process": {k: 1000 * v / n for k, v in used.items()},
            # voluntary + involuntary, all threads: wake-ups, GIL and queue hand-offs
            "context_switches_per_fragment": switches / n,
            "s3_requests_per_fragment": s3_stats["requests"] / n,
            "s3_ops": ops,
            "peak_rss_mib": max(s.hwm for s in samples) / MIB,
            "rss_mib_at_end": max(s.rss for s in samples) / MIB,
            "transfers": _merge_transfers(journals, window_start, light_start),
            "journal_fragments": len(loaded),
            "max_publishes_in_flight": max(j.max_in_flight for j in journals),
        })
        return result
    finally:
        if profiler is not None:
            with contextlib.suppress(Exception):
                _stop_profiler(profiler)
        for st in steps:
            with contextlib.suppress(Exception):
                st.stop(5)
        if arrivals is not None:
            arrivals.stop()
        remove_run(broker, s3, names)
        if sc.file_bytes >= MIB or not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(root, ignore_errors=True)


def run_names(run_hash: str, step: str) -> dict[str, str]:
    """The queues and buckets of one run, named as Iterum names them."""
    return {
        "input": f"{run_hash}-fragmenter_output", "output": f"{run_hash}-{step}_output",
        "lineage": f"{run_hash}-lineage", "dead": f"{run_hash}-fragmenter_output-dead",
        "input_bucket": f"{run_hash}-fragmenter-output",
        "output_bucket": f"{run_hash}-{step}-output",
    }


def descriptor(keys: list[str], bucket: str) -> bytes:
    """A fragment descriptor as the fragmenter publishes it: one file per object key."""
    files = [{"name": f"file-{j}.bin", "path": key, "bucket": bucket}
             for j, key in enumerate(keys)]
    return json.dumps({"files": files, "metadata": {
        "fragment_id": random_id(64), "predecessors": []}}).encode()


def raw_copy(ctx: Context, bucket: str, key: str, part_size: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.raw", "s3-copy", "--endpoint", ctx.s3.url,
         "--access", ACCESS_KEY, "--secret", SECRET_KEY, "--bucket", bucket, "--key", key,
         "--part-size", str(part_size), "--workdir", str(ctx.workdir)],
        cwd=REPO, env=base_env(), capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout)


def _outputs_per_fragment(_sc: Scenario) -> int:
    return 1  # the pass-through makes one output fragment (one lineage message) per input


def _sidecar_env(ctx: Context, sc: Scenario, st: Step, run_hash: str, step: str,
                 names: dict[str, str]) -> dict[str, str]:
    env = base_env()
    env.update({
        "DATA_VOLUME_PATH": str(st.volume), "ITERUM_NAME": f"{run_hash}-{step}",
        "PIPELINE_HASH": run_hash, "ITERUM_CONFIG": "{}", "ITERUM_CONFIG_PATH": "config",
        "MINIO_URL": ctx.s3.url, "MINIO_ACCESS_KEY": ACCESS_KEY,
        "MINIO_SECRET_KEY": SECRET_KEY, "MINIO_USE_SSL": "false",
        "MINIO_OUTPUT_BUCKET": names["output_bucket"], "MQ_BROKER_URL": ctx.broker_url,
        "MQ_INPUT_QUEUE": names["input"], "MQ_OUTPUT_QUEUE": names["output"],
        "MANAGER_URL": ctx.manager.url, "TRANSFORMATION_STEP_INPUT": "tts.sock",
        "TRANSFORMATION_STEP_OUTPUT": "fts.sock",
        # the metrics/health endpoint stays on (as in production), on a free port of the
        # kernel's choosing: the sidecars of a run never ask for the same one
        "SIDECAR_HTTP_HOST": "127.0.0.1", "SIDECAR_HTTP_PORT": "auto",
    })
    env.update(sc.sidecar_knobs())
    return env


def _transformation_env(st: Step) -> dict[str, str]:
    env = base_env()
    env.update({"DATA_VOLUME_PATH": str(st.volume), "TRANSFORMATION_STEP_INPUT": "tts.sock",
                "TRANSFORMATION_STEP_OUTPUT": "fts.sock", "ITERUM_CONFIG": "{}",
                "ITERUM_CONFIG_PATH": "config"})
    return env


def _put_inputs(s3: Any, bucket: str, sc: Scenario) -> list[str]:
    """The input objects; small ones are shared by fragments (a pool of distinct keys)."""
    s3.make_bucket(bucket)
    count = sc.files if sc.file_bytes >= MIB else sc.files * min(16, sc.fragments)
    keys = []
    for i in range(count):
        key = f"iterum_data/input-{i:04d}.bin"
        s3.put_object(bucket, key, RepeatingReader(sc.file_bytes), sc.file_bytes,
                      part_size=64 * MIB)
        keys.append(key)
    return keys


def remove_run(broker: Any, s3: Any, names: dict[str, str]) -> None:
    """A run's queues and buckets (run_names), and the broker connection."""
    for q in ("input", "output", "lineage", "dead"):
        broker.delete(names[q])
    broker.close()
    for bucket in (names["input_bucket"], names["output_bucket"]):
        _remove_bucket(s3, bucket)


def _remove_bucket(s3: Any, bucket: str) -> None:
    from minio.deleteobjects import DeleteObject

    with contextlib.suppress(Exception):
        names = [o.object_name for o in s3.list_objects(bucket, recursive=True)]
        for i in range(0, len(names), 1000):
            for _ in s3.remove_objects(bucket, [DeleteObject(n) for n in names[i:i + 1000]]):
                pass
        s3.remove_bucket(bucket)


def _cpu_readings(ctx: Context, pids: dict[str, list[int]], rabbit: int | None
                  ) -> dict[str, float]:
    out = {k: sum(procstat.sample(p).cpu for p in v) for k, v in pids.items()}
    out["sidecar_user"] = sum(procstat.sample(p).user for p in pids["sidecar"])
    out["sidecar_system"] = sum(procstat.sample(p).system for p in pids["sidecar"])
    for p in pids["sidecar"]:
        for name, (user, system) in procstat.threads_cpu(p).items():
            out[f"sidecar_{name}_user"] = out.get(f"sidecar_{name}_user", 0.0) + user
            out[f"sidecar_{name}_system"] = out.get(f"sidecar_{name}_system", 0.0) + system
    out["s3_server"] = ctx.s3.cpu()
    out["rabbitmq"] = procstat.tree_cpu(rabbit) if rabbit else 0.0
    return out


def _percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ms = sorted(v * 1000 for v in values)

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, max(0, round(p / 100 * len(ms)) - 1))]

    return {"p50": pct(50), "p95": pct(95), "p99": pct(99), "max": ms[-1],
            "mean": statistics.fmean(ms), "n": len(ms)}


# --- the journal ----------------------------------------------------------------------


class JournalTimes:
    """Per-fragment times from a sidecar's journal (the loop clock, time.monotonic())."""

    def __init__(self) -> None:
        self.delivered: dict[int, float] = {}
        self.acked: dict[int, float] = {}
        self.transfers: dict[str, dict[tuple[int, int], list[float]]] = {
            "download": {}, "upload": {}}
        self.in_flight: set[int] = set()  # publishes sent, not yet confirmed
        self.max_in_flight = 0

    def latencies(self, start: float | None, end: float | None) -> list[float]:
        return [self.acked[tag] - t for tag, t in self.delivered.items()
                if tag in self.acked and _within(t, start, end)]

    def first_delivery(self, start: float) -> float | None:
        return min((t for t in self.delivered.values() if t >= start), default=None)

    def last_ack(self, start: float, end: float | None) -> float | None:
        return max((self.acked[tag] for tag, t in self.delivered.items()
                    if tag in self.acked and _within(t, start, end)), default=None)


def _within(t: float, start: float | None, end: float | None) -> bool:
    return (start is None or t >= start) and (end is None or t < end)


def _read_journal(volume: Path) -> JournalTimes:
    jt = JournalTimes()
    directory = volume / ".sidecar" / "journal"
    starts = {"DownloadFile": ("download", "input_id"), "UploadFile": ("upload", "output_id")}
    ends = {"FileDownloaded": ("download", "input_id"), "FileUploaded": ("upload", "output_id")}
    for path in sorted(directory.glob("*.jsonl")) if directory.is_dir() else []:
        with open(path) as f:
            for line in f:
                if not line.startswith('{"seq"'):
                    continue  # header, checkpoint
                rec = json.loads(line)
                t, event = rec["t"], rec["event"]
                kind = event["kind"]
                if kind == "Delivered":
                    jt.delivered[event["tag"]] = t
                elif kind in ("PublishConfirmed", "PublishRejected"):
                    jt.in_flight.discard(event["publish_id"])
                elif kind in ends:
                    what, owner = ends[kind]
                    span = jt.transfers[what].get((event[owner], event["index"]))
                    if span is not None:
                        span.append(t)
                for effect in rec.get("fx", ()):
                    k = effect["kind"]
                    if k == "Ack":
                        jt.acked.setdefault(effect["tag"], t)
                    elif k == "Publish":
                        jt.in_flight.add(effect["publish_id"])
                        jt.max_in_flight = max(jt.max_in_flight, len(jt.in_flight))
                    elif k in starts:
                        what, owner = starts[k]
                        jt.transfers[what][(effect[owner], effect["index"])] = [t]
    return jt


def _merge_transfers(journals: list[JournalTimes], start: float, end: float | None
                     ) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for what in ("download", "upload"):
        spans = [s for j in journals for s in j.transfers[what].values()
                 if len(s) == 2 and _within(s[0], start, end)]
        if spans:
            seconds = [b - a for a, b in spans]
            out[what] = {"n": len(spans), "mean_s": statistics.fmean(seconds),
                         "max_s": max(seconds)}
    return out


# --- profiling ------------------------------------------------------------------------


def _start_profiler(ctx: Context, sc: Scenario, pid: int) -> subprocess.Popen:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = ctx.results_dir / f"profile-{sc.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    gil = ["--gil"] if sc.profile == "py-spy" else []
    proc = subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--rate", "250", "--nonblocking", "--nolineno",
         "--threads", *gil, "--format", "raw", "--output", str(out) + ".txt"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    proc.bench_output = str(out) + ".txt"  # type: ignore[attr-defined]
    time.sleep(0.5)  # py-spy attaches
    return proc


def _stop_profiler(proc: subprocess.Popen) -> dict[str, Any]:
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    path = proc.bench_output  # type: ignore[attr-defined]
    from .profile import summarize

    summary = summarize(path) if os.path.exists(path) else {}
    return {"collapsed_stacks": path, "py_spy_stderr": err.decode(errors="replace")[-500:],
            **summary}
