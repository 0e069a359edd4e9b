"""Helpers shared by the end-to-end tests: run one pipeline step, check what it published.

A step is the sidecar (`python -m sidecar`) plus one unmodified-pyterum transformation, both
started by the harness' Pipeline. The checks encode the wire contract (protocol §3.5, §5.5,
§8, §16.7, §16.15) so that every test that publishes checks the same things.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from .harness import Message, Pipeline, Proc, Transformation

HEX64 = re.compile(r"^[0-9a-f]{64}$")
TIMEOUT = 30.0  # generous: a step of a few fragments takes a few seconds


def start_step(pipeline: Pipeline, script: str, *, sidecar_env: dict[str, Any] | None = None,
               transformation_env: dict[str, Any] | None = None
               ) -> tuple[Proc, Transformation]:
    """Start the sidecar, wait for its sockets, then start the transformation (pyterum
    sleeps 5 s after a failed connect, so it is started only once the sockets exist)."""
    sidecar = pipeline.start_sidecar(**(sidecar_env or {}))
    pipeline.wait_for_sockets()
    transformation = pipeline.start_transformation(script, **(transformation_env or {}))
    return sidecar, transformation


def finish_step(pipeline: Pipeline, sidecar: Proc, transformation: Proc,
                timeout: float = TIMEOUT) -> None:
    """Tell the sidecar (through the fake manager) that upstream is done; both exit 0."""
    pipeline.finish_upstream()
    transformation.expect_exit(0, timeout)
    sidecar.expect_exit(0, timeout)


def by_predecessors(messages: list[Message]) -> dict[tuple[str, ...], list[dict]]:
    """Published descriptors grouped by their (sorted) predecessors."""
    grouped: dict[tuple[str, ...], list[dict]] = {}
    for msg in messages:
        body = msg.json()
        grouped.setdefault(tuple(sorted(body["metadata"]["predecessors"])), []).append(body)
    return grouped


def check_descriptor(pipeline: Pipeline, msg: Message, *, predecessors: list[str],
                     contents: dict[str, bytes] | None = None) -> dict:
    """One published RemoteFragmentDesc (§3.5, §5.5, §16.7, §16.15); returns the body.

    `contents` maps each expected file name to the bytes its object must hold.
    """
    body = msg.json()
    meta = body["metadata"]
    fid = meta["fragment_id"]
    assert isinstance(fid, str) and HEX64.match(fid), f"fragment_id {fid!r} is not 64 hex"
    assert msg.properties.delivery_mode == 2, msg.properties
    assert msg.properties.content_type == "application/json", msg.properties
    assert msg.properties.message_id == fid, (msg.properties.message_id, fid)
    assert isinstance(meta["predecessors"], list)
    assert sorted(meta["predecessors"]) == sorted(predecessors), body
    for f in body["files"]:
        assert set(f) == {"name", "path", "bucket"}, f
        assert f["bucket"] == pipeline.output_bucket, f
        assert f["path"] == f"iterum_data/{fid}/{f['name']}", f
    if contents is not None:
        assert sorted(f["name"] for f in body["files"]) == sorted(contents), body["files"]
        for f in body["files"]:
            assert pipeline.read(f) == contents[f["name"]], f"object {f} has the wrong content"
    return body


def check_lineage_shape(lineage: dict) -> None:
    """What the manager's provenance tracker deserialises (§8, RS FragmentLineage)."""
    assert set(lineage) == {"transformation_step", "description"}, lineage.keys()
    assert isinstance(lineage["transformation_step"], str)
    desc = lineage["description"]
    meta = desc["metadata"]
    assert isinstance(meta["fragment_id"], str)
    preds = meta["predecessors"]
    assert isinstance(preds, list) and all(isinstance(p, str) for p in preds), preds
    assert isinstance(desc["files"], list)
    for f in desc["files"]:
        for key in ("name", "path", "bucket"):
            assert isinstance(f.get(key), str), f"file field {key!r} is not a string: {f}"


def check_lineage(pipeline: Pipeline, outputs: list[Message], lineage: list[Message]) -> None:
    """Exactly one lineage message per published descriptor, describing it exactly (§3.8)."""
    published = sorted((m.json() for m in outputs), key=lambda b: b["metadata"]["fragment_id"])
    raw = {m.json()["metadata"]["fragment_id"]: m.body for m in outputs}
    described = []
    for msg in lineage:
        fid = msg.json()["description"]["metadata"]["fragment_id"]
        assert fid in raw and raw[fid] in msg.body, "the description is not the published body"
        assert msg.properties.delivery_mode == 2, msg.properties
        assert msg.properties.content_type == "application/json", msg.properties
        body = msg.json()
        check_lineage_shape(body)
        assert body["transformation_step"] == pipeline.name
        described.append(body["description"])
    described.sort(key=lambda b: b["metadata"]["fragment_id"])
    assert described == published


def dead_letters(pipeline: Pipeline, count: int | None = None,
                 timeout: float = 30.0) -> list[Message]:
    """Take the dead letters off `<input queue>-dead` (the sidecar declares it at its first
    dead letter: none yet means an empty list)."""
    if count is None and not pipeline.rabbit.exists(pipeline.dead_queue):
        return []
    if count is not None:
        wait_until(lambda: pipeline.rabbit.exists(pipeline.dead_queue), timeout)
    return pipeline.rabbit.drain(pipeline.dead_queue, count, timeout)


def volume_files(volume: Path) -> list[str]:
    """Every regular file left on the volume, relative to it (sockets are not regular),
    except the sidecar's own journal under `.sidecar/` (docs/debugging.md), which stays."""
    return sorted(str(p.relative_to(volume)) for p in volume.rglob("*")
                  if p.is_file() and p.relative_to(volume).parts[0] != ".sidecar")


def log_lines(text: str, level: str) -> list[str]:
    """Lines of the sidecar's log at one level (format: `<time> LEVEL logger: message`)."""
    return [ln for ln in text.splitlines() if f" {level} " in ln]


def wait_until(predicate, timeout: float = 15.0, interval: float = 0.1) -> bool:
    """Poll `predicate` until it is true (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


# --- the sidecar's HTTP endpoint (docs/operations.md) ----------------------------------------


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def endpoint(proc: Proc, path: str) -> tuple[int, Any]:
    status, body = http_get(proc.http_url + path)
    return status, (body.decode() if path == "/metrics" else json.loads(body))


def metrics(proc: Proc) -> dict[tuple[str, tuple], float]:
    _, text = endpoint(proc, "/metrics")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
