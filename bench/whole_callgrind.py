"""``python -m bench whole --callgrind``: the whole process counted in instructions.

    python -m bench whole --callgrind [--fragments 1000] [--callgrind-sizes 20,120]
                          [--s3 keepalive,close] [--transformation pyterum]

The CPU figures of ``python -m bench whole`` move with the machine's load (±10-15% between
identical runs on a shared machine); instruction counts do not. This mode runs the same
measurement with the sidecar under valgrind's callgrind (``--fair-sched=yes``), twice, on
``S`` and ``L`` fragments (``--callgrind-sizes S,L``), and reads the instructions the
process executed from ``Popen`` to exit (callgrind's ``Collected``, all threads):

* per fragment: ``(Ir(L) - Ir(S)) / (L - S)``, the steady state;
* fixed: ``Ir(S) - S * per fragment``: start-up, the idle wait, shutdown;
* whole at ``--fragments`` N: ``fixed / N + per fragment``, what one fragment costs a
  process that handles N;
* by thread (``--separate-threads=yes``, one callgrind file per thread): the steady state
  of the loop thread (the main thread, callgrind's thread 1) and of the other threads
  together (storage workers, checker, HTTP server), each the same difference;
* with ``--owners``, two more runs: the loop thread's steady state by owner
  (bench/loop_owners.py: bench/profile.py's owners, each instruction charged to the
  innermost frame that has one), with the loop thread's total in those runs.

The floor is counted the same way: the bare minio client doing ``S`` and ``L`` GET+PUT pairs
of 1 KiB, one at a time, under callgrind (``FLOOR_PROGRAM``), per pair the difference. The
ratio whole ÷ floor is the instruction analogue of the issue's goal (≤ 1.5).

What it leaves out: the kernel's work (system calls, context switches: the ``sys`` part of
``python -m bench whole``'s CPU) and what the load does to it (lock contention, wake-ups
that find nothing to batch); valgrind runs one thread at a time, so the threads hand over
differently than on two cores. Use it for before/after on a loaded machine, beside the
timed figures. About 2-4 minutes per style (valgrind slows Python about 50 times).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .endpoints import ACCESS_KEY, SECRET_KEY
from .instructions import CALLGRIND, collected
from .scenario import Context, random_id
from .trees import THIS, Tree

T = TypeVar("T")

HERE = Path(__file__).resolve().parent
FLOOR_PROGRAM = """
import os, sys, tempfile
sys.path.insert(0, {root!r})
from bench.raw import client, get_to_file, put_from_file
endpoint, bucket, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = client(endpoint, {access!r}, {secret!r}, 1)
tmp = tempfile.mkdtemp()
source = os.path.join(tmp, "source.bin")
with open(source, "wb") as f:
    f.write(os.urandom(1024))
for i in range(n):
    put_from_file(c, bucket, "floor/file.json", source, 16 << 20)
    get_to_file(c, bucket, "floor/file.json", os.path.join(tmp, "floor", "file.bin"))
"""


# one output file per thread: <prefix>.<pid>-<thread number>, the main thread 01
THREADS = ("--separate-threads=yes",)
_TOTAL = re.compile(r"^(?:summary|totals): *(\d+)", re.M)


def thread_totals(directory: Path) -> dict[int, int]:
    """Each thread's instructions from callgrind's per-thread files in ``directory``
    (thread number → ``summary``/``totals`` of its file; 1 is the main thread)."""
    totals = {}
    for path in directory.iterdir():
        number, found = re.search(r"-(\d+)$", path.name), _TOTAL.search(path.read_text())
        if number and found:
            totals[int(number.group(1))] = int(found.group(1))
    if 1 not in totals:
        raise RuntimeError(f"no callgrind file of the main thread in {directory}")
    return totals


def loop_and_others(totals: dict[int, int]) -> tuple[int, int]:
    """(the loop thread's, the other threads' together) of :func:`thread_totals`."""
    return totals[1], sum(v for k, v in totals.items() if k != 1)


def per_item(small: tuple[int, int], large: tuple[int, int]) -> tuple[float, float]:
    """(per item, fixed) from two (count, instructions) points."""
    (s, ir_s), (big, ir_l) = small, large
    if big <= s:
        raise ValueError("the larger size must be larger")
    each = (ir_l - ir_s) / (big - s)
    return each, ir_s - s * each


def floor_instructions(ctx: Context, sizes: tuple[int, int]) -> dict[str, Any]:
    bucket = f"{random_id(20)}-floor"
    s3 = ctx.s3.client()
    s3.make_bucket(bucket)
    program = FLOOR_PROGRAM.format(root=str(HERE.parent), access=ACCESS_KEY,
                                   secret=SECRET_KEY)
    try:
        points = []
        for n in sizes:
            points.append((n, collected(program, ctx.s3.url, bucket, str(n))))
    finally:
        for obj in s3.list_objects(bucket, recursive=True):
            s3.remove_object(bucket, obj.object_name)
        s3.remove_bucket(bucket)
    each, fixed = per_item(points[0], points[1])
    return {"points": points, "per_get_put": each, "fixed": fixed}


def sidecar_instructions(ctx: Context, transformation: str, sizes: tuple[int, int],
                         fragments: int, env: dict[str, str]) -> dict[str, Any]:
    points, loop, others, runs = [], [], [], []
    for n in sizes:
        run, totals = threads_run(ctx, transformation, n, env, (),
                                  lambda out: loop_and_others(thread_totals(out)))
        points.append((n, run.pop("instructions")))
        loop.append((n, totals[0]))
        others.append((n, totals[1]))
        runs.append(run)
    each, fixed = per_item(points[0], points[1])
    return {"transformation": transformation, "points": points, "per_fragment": each,
            "fixed": fixed, "whole_per_fragment": fixed / fragments + each,
            "loop_points": loop, "loop_per_fragment": per_item(loop[0], loop[1])[0],
            "others_points": others, "others_per_fragment": per_item(others[0], others[1])[0],
            "peak_rss_mib_under_valgrind": [r["whole"]["peak_rss_mib"] for r in runs]}


def threads_run(ctx: Context, transformation: str, n: int, env: dict[str, str],
                options: tuple[str, ...], read: Callable[[Path], T], tree: Tree = THIS
                ) -> tuple[dict[str, Any], T]:
    """One sidecar under callgrind with ``options`` and a file per thread (``THREADS``);
    the measurement and ``read`` of the directory of those files."""
    from .whole import measure

    out = Path(tempfile.mkdtemp(prefix="callgrind-", dir=ctx.workdir))
    prefix = (*CALLGRIND[:-1], *THREADS, *options, f"--callgrind-out-file={out}/callgrind.%p")
    try:
        run = measure(ctx, transformation, n, env, prefix=prefix, patience=60.0, tree=tree)
        if run.get("error"):
            raise RuntimeError(run["error"])
        return run, read(out)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def loop_owners(ctx: Context, transformation: str, sizes: tuple[int, int],
                env: dict[str, str]) -> dict[str, Any]:
    """The loop thread's steady state by owner (bench/loop_owners.py)."""
    from . import loop_owners as lo

    def read(out: Path) -> tuple[int, dict[str, int]]:
        main = next(out.glob("*-01"))
        return thread_totals(out)[1], lo.annotate(main)

    hook = Path(tempfile.mkdtemp(prefix="owners-", dir=ctx.workdir))
    lo.build(hook)
    tree = lo.Hooked(THIS.name, THIS.root, THIS.python, hook)
    try:
        (loop_s, owners_s), (loop_l, owners_l) = (
            threads_run(ctx, transformation, n, env, tuple(lo.skip_options()), read, tree)[1]
            for n in sizes)
    finally:
        shutil.rmtree(hook, ignore_errors=True)
    span = sizes[1] - sizes[0]
    owners = {k: (owners_l.get(k, 0) - owners_s.get(k, 0)) / span
              for k in {*owners_s, *owners_l}}
    owners["not under an owner"] = (loop_l - loop_s) / span - sum(owners.values())
    return {"loop_per_fragment": (loop_l - loop_s) / span,
            "by_owner": dict(sorted(owners.items(), key=lambda kv: -kv[1]))}


def run_callgrind(args: argparse.Namespace) -> int:
    from .cli import environment, log, meta
    from .whole import STYLES

    small, large = args.callgrind_sizes
    results: dict[str, Any] = {"meta": meta("whole-callgrind", args),
                               "fragments": args.fragments, "styles": []}
    for style in args.s3:
        env_args = argparse.Namespace(broker=args.broker, s3_server=STYLES[style],
                                      results_dir=args.results_dir)
        out: dict[str, Any] = {"style": style, "runs": []}
        results["styles"].append(out)
        with environment(env_args) as ctx:
            log(f"S3 {style}: the floor under callgrind ({small} and {large} GET+PUT pairs)")
            out["floor"] = floor_instructions(ctx, (small, large))
            for name in args.transformation:
                log(f"S3 {style}, {name}: the sidecar under callgrind, {small} and {large} "
                    "fragments")
                run = sidecar_instructions(ctx, name, (small, large), args.fragments,
                                           dict(args.env))
                run["to_floor"] = run["whole_per_fragment"] / out["floor"]["per_get_put"]
                if args.owners:
                    log(f"S3 {style}, {name}: the loop thread by owner, {small} and {large} "
                        "fragments")
                    run["owners"] = loop_owners(ctx, name, (small, large), dict(args.env))
                out["runs"].append(run)
    results["meta"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    path = args.results_dir / f"whole-callgrind-{time.strftime('%Y%m%d-%H%M%S')}.json"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    print(summary(results))
    print(f"\nresults: {path}")
    return 0


def summary(results: dict[str, Any]) -> str:
    n = results["fragments"]
    lines = [f"whole process in instructions (callgrind), 1 KiB 1→1, per fragment at {n}:"]
    for s in results["styles"]:
        floor = s["floor"]["per_get_put"]
        lines.append(f"\n== S3 {s['style']}\n  floor           {floor / 1e3:8.0f} k per GET+PUT"
                     " (bare minio)")
        for r in s["runs"]:
            lines += [f"  -- {r['transformation']}",
                      f"  whole           {r['whole_per_fragment'] / 1e3:8.0f} k per fragment"
                      f" at {n}; ÷ floor {r['to_floor']:.2f}",
                      f"  steady state    {r['per_fragment'] / 1e3:8.0f} k per fragment",
                      f"    loop thread   {r['loop_per_fragment'] / 1e3:8.0f} k per fragment",
                      f"    other threads {r['others_per_fragment'] / 1e3:8.0f} k per fragment"
                      " (storage workers, checker, HTTP)",
                      f"  fixed           {r['fixed'] / 1e6:8.0f} M (start-up, idle, shutdown)"]
            if r.get("owners"):
                o = r["owners"]
                loop = o["loop_per_fragment"]
                lines.append(f"  loop thread by owner, per fragment (of {loop / 1e3:.0f} k with "
                             "the evaluator installed):")
                lines += [f"    {k:32s} {v / 1e3:7.1f} k {100 * v / loop:5.1f}%"
                          for k, v in o["by_owner"].items()]
    return "\n".join(lines)
