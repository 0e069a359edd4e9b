"""The benchmark's own logic (bench/): what it reads from a real journal, the S3 request
counter, the profile summary, and the derived figures and fields of the result JSON.

Fast and offline: no broker, no S3 server, no timing asserted (benchmarks measure; these
only check that the measuring code reads and reports what it should).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from unit_driver import Driver, fid, of

from bench import report
from bench.profile import render, summarize
from bench.s3server import BENCH_AGENT, Counting
from bench.scenario import _merge_transfers, _percentiles, _read_journal, reap
from bench.whole import (
    _window,
    add_arguments,
    choice_list,
    floor_of,
    load_label,
    ratios,
    usage_figures,
)
from bench.whole_report import summary
from sidecar.core import effects as fx
from sidecar.core import events as ev
from sidecar.shell.journal import Recorder


def journaled_fragments(volume: Path, count: int) -> Driver:
    """``count`` 1→1 fragments through the real core, recorded by the real Recorder where
    the sidecar keeps its journal; fragment i is delivered at t=10+i and acked 0.5 s later."""
    drv = Driver()
    recorder = Recorder(str(volume / ".sidecar" / "journal"), drv.core, max_bytes=1 << 30,
                        keep=4)
    drv.observers.append(recorder)
    drv.start()
    drv.connect()
    for i in range(count):
        f = fid(chr(ord("a") + i))
        drv.clock = 10.0 + i
        drv.deliver_fragment(i + 1, f)
        drv.download(f)
        out = drv.output([f], [f"o{i}.jpg"])
        drv.done(f)
        drv.clock = 10.0 + i + 0.4
        published = drv.upload(out)
        for p in of(published, fx.Publish):
            drv.clock = 10.0 + i + 0.45
            lineage = of(drv.confirm(p), fx.Publish)
            drv.clock = 10.0 + i + 0.499
            for q in lineage:
                drv.confirm(q)
    recorder.close()
    return drv


def test_journal_gives_latency_received_to_acked_per_fragment(tmp_path: Path) -> None:
    journaled_fragments(tmp_path, 3)
    jt = _read_journal(tmp_path)
    lat = sorted(jt.latencies(None, None))
    assert len(lat) == 3
    assert lat == pytest.approx([0.5] * 3, abs=0.01)
    assert jt.latencies(11.0, None) and len(jt.latencies(11.0, None)) == 2
    assert jt.first_delivery(10.5) == pytest.approx(11.001)
    assert jt.last_ack(0, None) == pytest.approx(12.5)


def test_journal_gives_transfer_spans_and_publishes_in_flight(tmp_path: Path) -> None:
    journaled_fragments(tmp_path, 2)
    jt = _read_journal(tmp_path)
    transfers = _merge_transfers([jt], 0.0, None)
    assert transfers["download"]["n"] == 2 and transfers["upload"]["n"] == 2
    assert transfers["upload"]["mean_s"] == pytest.approx(0.4 - 0.002, abs=0.01)
    assert jt.max_in_flight == 1  # confirmed one at a time in this run
    assert not jt.in_flight


def test_no_journal_means_no_latencies(tmp_path: Path) -> None:
    assert _read_journal(tmp_path).latencies(None, None) == []


def test_percentiles() -> None:
    p = _percentiles([i / 1000 for i in range(1, 101)])
    assert (p["p50"], p["p95"], p["p99"], p["max"], p["n"]) == pytest.approx(
        (50, 95, 99, 100, 100))
    assert _percentiles([]) is None


def _call(app: Counting, method: str, path: str, agent: str = "MinIO (Linux; x86_64)",
          query: str = "", port: str = "40000") -> bytes:
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
               "HTTP_USER_AGENT": agent, "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": port,
               "wsgi.input": io.BytesIO()}
    return b"".join(app(environ, lambda status, headers: None))


def test_s3_counter_counts_operations_and_connections_but_not_the_bench() -> None:
    app = Counting(lambda environ, start_response: [b"ok"])
    _call(app, "GET", "/in/iterum_data/a.bin")
    _call(app, "PUT", "/out/iterum_data/f/a.bin", port="40001")
    _call(app, "PUT", "/out/big", query="partNumber=1&uploadId=x", port="40001")
    _call(app, "HEAD", "/out")
    _call(app, "PUT", "/in/setup.bin", agent=f"MinIO {BENCH_AGENT}/1")
    stats = json.loads(_call(app, "GET", "/_bench/stats"))
    assert stats["ops"] == {"GetObject": 1, "PutObject": 1, "UploadPart": 1, "HeadBucket": 1}
    assert stats["requests"] == 4 and stats["connections"] == 2
    assert json.loads(_call(app, "POST", "/_bench/reset"))["requests"] == 0


def test_profile_summary_charges_samples_to_their_owner(tmp_path: Path) -> None:
    stacks = tmp_path / "stacks.txt"
    stacks.write_text(
        "thread (1): MainThread;run (sidecar/shell/loop.py);handle (sidecar/core/__init__.py);"
        "encode (json/encoder.py) 30\n"
        "thread (2): storage_0;_get (sidecar/shell/io/storage.py);urlopen (urllib3/poolmanager.py)"
        ";readinto (socket.py) 60\n"
        "thread (3): storage_1;_put (sidecar/shell/io/storage.py) 10\n")
    s = summarize(str(stacks))
    assert s["samples"] == 100
    assert dict(s["by_owner"]) == {"urllib3": 60.0, "sidecar core (decisions)": 30.0,
                                   "sidecar storage adapter": 10.0}
    assert dict(s["by_thread"])["thread (2): storage_N"] == 60.0
    assert dict(s["self"])["readinto (socket.py)"] == 60.0
    assert dict(s["inclusive"])["run (sidecar/shell/loop.py)"] == 30.0
    assert "60.0%  urllib3" in render(s)


def _scenario(name: str, **kw: object) -> dict:
    base = {"scenario": {"name": name, "prefetch": 16, "workers": 8, "replicas": 1},
            "fragments": 1000, "files_per_fragment": 1, "file_bytes": 1024,
            "fragments_per_s": 300.0, "cpu_ms_per_fragment": 2.0,
            "cpu_ms_per_fragment_by_process": {"sidecar": 2.0, "sidecar_user": 1.5,
                                               "sidecar_system": 0.5},
            "latency_ms": {"p50": 40.0, "p95": 60.0, "p99": 80.0},
            "s3_requests_per_fragment": 2.0, "peak_rss_mib": 45.0,
            "start_to_consuming_s": [0.3], "idle": {"cpu_ms_per_s": 0.0},
            "max_publishes_in_flight": 16, "exit_codes": [0]}
    base.update(kw)
    return base


RAW = {"s3": {"get_per_s": 1000.0, "put_per_s": 1000.0, "floor_get_cpu_ms": 0.6,
              "floor_put_cpu_ms": 0.4},
       "amqp_consume": {"per_s": 20000.0}, "amqp_publish": {"per_s": 40000.0}}


def test_bound_efficiency_floor_and_targets() -> None:
    large = _scenario("large-512MiB", file_bytes=512 << 20, fragments=1,
                      fragments_per_s=0.1, peak_rss_mib=77.0,
                      transfers={"download": {"mean_s": 1.0}, "upload": {"mean_s": 10.0}},
                      plain_copy={"get_mib_s": 512.0, "put_mib_s": 80.0})
    results = {"raw": RAW, "scenarios": {"small-1x1": _scenario("small-1x1"),
                                         "small-1x10": _scenario("small-1x10",
                                                                 files_per_fragment=10),
                                         "large-512MiB": large},
               "sweep": [_scenario("sweep-p1-w2")], "replicas": []}
    report.derive(results)
    small = results["scenarios"]["small-1x1"]
    assert small["bound"]["fragments_per_s"] == pytest.approx(500.0)  # S3: 1/(1/1000·2)
    assert small["efficiency"] == pytest.approx(0.6)
    assert small["cpu_to_floor"] == pytest.approx(2.0)
    assert results["scenarios"]["small-1x10"]["bound"]["fragments_per_s"] == pytest.approx(50)
    assert "bound" not in large  # a transfer, compared with a plain copy instead
    met = {t["target"]: t["met"] for t in report.targets(results)}
    assert met["sidecar CPU per 1 KiB 1→1 fragment"] is True
    assert met["sidecar CPU ÷ storage-client floor"] is False
    assert met["throughput ÷ endpoint bound (1 KiB 1→1)"] is False
    assert met["publishes in flight at once (windowed confirms)"] is True
    assert met["peak RSS, 512 MiB file minus 1 KiB files"] is False  # 77 - 45 > 16
    assert met["upload rate ÷ plain client PUT"] is False  # 51 of 80 MiB/s
    assert met["download rate ÷ plain client GET"] is True
    results["targets"] = report.targets(results)
    text = report.summary(results)
    assert "small-1x1" in text and "targets:" in text
    assert "own S3 path" not in text  # a run from before it was measured


def test_summary_shows_the_sidecars_own_s3_path_beside_the_minio_floor() -> None:
    raw = {**RAW, "s3": {**RAW["s3"], "floor_sidecar_client": "direct",
                         "floor_sidecar_get_cpu_ms": 0.45, "floor_sidecar_put_cpu_ms": 0.3}}
    results = {"raw": raw, "scenarios": {"small-1x1": _scenario("small-1x1")},
               "sweep": [], "replicas": []}
    report.derive(results)
    assert results["scenarios"]["small-1x1"]["cpu_to_floor"] == pytest.approx(2.0)  # minio's
    text = report.summary(results)
    assert "the sidecar's own S3 path (direct): GET 0.45 ms, PUT 0.30 ms" in text


def test_result_json_has_the_reported_fields() -> None:
    """What docs/performance.md and the plot read from every scenario result."""
    results = {"raw": RAW, "scenarios": {"small-1x1": _scenario("small-1x1")},
               "sweep": [], "replicas": []}
    report.derive(results)
    r = json.loads(json.dumps(results))["scenarios"]["small-1x1"]
    for key in ("fragments_per_s", "latency_ms", "cpu_ms_per_fragment", "cpu_to_floor",
                "s3_requests_per_fragment", "peak_rss_mib", "bound", "efficiency",
                "start_to_consuming_s", "idle", "max_publishes_in_flight"):
        assert key in r, key
    assert set(r["latency_ms"]) >= {"p50", "p95", "p99"}


def test_scenario_goes_into_the_result_json() -> None:
    """run() stores asdict(Scenario) in the result: every field must be JSON."""
    from dataclasses import asdict

    from bench.scenario import Scenario

    sc = Scenario("small-1x1", fragments=10, transformation="upper_copy.py")
    assert json.loads(json.dumps(asdict(sc)))["transformation"] == "upper_copy.py"
    assert json.dumps(asdict(Scenario("default", fragments=1)))


def test_plot_is_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    results = {"meta": {"mode": "quick"}, "raw": RAW,
               "scenarios": {"small-1x1": _scenario("small-1x1")},
               "sweep": [_scenario("a", scenario={"prefetch": p, "workers": w})
                         for p in (1, 16) for w in (2, 8)],
               "replicas": [_scenario("r", scenario={"replicas": n}) for n in (1, 2)]}
    report.derive(results)
    out = tmp_path / "plot.png"
    assert report.plot(results, str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_events_used_by_the_bench_exist() -> None:
    """The journal fields the bench reads (a rename in sidecar/ must update bench/)."""
    assert {"tag"} <= set(ev.Delivered.__dataclass_fields__)
    assert {"input_id", "index"} <= set(ev.FileDownloaded.__dataclass_fields__)
    assert {"output_id", "index"} <= set(ev.FileUploaded.__dataclass_fields__)
    assert {"publish_id"} <= set(ev.PublishConfirmed.__dataclass_fields__)
    assert {"publish_id"} <= set(fx.Publish.__dataclass_fields__)
    assert {"tag"} <= set(fx.Ack.__dataclass_fields__)


# --- python -m bench whole (bench/whole.py) ----------------------------------------------


def test_whole_process_figures_from_rusage() -> None:
    """CPU is user+sys over the fragments; ru_maxrss is in KiB on Linux."""
    usage = SimpleNamespace(ru_utime=6.0, ru_stime=2.0, ru_maxrss=48 * 1024)
    out = usage_figures(usage, 1000)
    assert out == {"cpu_s": 8.0, "user_s": 6.0, "sys_s": 2.0, "cpu_ms_per_fragment": 8.0,
                   "peak_rss_mib": 48.0}


def test_reap_reads_the_childs_whole_life_and_popen_keeps_its_exit_code() -> None:
    """os.wait4 gives the CPU a child spent from fork to exit (Popen.wait discards it)."""
    proc = subprocess.Popen([sys.executable, "-c",
                             "import sys; sum(range(3_000_000)); sys.exit(3)"])
    usage = reap(proc, 30)
    assert usage is not None and usage.ru_utime + usage.ru_stime > 0
    assert usage.ru_maxrss > 1024  # KiB: a Python process is over 1 MiB
    assert proc.returncode == 3 and proc.poll() == 3 and proc.wait(1) == 3
    assert reap(proc, 1) is None  # reaped already: nothing more to read


def test_window_figures_split_by_thread() -> None:
    before = {"cpu": 1.0, "sys": 0.2, "loop": 0.6, "workers": 0.4, "loop_switches": 100,
              "workers_switches": 50}
    after = {"cpu": 4.0, "sys": 1.2, "loop": 2.1, "workers": 1.8, "loop_switches": 5100,
             "workers_switches": 12050}
    out = _window(before, after, 1000, 5.0)
    assert out["cpu_ms_per_fragment"] == pytest.approx(3.0)
    assert out["sys_ms_per_fragment"] == pytest.approx(1.0)
    assert out["loop_switches_per_fragment"] == pytest.approx(5.0)
    assert out["workers_switches_per_fragment"] == pytest.approx(12.0)
    assert out["loop_ms_per_fragment"] == pytest.approx(1.5)
    assert out["workers_ms_per_fragment"] == pytest.approx(1.4)
    assert out["fragments_per_s"] == pytest.approx(200.0)


def test_load_label_is_quiet_only_when_every_reading_is_at_most_half() -> None:
    assert load_label([0.2, 0.5]) == "quiet (load 0.50)"
    assert load_label([0.2, 0.51]) == "loaded (load 0.51)"
    assert load_label([2.07, 1.5]) == "loaded (load 2.07)"


def test_floor_and_ratios() -> None:
    floor = floor_of({"bare minio": {"get_cpu_ms": 0.75, "put_cpu_ms": 0.5,
                                     "get_sys_cpu_ms": 0.1, "put_sys_cpu_ms": 0.1}})
    assert floor == {"get_cpu_ms": 0.75, "put_cpu_ms": 0.5, "cpu_ms": 1.25}
    run = {"whole": {"cpu_ms_per_fragment": 2.5}, "window": {"cpu_ms_per_fragment": 1.875}}
    assert ratios(run, floor["cpu_ms"]) == {"whole_to_floor": 2.0, "window_to_floor": 1.5}
    assert ratios(run, None) == {}
    assert ratios({**run, "error": "boom"}, 1.25) == {}


def whole_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser


def test_whole_arguments() -> None:
    args = whole_parser().parse_args([])
    assert (args.fragments, args.transformation, args.s3) == (1000, ["pyterum"],
                                                              ["keepalive", "close"])
    args = whole_parser().parse_args(["--fragments", "100", "--transformation", "link,pyterum",
                                      "--s3", "close"])
    assert (args.fragments, args.transformation, args.s3) == (100, ["link", "pyterum"],
                                                              ["close"])
    assert choice_list(("a", "b"))(" b, a ,b") == ["b", "a"]
    args = whole_parser().parse_args(["--env", "SIDECAR_STORAGE_WORKERS=4", "--env", "A=b=c",
                                      "--env", "EMPTY="])
    assert dict(args.env) == {"SIDECAR_STORAGE_WORKERS": "4", "A": "b=c", "EMPTY": ""}
    for bad in (["--s3", "http2"], ["--transformation", ""], ["--transformation", "copy"],
                ["--env", "SIDECAR_STORAGE_WORKERS"], ["--env", "=4"]):
        with pytest.raises(SystemExit):
            whole_parser().parse_args(bad)


def test_bench_cli_knows_the_whole_command() -> None:
    from bench.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["whole", "--help"])
    assert exit_.value.code == 0


def test_whole_summary_labels_load_and_goal() -> None:
    loads = {"load_start": [0.3, 0.2, 0.1], "load_end": [0.9, 0.4, 0.2]}
    run = {"transformation": "pyterum", "fragments": 100, "exit_code": 0,
           "label": load_label([0.3, 0.9]), **loads,
           "whole": usage_figures(SimpleNamespace(ru_utime=0.6, ru_stime=0.2,
                                                  ru_maxrss=40 * 1024), 100),
           "window": _window({"cpu": 0, "loop": 0, "workers": 0},
                             {"cpu": 0.3, "loop": 0.1, "workers": 0.15}, 100, 1.0),
           "startup": {"to_log_s": 0.4, "to_consuming_s": 0.45, "cpu_s": 0.38},
           "shutdown_s": 0.1, "transformation_cpu_ms_per_fragment": 0.7,
           "s3": {"window_requests": 200, "window_connections": 200,
                  "window_ops": {"GetObject": 100, "PutObject": 100}, "whole_requests": 203}}
    run.update(ratios(run, 2.0))
    text = summary({"fragments": 100, "styles": [{
        "style": "close", "server": "werkzeug", "runs": [run, {
            "transformation": "link", "error": "RuntimeError: boom", **loads}],
        "floor": {"get_cpu_ms": 1.0, "put_cpu_ms": 1.0, "cpu_ms": 2.0,
                  "load_start": [0.3, 0, 0], "load_end": [0.4, 0, 0],
                  "label": load_label([0.3, 0.4])}}]})
    assert "loaded (load 0.90), load 0.30 → 0.90" in text
    assert "2.00 ms CPU per GET+PUT (GET 1.00, PUT 1.00), quiet (load 0.40)" in text
    assert "8.00 ms CPU/fragment" in text and "÷ floor 4.00 (goal ≤ 1.5: not met)" in text
    assert "3.00 ms CPU/fragment (loop 1.00, other threads 1.50)" in text
    assert "1.00 new connections per request" in text and "GetObject 1.00" in text
    assert "peak RSS        40.0 MiB" in text and "transformation link: FAILED" in text


def test_callgrind_total_is_the_last_collected_line_and_its_absence_is_an_error() -> None:
    from bench.instructions import total

    log = "started\n==12== Events    : Ir\n==12== Collected : 123456789\n"
    assert total("==11== Collected : 5\n" + log) == 123456789
    with pytest.raises(RuntimeError, match="no callgrind total"):
        total("the sidecar exited\n")


def test_callgrind_points_give_per_fragment_and_fixed_cost() -> None:
    from bench.whole_callgrind import per_item, summary

    each, fixed = per_item((20, 2_000_000 + 20 * 7000), (120, 2_000_000 + 120 * 7000))
    assert (each, fixed) == (7000, 2_000_000)
    with pytest.raises(ValueError):
        per_item((120, 1), (20, 2))
    text = summary({"fragments": 1000, "styles": [{
        "style": "keepalive", "floor": {"per_get_put": 3500.0},
        "runs": [{"transformation": "pyterum", "whole_per_fragment": 9000.0,
                  "to_floor": 9000 / 3500, "per_fragment": 7000.0, "fixed": 2e9,
                  "loop_per_fragment": 4000.0, "others_per_fragment": 3000.0}]}]})
    assert "÷ floor 2.57" in text and "7 k per fragment" in text
    assert "loop thread          4 k" in text and "other threads        3 k" in text


def test_whole_callgrind_arguments() -> None:
    from bench.whole import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--callgrind", "--callgrind-sizes", "10,30"])
    assert args.callgrind and args.callgrind_sizes == (10, 30)
    with pytest.raises(SystemExit):
        parser.parse_args(["--callgrind-sizes", "30,10"])


def test_perf_trace_summary_counts_calls_by_thread_the_loop_apart() -> None:
    from bench.procstat import trace_summary
    text = """
 Summary of events:

 python (5232), 51386 events, 19.8%

   syscall            calls  errors  total       min       avg       max       stddev
                                     (msec)    (msec)    (msec)    (msec)        (%)
   --------------- --------  ------ -------- --------- --------- ---------     ------
   futex              15411    547  3378.005     0.011     0.219     7.548      1.75%
   rmdir               1000      0   502.852     0.084     0.503     5.883      3.67%

 python (5233), 25772 events, 9.9%

   syscall            calls  errors  total       min       avg       max       stddev
   --------------- --------  ------ -------- --------- --------- ---------     ------
   futex               9233    255  4654.557     0.000     0.504    22.472      3.34%
   poll                 775      0   715.398     0.012     0.923    15.231      8.41%

 python (5234), 25839 events, 9.9%

   futex                 10      0     1.000     0.000     0.100     0.200      3.31%
"""
    assert trace_summary(text, 5232) == {
        ("loop", "futex"): 15411, ("loop", "rmdir"): 1000,
        ("others", "futex"): 9243, ("others", "poll"): 775}


# --- python -m bench whole --rounds N --compare DIR (bench/compare.py, bench/trees.py) ----


def _timed_run(tree: str, cpu_s: float, floor_ms: float, rss_mib: float = 40.0,
               n: int = 100) -> dict:
    """One run as bench/whole.measure returns it: ``cpu_s`` over the whole process (a
    quarter of it sys), half of it in the window, startup 0.2 s."""
    run = {"tree": tree, "transformation": "pyterum", "fragments": n,
           "whole": usage_figures(SimpleNamespace(ru_utime=0.75 * cpu_s, ru_stime=0.25 * cpu_s,
                                                  ru_maxrss=rss_mib * 1024), n),
           "window": _window({"cpu": 0, "sys": 0, "loop": 0, "workers": 0},
                             {"cpu": cpu_s / 2, "sys": cpu_s / 8, "loop": cpu_s / 4,
                              "workers": cpu_s / 4}, n, 1.0),
           "startup": {"cpu_s": 0.2, "to_consuming_s": 0.3, "to_log_s": 0.25}}
    run.update(ratios(run, floor_ms))
    return run


def _rounds_results(a_cpu: list[float], b_cpu: list[float], floors: list[float]) -> dict:
    from bench.compare import order

    rounds = []
    for i, (a, b, fl) in enumerate(zip(a_cpu, b_cpu, floors, strict=True)):
        runs = {"A": _timed_run("A", a, fl), "B": _timed_run("B", b, fl, rss_mib=41.0)}
        names = order(["A", "B"], i)
        rounds.append({"round": i + 1, "order": names, "floor": {"cpu_ms": fl},
                       "runs": [runs[t] for t in names], "load_start": [1.0, 0, 0],
                       "load_end": [1.5, 0, 0], "label": load_label([1.0, 1.5])})
    trees = [{"name": t, "root": f"/w/{t}", "commit": c * 40, "uncommitted": t == "A",
              "sidecar_modified": False} for t, c in (("A", "a"), ("B", "b"))]
    return {"fragments": 100, "rounds": len(rounds), "transformations": ["pyterum"],
            "trees": trees, "styles": [{"style": "keepalive", "server": "granian",
                                        "rounds": rounds}]}


def test_rounds_alternate_the_trees_abba() -> None:
    from bench.compare import order

    assert [order(["A", "B"], i) for i in range(4)] == [["A", "B"], ["B", "A"]] * 2
    assert [order(["A"], i) for i in range(3)] == [["A"]] * 3


def test_spread_and_pairing_over_rounds() -> None:
    import statistics

    from bench.compare import paired, spread, verdict

    a, b = [2.0, 4.0, 3.0, None], [1.0, 2.0, 4.0, 3.0]
    assert spread(a) == {"median": 3.0, "min": 2.0, "max": 4.0, "n": 3}
    assert spread([None]) is None
    p = paired(a, b)
    assert p is not None
    # the rounds where both were measured: (2, 1), (4, 2), (3, 4)
    assert p["ratios"] == [2.0, 2.0, 0.75]
    assert p["ratio_of_medians"] == statistics.median([2, 4, 3]) / statistics.median([1, 2, 4])
    assert p["per_round"] == {"median": 2.0, "min": 0.75, "max": 2.0, "n": 3}
    assert p["verdict"] == ""  # one round has A below B, two above: no verdict
    assert verdict([1.1, 1.3]) == "A higher in all 2 rounds"
    assert verdict([0.9, 0.99, 0.5]) == "A lower in all 3 rounds"
    assert verdict([0.9]) == "" and verdict([0.9, 1.0]) == ""
    assert paired([1.0], [None]) is None


def test_rounds_statistics_and_report_compare_the_trees_round_by_round() -> None:
    from bench.compare import report, statistics_of

    a_cpu, b_cpu, floors = [0.30, 0.20, 0.25], [0.20, 0.25, 0.20], [1.0, 1.2, 0.8]
    results = _rounds_results(a_cpu, b_cpu, floors)
    stats = statistics_of(results)
    (block,) = stats
    assert block["floor"] == {"median": 1.0, "min": 0.8, "max": 1.2, "n": 3}
    whole = block["figures"]["whole CPU"]
    assert whole["A"] == pytest.approx({"median": 2.5, "min": 2.0, "max": 3.0, "n": 3})
    assert whole["B"]["median"] == pytest.approx(2.0)
    assert whole["A÷B"]["ratio_of_medians"] == pytest.approx(1.25)
    assert whole["A÷B"]["ratios"] == pytest.approx([1.5, 0.8, 1.25])
    assert whole["A÷B"]["verdict"] == ""
    # each round's floor divides that round's runs
    assert block["figures"]["÷ floor"]["A"] == pytest.approx(
        {"median": 3.0 / 1.0, "min": 2.0 / 1.2, "max": 2.5 / 0.8, "n": 3})
    rss = block["figures"]["peak RSS"]["A÷B"]
    assert rss["ratio_of_medians"] == pytest.approx(40 / 41)
    assert rss["verdict"] == "A lower in all 3 rounds"
    assert block["figures"]["loop thread"]["A"]["median"] == pytest.approx(2.5 / 4)
    text = report(results, stats)
    assert "round 2: loaded (load 1.50), load 1.00 → 1.50, floor 1.20 ms, order B A" in text
    assert "probability 25% per figure, on average 2.5 of the 10 figures of a block" in text
    assert "A: /w/A at aaaaaaaaaa + uncommitted changes (not to sidecar/, states/)" in text
    row = next(line for line in text.splitlines() if "whole CPU" in line)
    assert "2.50 (2.00 to 3.00)" in row and "1.25" in row and "rounds" not in row
    row = next(line for line in text.splitlines() if "peak RSS" in line)
    assert row.endswith("A lower in all 3 rounds")


def test_rounds_report_skips_a_failed_run_and_shows_it() -> None:
    from bench.compare import report, statistics_of

    results = _rounds_results([0.3, 0.2], [0.2, 0.1], [1.0, 1.0])
    failed = results["styles"][0]["rounds"][1]["runs"][0]  # round 2: B ran first
    failed.clear()
    failed.update(tree="B", transformation="pyterum", error="RuntimeError: boom")
    stats = statistics_of(results)
    whole = stats[0]["figures"]["whole CPU"]
    assert whole["B"]["n"] == 1 and whole["A"]["n"] == 2
    assert whole["A÷B"]["ratios"] == pytest.approx([1.5])  # round 1 only
    assert "FAILED: B pyterum" in report(results, stats)


def test_one_tree_rounds_report_the_range_against_the_median() -> None:
    from bench.compare import report, statistics_of

    results = _rounds_results([0.2, 0.3, 0.25], [0.2] * 3, [1.0] * 3)
    results["trees"] = results["trees"][:1]
    for rnd in results["styles"][0]["rounds"]:
        rnd["runs"] = [r for r in rnd["runs"] if r["tree"] == "A"]
    stats = statistics_of(results)
    assert "A÷B" not in stats[0]["figures"]["whole CPU"]
    row = next(line for line in report(results, stats).splitlines() if "whole CPU" in line)
    assert row.endswith("40%")  # (3.0 - 2.0) / 2.5


def test_a_tree_runs_its_own_sidecar_code(tmp_path: Path) -> None:
    from bench.scenario import base_env
    from bench.trees import THIS, Tree, check, other

    env = THIS.environ({"PYTHONPATH": "/elsewhere", "X": "1"})
    assert env["PYTHONPATH"].split(":")[0] == str(THIS.root) and env["X"] == "1"
    info = check(THIS, base_env())
    assert Path(info["sidecar_imported"]).is_relative_to(THIS.root)
    assert len(info["commit"]) == 40
    # a directory whose python imports another tree's sidecar is refused
    with pytest.raises(SystemExit, match="not the tree's sidecar"):
        check(Tree("B", tmp_path, sys.executable), base_env())
    with pytest.raises(SystemExit, match=r"own \.venv"):
        other(tmp_path)


def test_whole_rounds_arguments() -> None:
    args = whole_parser().parse_args([])
    assert (args.rounds, args.compare) == (1, None)
    args = whole_parser().parse_args(["--rounds", "4", "--compare", "../base"])
    assert (args.rounds, args.compare) == (4, Path("../base"))
    with pytest.raises(SystemExit):
        whole_parser().parse_args(["--rounds", "0"])
    from bench.whole import run_whole

    for extra in (["--rounds", "2"], ["--compare", "."]):
        with pytest.raises(SystemExit, match="takes no --rounds or --compare"):
            run_whole(whole_parser().parse_args(["--callgrind", *extra]))


def test_callgrind_thread_files_give_the_loop_thread_and_the_others(tmp_path: Path) -> None:
    from bench.whole_callgrind import loop_and_others, thread_totals

    (tmp_path / "callgrind.41").write_text("")  # the process's own file: no thread number
    for thread, total in ((1, 900), (2, 70), (11, 30)):
        (tmp_path / f"callgrind.41-{thread:02d}").write_text(
            f"# callgrind format\nversion: 1\nthread: {thread}\nsummary: {total}\n"
            f"fn=(1) main\n16 {total}\ntotals: {total}\n")
    assert thread_totals(tmp_path) == {1: 900, 2: 70, 11: 30}
    assert loop_and_others(thread_totals(tmp_path)) == (900, 100)
    (tmp_path / "callgrind.41-01").unlink()
    with pytest.raises(RuntimeError, match="main thread"):
        thread_totals(tmp_path)


def test_loop_owners_reads_the_wrappers_self_costs_recursion_levels_summed() -> None:
    from bench.loop_owners import NAMES, PREFIX, by_owner

    core, journal = NAMES.index("sidecar core (decisions)"), NAMES.index("sidecar journal")
    annotated = (f"289,558,540 (46.39%)  ???:{PREFIX}{journal:02d}'2 [/tmp/h/_ownerhook.so]\n"
                 f"216,583,302 (34.70%)  ???:{PREFIX}{core:02d} [/tmp/h/_ownerhook.so]\n"
                 "103,429,881 (16.57%)  /tmp/Python-3.11.7/Programs/python.c:main [python]\n"
                 f" 12,751,922 ( 2.04%)  ???:{PREFIX}{journal:02d} [/tmp/h/_ownerhook.so]\n")
    assert by_owner(annotated) == {"sidecar journal": 302_310_462,
                                   "sidecar core (decisions)": 216_583_302}


def test_loop_owners_skips_every_function_name_but_the_kept_prefixes() -> None:
    from fnmatch import fnmatchcase

    from bench.loop_owners import skip_options

    patterns = [o.removeprefix("--fn-skip=") for o in skip_options(("zz_o", "main"))]

    def skipped(name: str) -> bool:
        return any(fnmatchcase(name, p) for p in patterns)

    assert not any(skipped(n) for n in ("zz_o07", "zz_o", "main", "main.cold"))
    assert all(skipped(n) for n in ("_PyEval_EvalFrameDefault", "zz_x", "z", "ma", "mai",
                                    "0x000000000001aba0", "(below main)", "Zmain", "maiN"))
