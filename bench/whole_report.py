"""The text report of ``python -m bench whole``: one measurement per S3 style and
transformation (bench/whole.py); with ``--rounds`` or ``--compare``, bench/compare.py."""

from __future__ import annotations

from typing import Any

GOAL_TO_FLOOR = 1.5  # issue 14: whole-process CPU at most 1.5 times the storage-client floor


def summary(results: dict[str, Any]) -> str:
    """The text report: per S3 style its floor, then one block per transformation."""
    lines = [f"whole process: {results['fragments']} fragments of one 1 KiB file each (1→1)"]
    for style in results["styles"]:
        fl = style.get("floor", {})
        lines.append(f"\n== S3 {style['style']} (moto behind {style['server']})")
        if "cpu_ms" in fl:
            lines.append(f"  floor           {fl['cpu_ms']:.2f} ms CPU per GET+PUT (GET "
                         f"{fl['get_cpu_ms']:.2f}, PUT {fl['put_cpu_ms']:.2f}), "
                         f"{fl['label']}, load {_loads(fl)}{_quota(fl)}")
        else:
            lines.append(f"  floor           FAILED: {fl.get('error')}")
        for run in style["runs"]:
            lines += _run_lines(run)
    return "\n".join(lines)


def _quota(m: dict[str, Any]) -> str:
    """Under ``--cpu-quota``: the quota, and how much of the run the process was throttled."""
    q = m.get("cpu_quota")
    if not q:
        return ""
    return (f"; quota {q['cpus']:g} CPU (cgroup v{q['cgroup_version']}): throttled in "
            f"{q['throttled_periods']} of {q['periods']} periods, {q['throttled_s']:.2f} s")


def _loads(m: dict[str, Any]) -> str:
    return f"{m['load_start'][0]:.2f} → {m['load_end'][0]:.2f}"


def _run_lines(r: dict[str, Any]) -> list[str]:
    head = f"  -- transformation {r['transformation']}: "
    if r.get("error"):
        return [head + f"FAILED: {r['error']}"]
    w, win, st, s3 = r["whole"], r["window"], r["startup"], r["s3"]
    goal = r.get("whole_to_floor")
    met = goal is not None and goal <= GOAL_TO_FLOOR
    verdict = "" if goal is None else \
        f"; ÷ floor {goal:.2f} (goal ≤ {GOAL_TO_FLOOR}: {'met' if met else 'not met'})"
    ops = ", ".join(f"{k} {v / r['fragments']:.2f}" for k, v in sorted(s3["window_ops"].items()))
    return [
        head + f"{r['label']}, load {_loads(r)}, exit code {r['exit_code']}{_quota(r)}",
        f"  whole process   {w['cpu_ms_per_fragment']:.2f} ms CPU/fragment (user "
        f"{1000 * w['user_s'] / r['fragments']:.2f}, sys {1000 * w['sys_s'] / r['fragments']:.2f})"
        f" = {w['cpu_s']:.2f} s from Popen to exit{verdict}",
        f"  loaded window   {win['cpu_ms_per_fragment']:.2f} ms CPU/fragment (loop "
        f"{win['loop_ms_per_fragment']:.2f}, other threads {win['workers_ms_per_fragment']:.2f})"
        f"; ÷ floor {r.get('window_to_floor', float('nan')):.2f}; "
        f"{win['fragments_per_s']:.0f} fragments/s",
        f"                  sys {win.get('sys_ms_per_fragment', float('nan')):.2f} ms/fragment; "
        f"context switches/fragment: loop {win.get('loop_switches_per_fragment', 0):.1f}, "
        f"other threads {win.get('workers_switches_per_fragment', 0):.1f}",
        *[f"                  {k}: {v:.1f}" for k, v in win.items()
          if k.startswith(("perf ", "syscalls "))],
        f"  outside it      {w['cpu_s'] - win['cpu_s']:.2f} s CPU (start-up, idle, shutdown)",
        f"  start-up        'started' logged at {st['to_log_s']:.2f} s, consumer on the queue "
        f"at {st['to_consuming_s']:.2f} s, {st['cpu_s']:.2f} s CPU by then",
        f"  shutdown        SIGTERM → exit {r['shutdown_s']:.2f} s",
        f"  peak RSS        {w['peak_rss_mib']:.1f} MiB (ru_maxrss)",
        f"  S3              {s3['window_requests'] / r['fragments']:.2f} requests/fragment in "
        f"the window ({ops}), {s3['whole_requests']} over the whole process; "
        f"{s3['window_connections'] / max(1, s3['window_requests']):.2f} new connections "
        "per request",
        f"  transformation  {r['transformation_cpu_ms_per_fragment']:.2f} ms CPU/fragment",
    ]
