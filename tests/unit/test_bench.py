"""The benchmark's own logic (bench/): what it reads from a real journal, the S3 request
counter, the profile summary, and the derived figures and fields of the result JSON.

Fast and offline: no broker, no S3 server, no timing asserted (benchmarks measure; these
only check that the measuring code reads and reports what it should).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from unit_driver import Driver, fid, of

from bench import report
from bench.profile import render, summarize
from bench.s3server import BENCH_AGENT, Counting, classify
from bench.scenario import _merge_transfers, _percentiles, _read_journal
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


def test_s3_operation_names() -> None:
    assert classify("POST", "b", "k", {"uploads": [""]}) == "CreateMultipartUpload"
    assert classify("POST", "b", "k", {"uploadId": ["1"]}) == "CompleteMultipartUpload"
    assert classify("GET", "b", "", {"location": [""]}) == "GetBucketLocation"
    assert classify("HEAD", "b", "k", {}) == "HeadObject"


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
