"""Derived figures (bound, efficiency, floor ratio, targets), the text summary and the plot."""

from __future__ import annotations

from typing import Any

MIB = 1 << 20


def bound(raw: dict[str, Any], files: int) -> dict[str, float] | None:
    """The fragments/s the endpoints allow for a fragment of ``files`` files (1 output).

    A fragment needs ``files`` GETs and ``files`` PUTs from S3, and from the broker one
    delivery+ack and two confirmed publishes (descriptor, lineage). S3 and the broker work
    in parallel, each serially: bound = 1 / max(S3 seconds, broker seconds) per fragment,
    with the rates measured by bench.raw in the same run with the sidecar's clients.
    """
    try:
        s3 = files / raw["s3"]["get_per_s"] + files / raw["s3"]["put_per_s"]
        amqp = 1 / raw["amqp_consume"]["per_s"] + 2 / raw["amqp_publish"]["per_s"]
    except (KeyError, TypeError, ZeroDivisionError):
        return None
    return {"fragments_per_s": 1 / max(s3, amqp), "s3_fragments_per_s": 1 / s3,
            "broker_fragments_per_s": 1 / amqp}


def floor_ms(raw: dict[str, Any], files: int) -> float | None:
    """CPU of the bare storage client for the same GETs and PUTs (the floor)."""
    try:
        return files * (raw["s3"]["floor_get_cpu_ms"] + raw["s3"]["floor_put_cpu_ms"])
    except (KeyError, TypeError):
        return None


def derive(results: dict[str, Any]) -> None:
    """Add bound, efficiency and floor ratio to every small-file scenario result."""
    raw = results.get("raw", {})
    for r in _all_scenarios(results):
        if r.get("error") or r.get("file_bytes", 0) >= MIB:
            continue
        b = bound(raw, r["files_per_fragment"])
        f = floor_ms(raw, r["files_per_fragment"])
        if b:
            r["bound"] = b
            r["efficiency"] = r["fragments_per_s"] / b["fragments_per_s"]
        if f:
            r["floor_cpu_ms"] = f
            r["cpu_to_floor"] = r["cpu_ms_per_fragment"] / f


def _all_scenarios(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = list(results.get("scenarios", {}).values())
    out += results.get("sweep", []) + results.get("replicas", [])
    return [r for r in out if isinstance(r, dict)]


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and whether it is met."""
    sc = results.get("scenarios", {})
    small = sc.get("small-1x1", {})
    large = sc.get("large-512MiB", {})
    rows: list[dict[str, Any]] = []

    def row(name: str, value: Any, target: str, ok: bool | None, unit: str = "") -> None:
        rows.append({"target": name, "value": value, "unit": unit, "goal": target,
                     "met": ok})

    if small and not small.get("error"):
        cpu = small["cpu_ms_per_fragment"]
        row("sidecar CPU per 1 KiB 1→1 fragment", round(cpu, 2), "≤ 2.5", cpu <= 2.5, "ms")
        if "cpu_to_floor" in small:
            ratio = small["cpu_to_floor"]
            row("sidecar CPU ÷ storage-client floor", round(ratio, 2), "≤ 1.25", ratio <= 1.25)
        if "efficiency" in small:
            eff = small["efficiency"]
            row("throughput ÷ endpoint bound (1 KiB 1→1)", round(eff, 2), "≥ 0.80",
                eff >= 0.8)
        inflight = small.get("max_publishes_in_flight")
        if inflight is not None:
            row("publishes in flight at once (windowed confirms)", inflight, "> 1",
                inflight > 1)
        start = max(small.get("start_to_consuming_s") or [float("nan")])
        row("process start → consuming", round(start, 3), "< 1", start < 1, "s")
        idle = (small.get("idle") or {}).get("cpu_ms_per_s")
        if idle is not None:
            row("idle CPU", round(idle, 2), "≈ 0 (< 1)", idle < 1, "ms/s")
    if large and not large.get("error") and small and not small.get("error"):
        delta = large["peak_rss_mib"] - small["peak_rss_mib"]
        row("peak RSS, 512 MiB file minus 1 KiB files", round(delta, 1), "≤ 16", delta <= 16,
            "MiB")
        row("peak RSS, 512 MiB file", round(large["peak_rss_mib"], 1), "< 80",
            large["peak_rss_mib"] < 80, "MiB")
        plain = large.get("plain_copy")
        tr = large.get("transfers", {})
        if plain and "download" in tr and "upload" in tr:
            mib = large["file_bytes"] / MIB
            get_ratio = (mib / tr["download"]["mean_s"]) / plain["get_mib_s"]
            put_ratio = (mib / tr["upload"]["mean_s"]) / plain["put_mib_s"]
            row("download rate ÷ plain client GET", round(get_ratio, 2), "≥ 0.80",
                get_ratio >= 0.8)
            row("upload rate ÷ plain client PUT", round(put_ratio, 2), "≥ 0.80",
                put_ratio >= 0.8)
    return rows


# --- text ---------------------------------------------------------------------------------


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def summary(results: dict[str, Any]) -> str:
    lines = []
    meta = results.get("meta", {})
    lines.append(f"iterum-sidecar benchmark, {meta.get('mode')} run, {meta.get('started')}, "
                 f"commit {meta.get('commit', '?')[:10]}, S3 server {meta.get('s3_server')}, "
                 f"load average before {meta.get('load_before')}")
    raw = results.get("raw", {})
    if raw:
        s3, con, pub = raw.get("s3", {}), raw.get("amqp_consume", {}), raw.get("amqp_publish",
                                                                              {})
        lines.append("")
        lines.append("raw limits (same endpoints, the sidecar's clients, nothing else):")
        lines.append(f"  S3 1 KiB GET {_fmt(s3.get('get_per_s'), 0)}/s, PUT "
                     f"{_fmt(s3.get('put_per_s'), 0)}/s ({s3.get('threads')} threads); "
                     f"client CPU floor GET {_fmt(s3.get('floor_get_cpu_ms'), 2)} ms, PUT "
                     f"{_fmt(s3.get('floor_put_cpu_ms'), 2)} ms, fget_object "
                     f"{_fmt(s3.get('floor_fget_cpu_ms'), 2)} ms; "
                     f"{s3.get('connections_opened', '?')} connection(s) opened")
        if "floor_sidecar_get_cpu_ms" in s3:  # the floor above is bare minio's
            lines.append(f"  the sidecar's own S3 path ({s3.get('floor_sidecar_client')}): "
                         f"GET {_fmt(s3['floor_sidecar_get_cpu_ms'], 2)} ms, PUT "
                         f"{_fmt(s3.get('floor_sidecar_put_cpu_ms'), 2)} ms client CPU")
        lines.append(f"  AMQP consume+ack {_fmt(con.get('per_s'), 0)}/s "
                     f"({_fmt(con.get('cpu_ms'), 3)} ms CPU each), confirmed publish "
                     f"{_fmt(pub.get('per_s'), 0)}/s ({_fmt(pub.get('cpu_ms'), 3)} ms CPU each)")
    lines.append("")
    header = (f"{'scenario':<22}{'frag/s':>8}{'bound':>8}{'eff':>6}{'p50':>8}{'p95':>8}"
              f"{'p99':>8}{'CPU ms':>8}{'/floor':>7}{'S3 req':>7}{'RSS MiB':>8}")
    lines.append(header)
    lines.append(f"{'':<22}{'':>8}{'':>8}{'':>6}{'(ms, received → acked)':>24}"
                 f"{'/frag':>8}{'':>7}{'/frag':>7}{'peak':>8}")
    for r in _ordered(results):
        if r.get("error"):
            lines.append(f"{r.get('label', '?'):<22} ERROR {r['error'][:70]}")
            continue
        lat = r.get("latency_ms") or {}
        lines.append(
            f"{r['label']:<22}{_fmt(r['fragments_per_s'], 1):>8}"
            f"{_fmt((r.get('bound') or {}).get('fragments_per_s'), 0):>8}"
            f"{_fmt(r.get('efficiency'), 2):>6}{_fmt(lat.get('p50'), 0):>8}"
            f"{_fmt(lat.get('p95'), 0):>8}{_fmt(lat.get('p99'), 0):>8}"
            f"{_fmt(r['cpu_ms_per_fragment'], 2):>8}{_fmt(r.get('cpu_to_floor'), 2):>7}"
            f"{_fmt(r['s3_requests_per_fragment'], 2):>7}{_fmt(r['peak_rss_mib'], 1):>8}")
    small = results.get("scenarios", {}).get("small-1x1")
    if small and not small.get("error"):
        lines.append("")
        lines.extend(cpu_breakdown(small))
        if small.get("repeats") and len(small["repeats"]) > 1:
            lines.append("  runs: " + "; ".join(
                f"{_fmt(r.get('fragments_per_s'))}/s {_fmt(r.get('cpu_ms_per_fragment'), 2)} ms"
                for r in small["repeats"]))
    large = results.get("scenarios", {}).get("large-512MiB")
    if large and not large.get("error"):
        tr, plain = large.get("transfers", {}), large.get("plain_copy") or {}
        mib = large["file_bytes"] / MIB
        if "download" in tr and "upload" in tr:
            lines.append("")
            lines.append(f"512 MiB: sidecar GET {mib / tr['download']['mean_s']:.0f} MiB/s, "
                         f"PUT {mib / tr['upload']['mean_s']:.0f} MiB/s; plain client GET "
                         f"{_fmt(plain.get('get_mib_s'), 0)} MiB/s, PUT "
                         f"{_fmt(plain.get('put_mib_s'), 0)} MiB/s")
    rows = results.get("targets", [])
    if rows:
        lines.append("")
        lines.append("targets:")
        for t in rows:
            mark = {True: "met", False: "NOT met", None: "?"}[t["met"]]
            lines.append(f"  {t['target']:<50} {t['value']!s:>8} {t['unit']:<5} "
                         f"(goal {t['goal']}) {mark}")
    return "\n".join(lines)


def cpu_breakdown(r: dict[str, Any]) -> list[str]:
    """Where the CPU of one fragment goes, by process and by sidecar thread."""
    by = r.get("cpu_ms_per_fragment_by_process", {})

    def us(prefix: str) -> str:
        user, system = by.get(f"{prefix}_user", 0.0), by.get(f"{prefix}_system", 0.0)
        return f"{user + system:.2f} ms (user {user:.2f}, sys {system:.2f})"

    light = r.get("latency_light_ms") or {}
    lines = [f"{r.get('scenario', {}).get('name', '?')}, CPU per fragment: sidecar "
             f"{us('sidecar')} = loop thread {us('sidecar_loop')} + storage threads "
             f"{us('sidecar_workers')}; "
             f"{_fmt(r.get('context_switches_per_fragment'), 1)} context switches",
             f"  other processes: S3 server {_fmt(by.get('s3_server'), 2)} ms, RabbitMQ "
             f"{_fmt(by.get('rabbitmq'), 2)} ms, transformation "
             f"{_fmt(by.get('transformation'), 2)} ms"]
    idle = r.get("idle") or {}
    if idle:
        lines.append(f"  idle ({_fmt(idle.get('seconds'), 0)} s, no input, "
                     f"{idle.get('manager_polls')} manager poll(s)): "
                     f"{_fmt(idle.get('cpu_ms_per_s'), 2)} ms CPU/s, "
                     f"{_fmt(idle.get('wakeups_per_s'), 1)} context switches/s")
    if light:
        lines.append(f"  latency one fragment at a time: p50 {_fmt(light.get('p50'))} ms, "
                     f"p95 {_fmt(light.get('p95'))} ms, p99 {_fmt(light.get('p99'))} ms")
    return lines


def _ordered(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, r in results.get("scenarios", {}).items():
        out.append({**r, "label": name})
    for r in results.get("sweep", []):
        sc = r.get("scenario", {})
        out.append({**r, "label": f"sweep p{sc.get('prefetch')} w{sc.get('workers')}"})
    for r in results.get("replicas", []):
        out.append({**r, "label": f"replicas {r.get('scenario', {}).get('replicas')}"})
    return out


# --- the plot -----------------------------------------------------------------------------


def plot(results: dict[str, Any], path: str) -> bool:
    """Throughput (and CPU per fragment) against prefetch, one line per worker-pool size;
    throughput against replicas. Returns False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sweep = [r for r in results.get("sweep", []) if not r.get("error")]
    replicas = [r for r in results.get("replicas", []) if not r.get("error")]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    by_workers: dict[int, list[tuple[int, float, float]]] = {}
    for r in sweep:
        sc = r["scenario"]
        by_workers.setdefault(sc["workers"], []).append(
            (sc["prefetch"], r["fragments_per_s"], r["cpu_ms_per_fragment"]))
    for workers, pts in sorted(by_workers.items()):
        pts.sort()
        xs = [p[0] for p in pts]
        axes[0].plot(xs, [p[1] for p in pts], marker="o", label=f"{workers} storage workers")
        axes[1].plot(xs, [p[2] for p in pts], marker="o", label=f"{workers} storage workers")
    small = results.get("scenarios", {}).get("small-1x1", {})
    b = (small.get("bound") or {}).get("fragments_per_s")
    if b:
        axes[0].axhline(b, color="grey", linestyle="--", label="endpoint bound")
        axes[0].axhline(0.8 * b, color="grey", linestyle=":", label="80% of the bound")
    if small.get("floor_cpu_ms"):
        axes[1].axhline(small["floor_cpu_ms"], color="grey", linestyle="--",
                        label="storage-client floor")
        axes[1].axhline(2.5, color="red", linestyle=":", label="target 2.5 ms")
    prefetches = sorted({p[0] for pts in by_workers.values() for p in pts})
    for ax, ylabel in ((axes[0], "fragments/s"), (axes[1], "sidecar CPU ms per fragment")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(prefetches, [str(p) for p in prefetches])
        ax.minorticks_off()
        ax.set_xlabel("prefetch (MQ_PREFETCH_COUNT)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_ylim(bottom=0)
    axes[0].set_title("1 KiB 1→1 throughput")
    axes[1].set_title("sidecar CPU (user+sys) per fragment")
    if replicas:
        reps = sorted((r["scenario"]["replicas"], r["fragments_per_s"]) for r in replicas)
        axes[2].bar([str(n) for n, _ in reps], [v for _, v in reps], color="tab:green")
        if b:
            axes[2].axhline(b, color="grey", linestyle="--", label="endpoint bound")
            axes[2].legend(fontsize=8)
        axes[2].set_xlabel("sidecar replicas on one queue")
        axes[2].set_ylabel("fragments/s (all replicas)")
        axes[2].set_title("scaling with replicas")
        axes[2].grid(True, axis="y", alpha=0.3)
    else:
        axes[2].axis("off")
    meta = results.get("meta", {})
    fig.suptitle(f"iterum-sidecar bench ({meta.get('mode')}, {meta.get('started')}, "
                 f"S3: moto behind {meta.get('s3_server')}, {meta.get('cpus')} CPUs)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
