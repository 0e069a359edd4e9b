"""The statistics and the text report of ``python -m bench whole --rounds N [--compare DIR]``
(bench/rounds.py runs the rounds): per S3 style, transformation and figure, the median and
the range over the rounds of each tree; with two trees (A: this checkout, B: DIR), the ratio
A ÷ B of the medians, the median and range of the per-round ratios (the two trees ran in the
same minutes, next to the same floor), and a verdict only where every round agrees."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

Run = dict[str, Any]
Figure = tuple[str, str, str, "Callable[[Run], float]"]

# label, unit, format, the value of one run (a KeyError: the run lacks it)
FIGURES: tuple[Figure, ...] = (
    ("whole CPU", "ms/fragment", ".2f", lambda r: r["whole"]["cpu_ms_per_fragment"]),
    ("whole sys", "ms/fragment", ".2f", lambda r: 1000 * r["whole"]["sys_s"] / r["fragments"]),
    ("÷ floor", "", ".2f", lambda r: r["whole_to_floor"]),
    ("window CPU", "ms/fragment", ".2f", lambda r: r["window"]["cpu_ms_per_fragment"]),
    ("loop thread", "ms/fragment", ".2f", lambda r: r["window"]["loop_ms_per_fragment"]),
    ("window sys", "ms/fragment", ".2f", lambda r: r["window"]["sys_ms_per_fragment"]),
    ("start-up CPU", "s", ".3f", lambda r: r["startup"]["cpu_s"]),
    ("consuming at", "s", ".3f", lambda r: r["startup"]["to_consuming_s"]),
    ("peak RSS", "MiB", ".1f", lambda r: r["whole"]["peak_rss_mib"]),
    ("fragments/s", "", ".0f", lambda r: r["window"]["fragments_per_s"]),
)
QUOTA_FIGURES: tuple[Figure, ...] = (  # under --cpu-quota: how long it was held back too
    *FIGURES, ("throttled", "s", ".2f", lambda r: r["cpu_quota"]["throttled_s"]))


def figures_of(results: dict[str, Any]) -> tuple[Figure, ...]:
    return QUOTA_FIGURES if results.get("cpu_quota") else FIGURES


def order(trees: Sequence[Any], index: int) -> list[Any]:
    """The trees in round ``index`` (from 0): A B, then B A, ... (ABBA), so that neither
    always runs first (the floor is measured before them, the load drifts)."""
    return list(trees) if index % 2 == 0 else list(trees)[::-1]


def value(run: Run | None, figure: Callable[[Run], float]) -> float | None:
    if run is None or run.get("error"):
        return None
    try:
        return float(figure(run))
    except KeyError:
        return None


def series(rounds: Sequence[dict[str, Any]], transformation: str, tree: str,
           figures: Sequence[Figure] = FIGURES
           ) -> dict[str, list[float | None]]:
    """Per figure, its value in each round (None where that round's run failed)."""
    runs = [next((r for r in rnd["runs"] if r.get("transformation") == transformation
                  and r.get("tree", "A") == tree), None) for rnd in rounds]
    return {label: [value(run, get) for run in runs] for label, _, _, get in figures}


def spread(values: Sequence[float | None]) -> dict[str, float] | None:
    """Median, lowest and highest of the values measured (None: none was)."""
    got = [v for v in values if v is not None]
    if not got:
        return None
    return {"median": statistics.median(got), "min": min(got), "max": max(got), "n": len(got)}


def paired(a: Sequence[float | None], b: Sequence[float | None]) -> dict[str, Any] | None:
    """A against B over the rounds where both were measured: the ratio of their medians,
    the per-round ratios' spread, and the verdict."""
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y]
    if not pairs:
        return None
    per_round = [x / y for x, y in pairs]
    med_b = statistics.median(y for _, y in pairs)
    return {"ratio_of_medians": statistics.median(x for x, _ in pairs) / med_b if med_b else None,
            "per_round": spread(per_round), "ratios": per_round, "verdict": verdict(per_round)}


def verdict(ratios: Sequence[float]) -> str:
    """'A lower' or 'A higher' only when at least two rounds were measured and every one of
    them has A on the same side of B; otherwise '' (no difference told from the noise)."""
    if len(ratios) < 2:
        return ""
    if all(r < 1 for r in ratios):
        return f"A lower in all {len(ratios)} rounds"
    if all(r > 1 for r in ratios):
        return f"A higher in all {len(ratios)} rounds"
    return ""


def statistics_of(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per S3 style and transformation: the floor's spread and, per figure, each tree's
    spread and (two trees) the pairing."""
    trees = [t["name"] for t in results["trees"]]
    out = []
    for style in results["styles"]:
        rounds = style["rounds"]
        floor = spread([value(rnd["floor"], lambda f: f["cpu_ms"]) for rnd in rounds])
        for name in results["transformations"]:
            per_tree = {t: series(rounds, name, t, figures_of(results)) for t in trees}
            figures = {}
            for label, *_ in figures_of(results):
                figures[label] = {t: spread(per_tree[t][label]) for t in trees}
                if len(trees) == 2:
                    figures[label]["A÷B"] = paired(per_tree["A"][label], per_tree["B"][label])
            out.append({"style": style["style"], "transformation": name, "floor": floor,
                        "figures": figures})
    return out


# --- the text ---------------------------------------------------------------------------


def report(results: dict[str, Any], stats: list[dict[str, Any]]) -> str:
    n, trees = results["rounds"], results["trees"]
    lines = [f"whole process, {results['fragments']} fragments of 1 KiB (1→1), {n} rounds"
             + (", A and B alternated A B / B A" if len(trees) == 2 else "")]
    lines += [f"{t['name']}: {t['root']} at {t['commit'][:10]}{_changes(t)}" for t in trees]
    if results.get("cpu_quota"):
        lines.append(f"every floor and sidecar under a CFS quota of {results['cpu_quota']:g} "
                     "CPU, each in a cgroup of its own")
    if len(trees) == 2:
        chance = 2 ** (1 - n)
        lines.append(f"ratios are A ÷ B; a verdict only where every round's ratio is on the "
                     f"same side of 1 (two identical trees get one by chance with probability "
                     f"{chance:.0%} per figure, on average {chance * len(figures_of(results)):.1f} "
                     f"of the {len(figures_of(results))} figures of a block)")
    for style in results["styles"]:
        lines.append(f"\n== S3 {style['style']} (moto behind {style['server']})")
        lines += [_round_line(rnd) for rnd in style["rounds"]]
        for block in (s for s in stats if s["style"] == style["style"]):
            lines += _block(block, [t["name"] for t in trees])
    return "\n".join(lines)


def _changes(tree: dict[str, Any]) -> str:
    if tree["sidecar_modified"]:
        return " + uncommitted changes to the sidecar's code"
    return " + uncommitted changes (not to sidecar/, states/)" if tree["uncommitted"] else ""


def _round_line(rnd: dict[str, Any]) -> str:
    floor = rnd["floor"]
    fl = f"floor {floor['cpu_ms']:.2f} ms" if "cpu_ms" in floor else "floor FAILED"
    failed = [f"{r.get('tree', 'A')} {r['transformation']}" for r in rnd["runs"]
              if r.get("error")]
    return (f"  round {rnd['round']}: {rnd['label']}, load {rnd['load_start'][0]:.2f} → "
            f"{rnd['load_end'][0]:.2f}, {fl}, order {' '.join(rnd['order'])}"
            + (f", FAILED: {', '.join(failed)}" if failed else ""))


def _block(block: dict[str, Any], trees: list[str]) -> list[str]:
    fl = block["floor"]
    lines = [f"  -- transformation {block['transformation']}"]
    if fl:
        lines.append(f"  {'floor ms/GET+PUT':<26}{_spread(fl, '.2f')}")
    head = "".join(f"{t + ' median (range)':<26}" for t in trees)
    lines.append(f"  {'':<26}{head}" + ("A÷B   per round A÷B       verdict"
                                         if len(trees) == 2 else "range ÷ median"))
    for label, unit, fmt, _ in QUOTA_FIGURES:
        if label not in block["figures"]:
            continue
        fig = block["figures"][label]
        row = f"  {(label + ' ' + unit).strip():<26}" + "".join(
            f"{_spread(fig[t], fmt):<26}" for t in trees)
        if len(trees) == 2:
            row += _pair(fig["A÷B"])
        elif fig["A"]:
            s = fig["A"]
            row += f"{(s['max'] - s['min']) / s['median']:.0%}" if s["median"] else ""
        lines.append(row.rstrip())
    return lines


def _spread(s: dict[str, float] | None, fmt: str) -> str:
    if s is None:
        return "-"
    return f"{s['median']:{fmt}} ({s['min']:{fmt}} to {s['max']:{fmt}})"


def _pair(p: dict[str, Any] | None) -> str:
    if p is None or p["ratio_of_medians"] is None:
        return "-"
    return (f"{p['ratio_of_medians']:<6.2f}{_spread(p['per_round'], '.2f'):<20}"
            f"{p['verdict']}")
