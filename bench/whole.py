"""``python -m bench whole``: what a user pays for the whole sidecar process (issue 14).

    python -m bench whole [--fragments 1000] [--transformation pyterum,link]
                          [--s3 keepalive,close] [--floor-count 300] [--floor-repeat 3]
                          [--env SIDECAR_STORAGE_WORKERS=4 ...] [--cpu-quota 0.1]
                          [--rounds N] [--compare DIR]

For each S3 style (``keepalive``: moto behind granian, which keeps connections open;
``close``: moto behind werkzeug, as ``moto_server`` serves it, which closes every
connection) it measures, on a fresh S3 endpoint:

1. the storage-client floor: the CPU of the bare minio client for one 1 KiB GET and one
   1 KiB PUT, one at a time (``python -m bench.raw s3-floor``, best of the repeats);
2. for each transformation (``pyterum``: bench/transformations/upper_copy.py, reads each
   input and writes an upper-cased copy; ``link``: link_passthrough.py, hard links), one
   sidecar process from ``Popen`` to its exit: it starts, consumes ``fragments`` 1 KiB 1→1
   fragments published once it consumes, and is ended with SIGTERM once every lineage
   message arrived. Its CPU (user+sys, all threads, start-up and shutdown included) and
   peak RSS come from ``os.wait4`` (the kernel's rusage of the child: exact, not sampled);
   the start-up is timed from ``Popen`` to the ``started: consuming`` log line and to its
   consumer appearing on the input queue, with the CPU it had spent by then.

Beside the whole-process figure it prints the loaded-window figure of ``python -m bench``
(CPU from the first publish to the last lineage message, loop and storage threads), both
divided by the floor (the issue's goal: whole ÷ floor ≤ 1.5), and the 1-minute load
average at the start and end of every measurement. A figure is labelled "quiet" only if
both readings were ≤ 0.5, otherwise "loaded (load X)" with the higher one; the end reading
includes the bench's own processes, so the label errs towards "loaded".

The window also has the sys time and the context switches per fragment (loop thread, other
threads; /proc/<pid>/task/*/status), counts that move less with the load than CPU time.
With ``BENCH_PERF_STAT=1`` (root, or a low ``perf_event_paranoid``) ``perf stat`` counts
over the window the sidecar's system calls, futex calls (GIL and lock hand-offs between
threads), context switches and CPU migrations. ``--env NAME=VALUE`` sets a sidecar
variable for the measured runs (the floor is the bare client's either way).

Timed figures on a shared machine move by ±30-50% between identical runs, so one run says
little. ``--rounds N`` repeats the floor and the sidecar runs N times per S3 style (one S3
endpoint per style) and reports per figure (whole CPU and sys per fragment, ÷ floor, window
CPU, loop thread, window sys, start-up CPU, consuming at, peak RSS, fragments/s, and under
``--cpu-quota`` the time throttled) the median and the range over the rounds, with each
round's load. ``--compare DIR`` (another checkout, e.g. ``git
worktree add ../base <sha>``, with its own ``.venv`` where the sidecar is installed) runs
DIR's sidecar (``DIR/.venv/bin/python -m sidecar``, DIR first on PYTHONPATH; its imported
``sidecar.__file__`` is checked to be DIR's, and its ``.pyc`` files are written) beside this
one's in every round, in the order A B, then B A (A: this tree, B: DIR), after the same
floor, and reports each tree's medians, the ratio A ÷ B of the medians, the median and
range of the per-round ratios, and a verdict only where every round has A on the same side
of B. The JSON (``bench/results/whole-rounds-*.json``) keeps every round's raw figures and
load, and each tree's commit and whether it had uncommitted changes. bench/rounds.py runs
the rounds; bench/compare.py computes the statistics and the report.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from . import cgroup, procstat
from .endpoints import ACCESS_KEY, SECRET_KEY, Arrivals, Broker
from .instructions import total
from .scenario import (
    MIB,
    TRANSFORMATIONS,
    Context,
    Scenario,
    Step,
    _put_inputs,
    _sidecar_env,
    _transformation_env,
    descriptor,
    random_id,
    remove_run,
    run_names,
)
from .trees import THIS, Tree, compile_sources
from .whole_report import summary

STYLES = {"keepalive": "granian", "close": "werkzeug",  # S3 style -> WSGI server
          "granian-close": "granian-close"}  # diagnostic: closing at granian's cost
SCRIPTS = {"pyterum": TRANSFORMATIONS / "upper_copy.py",
           "link": TRANSFORMATIONS / "link_passthrough.py"}
QUIET_LOAD = 0.5  # the highest 1-minute load average a "quiet" figure may run under
STARTED = b"started: consuming"  # the sidecar's log line once its consumer is requested


# --- the pure parts (tests/unit/test_bench.py) ------------------------------------------


def choice_list(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated list of ``allowed`` names, in order, no repeats."""

    def parse(text: str) -> list[str]:
        names = list(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
        bad = [n for n in names if n not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(
                f"{text!r}: choose one or more of {', '.join(allowed)} (comma-separated)")
        return names

    return parse


def setting(text: str) -> tuple[str, str]:
    """An argparse type for ``--env NAME=VALUE``: the pair (``dict(args.env)`` is the env)."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: NAME=VALUE, e.g. SIDECAR_STORAGE_WORKERS=4")
    return name, value


def load_label(readings: Sequence[float]) -> str:
    """'quiet (load X)' only if every 1-minute load reading was ≤ 0.5, else 'loaded (load X)'
    with the highest reading."""
    worst = max(readings)
    return f"{'quiet' if worst <= QUIET_LOAD else 'loaded'} (load {worst:.2f})"


def usage_figures(usage: Any, fragments: int) -> dict[str, float]:
    """The whole-process figures from a child's rusage (``os.wait4``): CPU in seconds and
    per fragment, and the peak resident set (ru_maxrss is in KiB on Linux)."""
    cpu = usage.ru_utime + usage.ru_stime
    return {"cpu_s": cpu, "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
            "cpu_ms_per_fragment": 1000 * cpu / fragments,
            "peak_rss_mib": usage.ru_maxrss * 1024 / MIB}


def floor_of(best: dict[str, dict[str, float]]) -> dict[str, float]:
    """The bare minio client's CPU per 1 KiB GET + PUT from ``bench.raw s3-floor``."""
    bare = best["bare minio"]
    return {"get_cpu_ms": bare["get_cpu_ms"], "put_cpu_ms": bare["put_cpu_ms"],
            "cpu_ms": bare["get_cpu_ms"] + bare["put_cpu_ms"]}


def ratios(run: dict[str, Any], floor_ms: float | None) -> dict[str, float]:
    """Whole-process and window CPU per fragment ÷ the floor of the same S3 style."""
    if not floor_ms or run.get("error"):
        return {}
    return {"whole_to_floor": run["whole"]["cpu_ms_per_fragment"] / floor_ms,
            "window_to_floor": run["window"]["cpu_ms_per_fragment"] / floor_ms}


# --- the command ------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fragments", type=int, default=1000,
                        help="1 KiB 1→1 fragments per sidecar process (default 1000)")
    parser.add_argument("--transformation", type=choice_list(tuple(SCRIPTS)),
                        default=["pyterum"], help="pyterum (writes an upper-cased copy, "
                        "the default), link (hard links), or both: pyterum,link")
    parser.add_argument("--s3", type=choice_list(tuple(STYLES)), default=["keepalive", "close"],
                        help="keepalive (granian), close (werkzeug, closes every "
                        "connection like moto_server); default both. granian-close: "
                        "granian closing every connection (a diagnostic)")
    parser.add_argument("--env", action="append", default=[], type=setting, metavar="NAME=VALUE",
                        help="a sidecar setting for the measured runs, e.g. "
                        "SIDECAR_STORAGE_WORKERS=2 (repeatable)")
    parser.add_argument("--cpu-quota", type=cgroup.quota_argument, metavar="Q",
                        help="run the floor and every sidecar in a cgroup of its own with a "
                        "CFS quota of Q CPUs (production: 0.1); needs a writable cgroup")
    parser.add_argument("--floor-count", type=int, default=300,
                        help="GETs and PUTs per floor measurement (default 300)")
    parser.add_argument("--floor-repeat", type=int, default=3,
                        help="floor measurements; the lowest is kept (default 3)")
    parser.add_argument("--rounds", type=positive, default=1,
                        help="measure N times per S3 style, each round with its own floor; "
                        "the median and range of every figure (bench/rounds.py)")
    parser.add_argument("--compare", type=Path, metavar="DIR",
                        help="another checkout with its own .venv (e.g. a git worktree of an "
                        "older commit): its sidecar and this one's alternate in every round, "
                        "A B then B A, and the report gives A ÷ B")
    parser.add_argument("--callgrind", action="store_true",
                        help="count instructions under valgrind instead of timing "
                        "(bench/whole_callgrind.py; a few minutes per style)")
    parser.add_argument("--callgrind-sizes", type=sizes_pair, default=(20, 120),
                        help="the two fragment counts whose difference is the steady "
                        "state under --callgrind (default 20,120)")
    parser.add_argument("--owners", action="store_true",
                        help="with --callgrind, two more runs: the loop thread's instructions "
                        "by owner (bench/loop_owners.py; needs gcc)")


def positive(text: str) -> int:
    if int(text) < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return int(text)


def sizes_pair(text: str) -> tuple[int, int]:
    small, large = (int(x) for x in text.split(","))
    if not 0 < small < large:
        raise argparse.ArgumentTypeError("two counts, the first smaller: e.g. 50,250")
    return small, large


def run_whole(args: argparse.Namespace) -> int:
    from .cli import log, meta

    if args.callgrind and (args.rounds > 1 or args.compare):
        raise SystemExit("--callgrind takes no --rounds or --compare: instruction counts do "
                         "not move with the load; run it in each tree")
    if args.callgrind and args.cpu_quota:
        raise SystemExit("--callgrind takes no --cpu-quota: valgrind runs one thread at a "
                         "time and instruction counts do not move with the CPU time")
    args.cgroups = cgroup.find() if args.cpu_quota else None
    compile_sources()
    if args.callgrind:
        from .whole_callgrind import run_callgrind

        return run_callgrind(args)
    if args.rounds > 1 or args.compare:
        from .rounds import run_rounds

        return run_rounds(args)

    def style_runs(ctx: Context, out: dict[str, Any]) -> None:
        log(f"S3 {out['style']}: the storage-client floor ({args.floor_count} GETs and PUTs, "
            f"{args.floor_repeat} times)")
        out["floor"] = measured(partial(limited, args, partial(
            storage_floor, ctx, args.floor_count, args.floor_repeat)))
        out["runs"] = []
        for name in args.transformation:
            log(f"S3 {out['style']}, transformation {name}: one sidecar, {args.fragments} "
                "fragments, Popen to exit")
            run = measured(partial(limited, args, partial(
                measure, ctx, name, args.fragments, dict(args.env))))
            run.update(ratios(run, out["floor"].get("cpu_ms")))
            out["runs"].append(run)

    results: dict[str, Any] = {"meta": meta("whole", args), "fragments": args.fragments,
                               "styles": each_style(args, style_runs)}
    path = save(args, results, "whole")
    print(summary(results))
    print(f"\nresults: {path}")
    failed = [r for s in results["styles"] for r in s["runs"] if r.get("error")]
    return 1 if failed else 0


def each_style(args: argparse.Namespace, body: Callable[[Context, dict[str, Any]], None]
               ) -> list[dict[str, Any]]:
    """Per S3 style of ``--s3``, on a fresh S3 endpoint (with the fake manager and a
    scratch directory), ``body`` fills in the style's result."""
    from .cli import environment

    styles = []
    for style in args.s3:
        env_args = argparse.Namespace(broker=args.broker, s3_server=STYLES[style],
                                      results_dir=args.results_dir)
        styles.append({"style": style, "server": STYLES[style]})
        with environment(env_args) as ctx:
            body(ctx, styles[-1])
    return styles


def save(args: argparse.Namespace, results: dict[str, Any], name: str) -> Path:
    """The JSON result, with the load average at the end, in ``--results-dir``."""
    results["meta"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=1))
    return path


def measured(what: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one measurement with the load average read before and after; a failure is
    recorded as ``error`` (the other measurements go on)."""
    load_start = os.getloadavg()
    try:
        out = what()
    except Exception as err:
        import traceback

        traceback.print_exc()
        out = {"error": f"{type(err).__name__}: {err}"}
    load_end = os.getloadavg()
    out.update(load_start=list(load_start), load_end=list(load_end),
               label=load_label([load_start[0], load_end[0]]))
    return out


def limited(args: argparse.Namespace, what: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """``what(prefix=...)``, its process under ``--cpu-quota`` in a cgroup of its own, with
    the cgroup's throttling in the result; without the option, just ``what()``."""
    if not args.cpu_quota:
        return what()
    with cgroup.limited(args.cgroups, args.cpu_quota) as quota:
        out = what(prefix=quota.prefix)
    out["cpu_quota"] = quota.stat
    if not quota.stat["periods"]:  # it ran, so it ran in some period: it was not in there
        out["error"] = f"the process never ran in its cgroup {quota.path}"
    return out


def storage_floor(ctx: Context, count: int, repeat: int, prefix: Sequence[str] = ()
                  ) -> dict[str, Any]:
    from .cli import _raw

    bucket = f"{random_id(20)}-floor"
    raw = _raw("s3-floor", "--endpoint", ctx.s3.url, "--access", ACCESS_KEY, "--secret",
               SECRET_KEY, "--bucket", bucket, "--count", str(count), "--repeat", str(repeat),
               "--modes", "", prefix=prefix)
    ctx.s3.client().remove_bucket(bucket)
    return {**floor_of(raw["best"]), "objects": count, "repeat": repeat}


def measure(ctx: Context, transformation: str, n: int, env: dict[str, str] | None = None,
            prefix: Sequence[str] = (), patience: float = 1.0, tree: Tree = THIS
            ) -> dict[str, Any]:
    """One sidecar process from Popen to exit on ``n`` 1 KiB 1→1 fragments; ``env``: the
    sidecar's settings beyond the defaults (``--env``); ``prefix`` runs it under another
    command (valgrind), ``patience`` multiplies the timeouts; ``tree``: the checkout whose
    sidecar runs (the transformation is this one's). Under callgrind the result has its
    ``instructions``."""
    run_hash, step = random_id(32), "bench"
    names = run_names(run_hash, step)
    sc = Scenario(f"whole-{transformation}", fragments=n, env=env or {},
                  transformation=str(SCRIPTS[transformation]))
    root = Path(tempfile.mkdtemp(prefix="whole-", dir=ctx.workdir))
    broker, s3 = Broker(ctx.broker_url), ctx.s3.client()
    st = Step(root, 0)
    arrivals: Arrivals | None = None
    try:
        for q in ("input", "output", "lineage"):
            broker.declare(names[q])
        keys = _put_inputs(s3, names["input_bucket"], sc)
        arrivals = Arrivals(ctx.broker_url, names["lineage"])
        ctx.s3.stats(reset=True)
        st.start_sidecar(tree.environ(_sidecar_env(ctx, sc, st, run_hash, step, names)),
                         prefix, tree.python)
        assert st.sidecar is not None
        pid = st.sidecar.pid
        startup = wait_started(st, broker, names["input"], 30.0 * patience)
        st.start_transformation(_transformation_env(st), script=sc.transformation)
        counting = (procstat.perf_stat(pid) if os.environ.get("BENCH_PERF_STAT")
                    or os.environ.get("BENCH_PERF_TRACE")
                    or os.environ.get("BENCH_PERF_RECORD") else None)
        before, s3_before, t0 = _window_reading(pid), ctx.s3.stats(), time.monotonic()
        for i in range(n):
            broker.publish(names["input"], descriptor([keys[i % len(keys)]],
                                                      names["input_bucket"]))
        t_last = arrivals.wait(n, (120 + 0.1 * n) * patience, st.check_alive)
        time.sleep(0.1)  # the acks follow the last lineage confirm
        after, s3_after = _window_reading(pid), ctx.s3.stats()
        counts = procstat.perf_counts(counting, n, pid) if counting else {}
        t_term = time.monotonic()
        code = st.stop(30.0 * patience)
        shutdown_s = time.monotonic() - t_term
        if st.sidecar_rusage is None:
            raise RuntimeError("the sidecar was reaped before its rusage could be read")
        s3_whole = ctx.s3.stats()
        window = {**_window(before, after, n, t_last - t0), **counts}
        t_usage = st.transformation_rusage
        result: dict[str, Any] = {
            "transformation": transformation, "fragments": n, "exit_code": code,
            "whole": usage_figures(st.sidecar_rusage, n), "window": window,
            "startup": startup, "shutdown_s": shutdown_s,
            "transformation_cpu_ms_per_fragment":
                usage_figures(t_usage, n)["cpu_ms_per_fragment"] if t_usage else float("nan"),
            "s3": {"window_requests": s3_after["requests"] - s3_before["requests"],
                   "window_connections": s3_after["connections"] - s3_before["connections"],
                   "window_ops": {k: v - s3_before["ops"].get(k, 0)
                                  for k, v in s3_after["ops"].items()},
                   "whole_requests": s3_whole["requests"], "whole_ops": s3_whole["ops"]},
        }
        if prefix and prefix[0] == "valgrind":
            result["instructions"] = total((st.root / "sidecar.log").read_text(errors="replace"))
        if code != 0:
            result["error"] = f"sidecar exit code {code}\n{st.log_tail()}"
        return result
    finally:
        st.stop(5)
        if arrivals is not None:
            arrivals.stop()
        remove_run(broker, s3, names)
        shutil.rmtree(root, ignore_errors=True)


def wait_started(st: Step, broker: Broker, queue: str, timeout: float = 30.0
                 ) -> dict[str, float]:
    """Poll (every 2 ms) for the ``started: consuming`` log line, then for the consumer on
    the queue; the wall time of each from Popen, and the CPU spent when the consumer was
    seen (/proc/<pid>/stat: every thread's, those that ended included)."""
    assert st.sidecar is not None
    deadline = time.monotonic() + timeout
    logged = None
    while time.monotonic() < deadline:
        st.check_alive()
        if logged is None and STARTED in (st.root / "sidecar.log").read_bytes():
            logged = time.monotonic()
        if logged is not None and broker.counts(queue)[1] >= 1:
            consuming = time.monotonic()
            cpu = procstat.sample(st.sidecar.pid).cpu
            st.consuming = consuming
            return {"to_log_s": logged - st.spawned, "to_consuming_s": consuming - st.spawned,
                    "cpu_s": cpu}
        time.sleep(0.002)
    raise TimeoutError(f"the sidecar was not consuming after {timeout}s\n{st.log_tail()}")


def _window_reading(pid: int) -> dict[str, float]:
    threads, whole = procstat.threads_cpu(pid), procstat.sample(pid)
    switches = procstat.switches(pid)
    return {"cpu": whole.cpu, "sys": whole.system, "loop": sum(threads["loop"]),
            "workers": sum(threads["workers"]), "loop_switches": switches["loop"],
            "workers_switches": switches["workers"]}


def _window(before: dict[str, float], after: dict[str, float], n: int, wall: float
            ) -> dict[str, float]:
    """The loaded-window figures of ``python -m bench`` (first publish → last lineage)."""
    cpu = after["cpu"] - before["cpu"]

    def per_fragment(key: str) -> float:  # of the readings that have it (tests give fewer)
        return (after.get(key, 0) - before.get(key, 0)) / n

    return {"cpu_s": cpu, "cpu_ms_per_fragment": 1000 * cpu / n,
            "sys_ms_per_fragment": 1000 * per_fragment("sys"),
            # voluntary + involuntary, of the threads alive at the end of the window
            "loop_switches_per_fragment": per_fragment("loop_switches"),
            "workers_switches_per_fragment": per_fragment("workers_switches"),
            "loop_ms_per_fragment": 1000 * (after["loop"] - before["loop"]) / n,
            "workers_ms_per_fragment": 1000 * (after["workers"] - before["workers"]) / n,
            "wall_s": wall, "fragments_per_s": n / wall if wall > 0 else float("nan")}
