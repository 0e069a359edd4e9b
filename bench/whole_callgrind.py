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
  process that handles N.

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
import time
from pathlib import Path
from typing import Any

from .endpoints import ACCESS_KEY, SECRET_KEY
from .instructions import CALLGRIND, collected
from .scenario import Context, random_id

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
    from .whole import measure

    points, runs = [], []
    for n in sizes:
        run = measure(ctx, transformation, n, env, prefix=CALLGRIND, patience=60.0)
        if run.get("error"):
            raise RuntimeError(run["error"])
        points.append((n, run.pop("instructions")))
        runs.append(run)
    each, fixed = per_item(points[0], points[1])
    return {"transformation": transformation, "points": points, "per_fragment": each,
            "fixed": fixed, "whole_per_fragment": fixed / fragments + each,
            "peak_rss_mib_under_valgrind": [r["whole"]["peak_rss_mib"] for r in runs]}


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
                      f"  fixed           {r['fixed'] / 1e6:8.0f} M (start-up, idle, shutdown)"]
    return "\n".join(lines)
