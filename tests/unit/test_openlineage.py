"""OpenLineage: a Core driven by events with the lineage observer attached, the events written
by openlineage-python's own file transport, then read back (docs/openlineage.md)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from unit_driver import IN_BUCKET, OUT_BUCKET, STEP, VOLUME, Driver, fid, of, pyterum_output

from sidecar.core import effects as fx
from sidecar.core import events as ev
from sidecar.shell.metrics import Metrics
from sidecar.shell.openlineage import Emitter, LineageObserver, make_client, run_id

pytest.importorskip("openlineage.client")

A = fid("a")
PIPELINE = "p" * 32
IN_SHA, OUT_SHA = "1" * 64, "2" * 64


class Observed(Driver):
    def __init__(self, observer_factory, **overrides):
        super().__init__(**overrides)
        self.observer = observer_factory(self.core)

    def feed(self, event, at=None):
        out = super().feed(event, at)
        self.observer(event, self.clock, out, list(self.core.transitions))
        return out


@pytest.fixture
def settings(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(openlineage="file", openlineage_url=str(tmp_path / "ol.jsonl"),
                           openlineage_namespace="iterum", openlineage_api_key="",
                           iterum_name=STEP, pipeline_hash=PIPELINE)


def run(settings: SimpleNamespace, metrics: Metrics, valid: bool = True) -> list[dict]:
    emitter = Emitter(settings, metrics, make_client(settings))
    drv = Observed(lambda core: LineageObserver(core, emitter))
    drv.start()
    drv.connect()
    out = drv.deliver_fragment(1, A, names=("cat.jpg",))
    [download] = of(out, fx.DownloadFile)
    drv.feed(ev.FileDownloaded(download.input_id, 0, size=5, etag="in-etag", sha256=IN_SHA))
    path = f"{VOLUME}/output/out.jpg" if valid else "/etc/passwd"
    out = drv.frame(pyterum_output([A], [("out.jpg", path)]))
    for upload in of(out, fx.UploadFile):
        out = drv.feed(ev.FileUploaded(upload.output_id, 0, size=42, etag="out-etag",
                                       sha256=OUT_SHA))
        [descriptor] = of(out, fx.Publish)
        [lineage] = of(drv.confirm(descriptor), fx.Publish)
        drv.confirm(lineage)
    drv.done(A)
    emitter.close()
    text = Path(settings.openlineage_url).read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_an_output_is_one_run_start_then_complete_with_versions(settings) -> None:
    metrics = Metrics()
    start, complete = run(settings, metrics)
    assert (start["eventType"], complete["eventType"]) == ("START", "COMPLETE")
    output_id = complete["run"]["facets"]["iterum_fragment"]["fragmentId"]
    assert start["run"]["runId"] == complete["run"]["runId"] == run_id("iterum", STEP, output_id)
    uuid.UUID(complete["run"]["runId"])
    assert complete["job"]["namespace"] == "iterum" and complete["job"]["name"] == STEP
    assert complete["job"]["facets"]["jobType"]["integration"] == "ITERUM"

    [inp] = complete["inputs"]
    assert (inp["namespace"], inp["name"]) == (f"s3://{IN_BUCKET}", "iterum_data/cat.jpg")
    assert inp["facets"]["version"]["datasetVersion"] == "in-etag"
    [out] = complete["outputs"]
    assert (out["namespace"], out["name"]) == (f"s3://{OUT_BUCKET}",
                                               f"iterum_data/{output_id}/out.jpg")
    assert out["facets"]["version"]["datasetVersion"] == "out-etag"
    assert out["outputFacets"]["outputStatistics"]["size"] == 42
    # the SHA-256 of the bytes moved (journalled on FileDownloaded / FileUploaded)
    assert {k: v for k, v in inp["facets"]["iterum_file"].items() if not k.startswith("_")
            } == {"sha256": IN_SHA, "size": 5}
    assert out["facets"]["iterum_file"]["sha256"] == OUT_SHA
    assert out["facets"]["iterum_file"]["_schemaURL"].endswith("IterumFileDatasetFacet:1-0-0")
    # START knows where the output goes, not yet its version
    assert [o["name"] for o in start["outputs"]] == [out["name"]]
    assert start["outputs"][0]["facets"] == {}

    facets = complete["run"]["facets"]
    assert facets["iterum_fragment"]["predecessors"] == [A]
    assert facets["parent"]["job"] == {"namespace": "iterum", "name": PIPELINE, "facets": {}}
    assert metrics.registry.get_sample_value("iterum_sidecar_openlineage_events_total",
                                             {"result": "emitted"}) == 2


def test_a_refused_output_is_a_failed_run_with_the_reason(settings) -> None:
    [fail] = run(settings, Metrics(), valid=False)
    assert fail["eventType"] == "FAIL"
    assert "not inside the data volume" in fail["run"]["facets"]["errorMessage"]["message"]


def test_a_failing_transport_is_counted_never_raised(settings) -> None:
    class Broken:
        def emit(self, _event):
            raise ConnectionError("backend down")

        def close(self, _timeout):
            return True

    metrics = Metrics()
    emitter = Emitter(settings, metrics, Broken())
    drv = Observed(lambda core: LineageObserver(core, emitter))
    drv.start()
    drv.connect()
    drv.ready_input(1, A)
    drv.output([A])
    emitter.close()
    assert metrics.registry.get_sample_value("iterum_sidecar_openlineage_events_total",
                                             {"result": "failed"}) == 1
