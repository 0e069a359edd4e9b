"""``python -m bench whole --rounds N [--compare DIR]``: the whole-process measurement of
bench/whole.py repeated N times per S3 style, each round with its own floor measured next
to the sidecar runs and, with ``--compare``, this tree's sidecar and DIR's run alternately
(A B, then B A) on the same S3 endpoint with the same transformation. The statistics and
the report are bench/compare.py's; the JSON keeps every round's raw figures."""

from __future__ import annotations

import argparse
import os
from functools import partial
from typing import Any

from . import compare
from .scenario import Context, base_env
from .trees import THIS, Tree, check, compile_sources, other
from .whole import (
    each_style,
    limited,
    load_label,
    measure,
    measured,
    ratios,
    save,
    storage_floor,
)


def run_rounds(args: argparse.Namespace) -> int:
    from .cli import log, meta

    trees = [THIS] + ([other(args.compare)] if args.compare else [])
    for tree in trees[1:]:
        compile_sources(tree)
    trees_info = [check(tree, base_env()) for tree in trees]
    for t in trees_info:
        log(f"tree {t['name']}: {t['root']} at {t['commit'][:10]}, its sidecar imported "
            f"from {t['sidecar_imported']}")
    env = dict(args.env)

    def style_rounds(ctx: Context, out: dict[str, Any]) -> None:
        out["rounds"] = []
        for index in range(args.rounds):
            log(f"S3 {out['style']}, round {index + 1} of {args.rounds}")
            out["rounds"].append(one_round(ctx, args, index, trees, env))

    results: dict[str, Any] = {
        "meta": meta("whole-rounds", args), "fragments": args.fragments,
        "rounds": args.rounds, "transformations": args.transformation, "trees": trees_info,
        "cpu_quota": args.cpu_quota,
        "styles": each_style(args, style_rounds)}
    stats = compare.statistics_of(results)
    results["statistics"] = stats
    path = save(args, results, "whole-rounds")
    print(compare.report(results, stats))
    print(f"\nresults: {path}")
    failed = [r for s in results["styles"] for rnd in s["rounds"] for r in rnd["runs"]
              if r.get("error")]
    return 1 if failed else 0


def one_round(ctx: Context, args: argparse.Namespace, index: int, trees: list[Tree],
              env: dict[str, str]) -> dict[str, Any]:
    """The floor, then per transformation each tree's sidecar once, in this round's order."""
    from .cli import log

    load_start = os.getloadavg()
    floor = measured(partial(limited, args, partial(storage_floor, ctx, args.floor_count,
                                                    args.floor_repeat)))
    runs = []
    trees = compare.order(trees, index)
    for name in args.transformation:
        for tree in trees:
            log(f"  tree {tree.name}, transformation {name}: {args.fragments} fragments")
            run = measured(partial(limited, args, partial(measure, ctx, name, args.fragments,
                                                          env, tree=tree)))
            run.update(ratios(run, floor.get("cpu_ms")), tree=tree.name, transformation=name)
            runs.append(run)
    load_end = os.getloadavg()
    return {"round": index + 1, "order": [t.name for t in trees], "floor": floor, "runs": runs,
            "load_start": list(load_start), "load_end": list(load_end),
            "label": load_label([load_start[0], load_end[0]])}
