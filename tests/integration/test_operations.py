"""Operating a real sidecar: /metrics, /healthz, /readyz and /debug/fragments during a run,
JSON logs, intake paused while the transformation is gone, OpenLineage events through the
file transport, and `iterum-sidecar demo` end to end. Real RabbitMQ, real S3 over HTTP
(moto), the unmodified pyterum passthrough."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .harness import C2B, Pipeline, Proc, S3Server
from .harness.pipeline import REPO, base_env
from .steps import endpoint, metric, metrics

pytestmark = pytest.mark.integration
TIMEOUT = 30.0


# --- helpers ---------------------------------------------------------------------------------


def eventually(check, timeout: float = TIMEOUT, what: str = "condition"):
    """Poll `check()` until it returns something truthy; return that (no timing asserted)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (OSError, ValueError):  # the endpoint is not up yet
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(0.1)


def run_passthrough(pipeline: Pipeline, n: int, **sidecar_env: str) -> tuple[Proc, Any, list]:
    """Send n one-file inputs, run the step, return the sidecar, transformation, inputs."""
    inputs = [pipeline.send_input({f"in{i}.txt": f"payload {i}\n" * 20}) for i in range(n)]
    sidecar = pipeline.start_sidecar(**sidecar_env)
    pipeline.wait_for_sockets()
    transformation = pipeline.start_transformation("passthrough")
    return sidecar, transformation, inputs


def finish(pipeline: Pipeline, sidecar: Proc, transformation: Proc) -> None:
    pipeline.finish_upstream()
    transformation.expect_exit(0, TIMEOUT)
    sidecar.expect_exit(0, TIMEOUT)


# --- the HTTP endpoint -----------------------------------------------------------------------


def test_metrics_probes_and_debug_of_a_running_sidecar(pipeline: Pipeline) -> None:
    sidecar = pipeline.start_sidecar()
    pipeline.wait_for_sockets()
    assert eventually(lambda: endpoint(sidecar, "/healthz")[0] == 200, what="/healthz 200")
    # the broker is connected, but no transformation yet: alive, not ready
    status, body = eventually(lambda: (r := endpoint(sidecar, "/readyz"))[1]["checks"]["broker"]
                              and r, what="broker connected")
    assert status == 503
    assert body["checks"]["transformation"] is False

    transformation = pipeline.start_transformation("passthrough")
    status, body = eventually(lambda: (r := endpoint(sidecar, "/readyz"))[0] == 200 and r,
                              what="/readyz 200")
    assert body["checks"] == {"broker": True, "storage": True, "transformation": True,
                              "volume": True}

    for i in range(3):
        pipeline.send_input({f"m{i}.txt": f"data {i}\n" * 100})
    assert len(pipeline.outputs(3)) == 3
    samples = eventually(
        lambda: (s := metrics(sidecar)) and metric(
            s, "iterum_sidecar_fragments_total", lifecycle="input", outcome="acked") == 3
        and s, what="3 inputs acked in /metrics")
    assert metric(samples, "iterum_sidecar_fragments_total", lifecycle="output",
                  outcome="recorded") == 3
    assert metric(samples, "iterum_sidecar_s3_requests_total", operation="GetObject",
                  result="200") == 3
    assert metric(samples, "iterum_sidecar_s3_requests_total", operation="PutObject",
                  result="200") == 3
    assert metric(samples, "iterum_sidecar_transfer_bytes_total", direction="download") == 3 * 700
    assert metric(samples, "iterum_sidecar_transfer_bytes_total", direction="upload") == 3 * 700
    # a descriptor and a lineage message per output, each confirmed by the broker
    assert metric(samples, "iterum_sidecar_confirm_seconds_count", result="ack") == 6
    assert metric(samples, "iterum_sidecar_fragment_latency_seconds_count", outcome="acked") == 3
    assert metric(samples, "iterum_sidecar_state_seconds_count", lifecycle="input",
                  state="dispatched") == 3
    assert metric(samples, "iterum_sidecar_transformation_connected") == 1
    assert metric(samples, "iterum_sidecar_volume_free_bytes") > 0
    assert metric(samples, "iterum_sidecar_fragments_in_flight", lifecycle="input",
                  state="dispatched") == 0
    assert metric(samples, "iterum_sidecar_info", version="0.1.0", step=pipeline.name) == 1

    status, debug = eventually(
        lambda: (r := endpoint(sidecar, "/debug/fragments"))[1]["totals"].get(
            "input acked") == 3 and r, what="totals in /debug/fragments")
    assert status == 200
    assert debug["step"] == "consuming" and debug["in_flight"] == []
    assert debug["intake"] == "consuming"
    finish(pipeline, sidecar, transformation)


def test_debug_fragments_shows_a_fragment_in_the_transformation(pipeline: Pipeline) -> None:
    """A transformation that never answers: its fragment is `dispatched`, with an age."""
    body = pipeline.send_input({"slow.txt": "x"})
    sidecar = pipeline.start_sidecar(SIDECAR_STUCK_AFTER="0.5")
    pipeline.wait_for_sockets()
    fid = body["metadata"]["fragment_id"]
    # a raw client on the sockets stands in for a transformation that hangs
    tts = socket.socket(socket.AF_UNIX)
    tts.connect(str(pipeline.volume / "tts.sock"))
    fts = socket.socket(socket.AF_UNIX)
    fts.connect(str(pipeline.volume / "fts.sock"))
    try:
        _, debug = eventually(
            lambda: (r := endpoint(sidecar, "/debug/fragments"))[1]["in_flight"]
            and r[1]["in_flight"][0]["stuck"] and r, what="a stuck dispatched fragment")
        [fragment] = debug["in_flight"]
        assert (fragment["fragment_id"], fragment["state"], fragment["lifecycle"]) == (
            fid, "dispatched", "input")
        assert fragment["in_state_seconds"] >= 0.5
        sidecar.wait_for_log(r"\[stuck-input-dispatched\] .* fragment=" + fid)
        samples = metrics(sidecar)
        assert metric(samples, "iterum_sidecar_stuck_fragments_total", lifecycle="input",
                      state="dispatched") == 1
        assert fid not in endpoint(sidecar, "/metrics")[1]  # never a label
    finally:
        tts.close()
        fts.close()
    sidecar.stop()


def test_intake_pauses_while_the_transformation_is_gone(pipeline: Pipeline,
                                                        amqp_proxy) -> None:
    pipeline.broker_url = amqp_proxy.url()
    sidecar, transformation, _ = run_passthrough(pipeline, 2)
    assert len(pipeline.outputs(2)) == 2
    transformation.kill()  # gone without a kill message
    _, body = eventually(lambda: (r := endpoint(sidecar, "/readyz"))[0] == 503
                              and r[1]["paused"] and r, what="paused and not ready")
    assert body["paused"] == ["transformation-absent"]
    assert body["checks"]["transformation"] is False
    amqp_proxy.wait_for("basic.cancel-ok", 1)
    pipeline.send_input({"while-away.txt": "queued"})
    time.sleep(0.5)
    assert pipeline.rabbit.ready(pipeline.input_queue) == 1  # not taken while paused

    transformation = pipeline.start_transformation("passthrough")
    assert len(pipeline.outputs(1)) == 1
    assert amqp_proxy.count("basic.consume", C2B) == 2  # resumed on the same channel
    samples = metrics(sidecar)
    assert metric(samples, "iterum_sidecar_intake_paused", reason="transformation-absent") == 0
    finish(pipeline, sidecar, transformation)


# --- logs ------------------------------------------------------------------------------------


def test_logs_are_json_lines_without_a_terminal(pipeline: Pipeline) -> None:
    pipeline.send_input({"ok.txt": "fine"})
    missing = pipeline.publish_fragment([{"name": "gone.txt", "path": "iterum_data/gone.txt",
                                          "bucket": pipeline.input_bucket}])
    sidecar, transformation, _ = run_passthrough(pipeline, 0, SIDECAR_LOG_FORMAT="auto",
                                                 SIDECAR_LOG_LEVEL="INFO")
    assert len(pipeline.outputs(1)) == 1
    finish(pipeline, sidecar, transformation)
    lines = [json.loads(line) for line in sidecar.stderr.splitlines()]  # every line is JSON
    assert lines and all({"time", "level", "logger", "message"} <= set(d) for d in lines)
    [dead] = [d for d in lines if d.get("code", "").startswith("dead-letter-")]
    assert dead["code"] == "dead-letter-missing-object"
    assert dead["level"] == "ERROR" and dead["logger"] == "sidecar.core"
    assert dead["fragment"] == missing["metadata"]["fragment_id"]
    assert dead["state"] == "dead_lettering" and dead["event"] == "DownloadFailed"
    assert any(d["message"].startswith("exiting with code 0") for d in lines)
    assert pipeline.s3.secret_key not in sidecar.stderr
    assert pipeline.rabbit.drain(pipeline.dead_queue, 1)


# --- OpenLineage -----------------------------------------------------------------------------


def test_openlineage_file_transport_for_a_real_run(pipeline: Pipeline, tmp_path: Path) -> None:
    pytest.importorskip("openlineage.client")
    events_file = tmp_path / "openlineage.jsonl"
    sidecar, transformation, inputs = run_passthrough(
        pipeline, 2, SIDECAR_OPENLINEAGE="file", SIDECAR_OPENLINEAGE_URL=str(events_file))
    outputs = [m.json() for m in pipeline.outputs(2)]
    finish(pipeline, sidecar, transformation)

    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert sorted(e["eventType"] for e in events) == ["COMPLETE", "COMPLETE", "START", "START"]
    inputs_by_id = {b["metadata"]["fragment_id"]: b for b in inputs}
    for out in outputs:
        fid = out["metadata"]["fragment_id"]
        [complete] = [e for e in events if e["eventType"] == "COMPLETE"
                      and e["run"]["facets"]["iterum_fragment"]["fragmentId"] == fid]
        assert complete["job"]["name"] == pipeline.name
        [pred] = out["metadata"]["predecessors"]
        [in_file] = inputs_by_id[pred]["files"]
        [dataset] = complete["inputs"]
        assert (dataset["namespace"], dataset["name"]) == (f"s3://{in_file['bucket']}",
                                                           in_file["path"])
        etag = pipeline.minio.stat_object(in_file["bucket"], in_file["path"]).etag
        assert dataset["facets"]["version"]["datasetVersion"] == etag.strip('"')
        [out_file] = out["files"]
        [written] = complete["outputs"]
        assert (written["namespace"], written["name"]) == (f"s3://{out_file['bucket']}",
                                                           out_file["path"])
        etag = pipeline.minio.stat_object(out_file["bucket"], out_file["path"]).etag
        assert written["facets"]["version"]["datasetVersion"] == etag.strip('"')


# --- the demo --------------------------------------------------------------------------------


def test_demo_runs_end_to_end_and_prints_the_summary(tmp_path: Path) -> None:
    """Two demos at once on this host: each sidecar takes a free port of the kernel's
    choosing (SIDECAR_HTTP_PORT=auto), so they cannot clash, and each demo names its own."""
    demos = []
    for i in range(2):
        (cwd := tmp_path / f"demo{i}").mkdir()
        demos.append(subprocess.Popen(
            [sys.executable, "-m", "sidecar", "demo", "--fragments", "5"], cwd=cwd,
            env=demo_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            stdin=subprocess.DEVNULL))
    endpoints = []
    for demo in demos:
        out, err = demo.communicate(timeout=240)
        assert demo.returncode == 0, out + err
        assert_demo_ok(out, 5)
        [row] = [ln for ln in out.splitlines() if "sidecar HTTP endpoint" in ln]
        endpoints += re.findall(r"http://127\.0\.0\.1:\d+", row)
    assert len(endpoints) == len(set(endpoints)) == 2, endpoints


@pytest.mark.s3  # also on RGW
def test_demo_against_an_external_s3_endpoint_with_the_sidecars_keys(
        tmp_path: Path, s3: S3Server) -> None:
    keys = tmp_path / "secret"
    keys.write_text(s3.secret_key + "\n")  # a _FILE variant, as the sidecar reads it
    out = run_demo(tmp_path, "--s3-endpoint", s3.endpoint, MINIO_ACCESS_KEY=s3.access_key,
                   MINIO_SECRET_KEY_FILE=str(keys))
    assert_demo_ok(out, 5)
    assert s3.endpoint in out
    assert s3.count("PutObject", include_harness=True) >= 10  # inputs and outputs went there
    assert s3.count("GetObject") >= 5
    # the run's buckets are removed at the end, as its queues are; --keep-buckets keeps them
    client = s3.harness_client()
    buckets = demo_buckets(out)
    assert f"removed the demo's buckets {' and '.join(buckets)}" in " ".join(out.split())
    assert not any(client.bucket_exists(b) for b in buckets), buckets
    kept = run_demo(tmp_path, "--s3-endpoint", s3.endpoint, "--keep-buckets",
                    MINIO_ACCESS_KEY=s3.access_key, MINIO_SECRET_KEY_FILE=str(keys))
    assert_demo_ok(kept, 5)
    inputs, outputs = demo_buckets(kept)
    assert len(list(client.list_objects(inputs, recursive=True))) == 5
    assert len(list(client.list_objects(outputs, recursive=True))) == 5
    assert "removed the demo's buckets" not in kept

    keys.write_text("not-the-secret\n")  # the server checks: one line, exit 1
    wrong = subprocess.run([sys.executable, "-m", "sidecar", "demo", "--s3-endpoint",
                            s3.endpoint], cwd=tmp_path, capture_output=True, text=True,
                           env=demo_env(MINIO_ACCESS_KEY=s3.access_key,
                                        MINIO_SECRET_KEY_FILE=str(keys)),
                           timeout=60, stdin=subprocess.DEVNULL)
    assert wrong.returncode == 1 and f"S3 at {s3.url} failed" in wrong.stderr, wrong.stderr
    assert len(wrong.stderr.splitlines()) == 1 and "not-the-secret" not in wrong.stderr


def test_demo_refuses_a_bad_s3_endpoint_or_missing_keys_in_one_line(tmp_path: Path) -> None:
    for args, env, named in ((["--s3-endpoint", "127.0.0.1:9000"], {}, "--s3-endpoint"),
                             (["--s3-endpoint", "http://127.0.0.1:9"], {}, "MINIO_ACCESS_KEY")):
        result = subprocess.run([sys.executable, "-m", "sidecar", "demo", *args],
                                cwd=tmp_path, env=demo_env(**env), capture_output=True,
                                text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert result.returncode == 1 and named in result.stderr, result.stderr
        assert len(result.stderr.splitlines()) == 1, result.stderr


def demo_buckets(out: str) -> tuple[str, str]:
    """The input and output buckets of the demo run that printed ``out``."""
    [run_hash] = set(re.findall(r"pipeline run ([a-z0-9]{32})", out))
    return f"{run_hash}-fragmenter-output", f"{run_hash}-demo-step-output"


def demo_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in base_env().items() if not k.startswith("SIDECAR_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["COLUMNS"] = "120"
    return {**env, **extra}


def run_demo(tmp_path: Path, *args: str, **env: str) -> str:
    result = subprocess.run([sys.executable, "-m", "sidecar", "demo", "--fragments", "5", *args],
                            cwd=tmp_path, env=demo_env(**env), capture_output=True, text=True,
                            timeout=240, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def assert_demo_ok(out: str, fragments: int) -> None:
    assert "summary" in out
    for label, value in (("input fragments sent", fragments),
                         ("output descriptors published", fragments),
                         ("lineage messages", fragments), ("output objects in S3", fragments),
                         ("dead letters", 0), ("inputs left in the queue", 0),
                         ("sidecar exit code", 0)):
        [row] = [ln for ln in out.splitlines() if label in ln]
        assert row.split()[-2 if row.rstrip().endswith("│") else -1] == str(value), row
    assert "lineage of pipeline run" in out
    assert out.count("output ") >= fragments and f"sample_{fragments - 1:04d}.txt" in out
    assert "demo: OK" in out


def test_sidecars_side_by_side_each_get_a_port_of_their_own(
        pipeline: Pipeline, s3, rabbit, fake_manager, tmp_path: Path) -> None:
    """SIDECAR_HTTP_PORT=auto (the harness's default): each sidecar's log line names the
    port the kernel gave it, and each endpoint answers there."""
    others = []
    for i in range(2):
        (tmp_path / f"other{i}").mkdir()
        others.append(Pipeline(tmp_path / f"other{i}", s3, rabbit, fake_manager))
    try:
        sidecars = [p.start_sidecar() for p in (pipeline, *others)]
        urls = [s.http_url for s in sidecars]
        assert len(set(urls)) == 3, urls
        for sidecar in sidecars:
            assert eventually(lambda s=sidecar: endpoint(s, "/healthz")[0] == 200)
            sidecar.terminate()
            sidecar.expect_exit(0, TIMEOUT)
    finally:
        for other in others:
            other.cleanup()


def test_a_taken_http_port_ends_the_start_with_one_line(pipeline: Pipeline) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        sidecar = pipeline.start_sidecar(SIDECAR_HTTP_PORT=str(port))
        sidecar.expect_exit(1, TIMEOUT)
    assert "Traceback" not in sidecar.logs
    [line] = [ln for ln in sidecar.stderr.splitlines() if " ERROR " in ln]
    assert "cannot start" in line and f"127.0.0.1:{port} (SIDECAR_HTTP_PORT)" in line
    assert "set SIDECAR_HTTP_PORT to a free port, to `auto` for any free one" in line, line
    assert "or to 0 to switch the endpoint off" in line, line
    assert not (pipeline.volume / "tts.sock").exists()
