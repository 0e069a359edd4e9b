"""OpenLineage run events, in addition to Iterum's own lineage queue (docs/openlineage.md).

One OpenLineage *run* per output fragment, the unit Iterum's lineage message describes:
START when the transformation hands the output over, COMPLETE once it is recorded (its
files uploaded, its descriptor and its lineage message confirmed by the broker), FAIL if it
is refused. Inputs are the files of its predecessors, outputs its own files, both as
datasets ``s3://<bucket>`` / ``<key>`` with the S3 ETag in a dataset-version facet and the
SHA-256 of the bytes moved in a custom ``iterum_file`` facet.

The observer runs on the loop thread and only copies plain values; a worker thread builds
the OpenLineage objects and calls the transport (console, file or HTTP), so a slow backend
never slows the loop. A full queue drops events (counted), it never blocks.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from states import INPUT
from states import InputEvent as InEv
from states import InputState as In
from states import OutputState as Out

from .. import __version__
from ..core import Core, Transition
from ..core import effects as fx
from ..core import events as ev
from .hooks import Observer
from .metrics import Metrics

log = logging.getLogger("sidecar.openlineage")
PRODUCER = f"urn:iterum-sidecar:{__version__}"
FACET_SCHEMA = "urn:iterum-sidecar:facets:IterumFragmentRunFacet:1-0-0"
FILE_FACET_SCHEMA = "urn:iterum-sidecar:facets:IterumFileDatasetFacet:1-0-0"
QUEUE_LIMIT = 10_000  # events waiting for the transport; more are dropped (and counted)
REMEMBERED_INPUTS = 10_000  # input fragments whose files are kept for late outputs
CLOSE_TIMEOUT = 10.0


@dataclass(frozen=True)
class File:
    bucket: str
    key: str
    etag: str = ""
    size: int | None = None
    sha256: str = ""  # of the bytes downloaded or uploaded (hex)


@dataclass(frozen=True)
class RunRecord:
    """Everything one OpenLineage event needs, as plain values (built on the loop thread)."""

    state: str  # START, COMPLETE, FAIL
    time: str  # ISO 8601, UTC
    fragment_id: str
    predecessors: tuple[str, ...]
    inputs: tuple[File, ...]
    outputs: tuple[File, ...]
    error: str = ""


class LineageObserver(Observer):
    """A Runner observer: turns the output lifecycle into RunRecords for the emitter (an
    ``Emitter``, closed when the Runner stops)."""

    def __init__(self, core: Core, emit: Any):
        self.core = core
        self.emit = emit
        self.downloads: dict[tuple[int, int], File] = {}  # (input serial, index)
        self.uploads: dict[tuple[int, int], File] = {}  # (output serial, index)
        self.outputs: dict[int, tuple[str, tuple[str, ...], int]] = {}  # id, preds, files
        self.inputs: OrderedDict[str, tuple[File, ...]] = OrderedDict()  # by fragment id

    def __call__(self, event: ev.Event, now: float, effects: list[fx.Effect],
                 transitions: list[Transition]) -> None:
        if isinstance(event, ev.FileDownloaded):
            self._versioned(self.downloads, (event.input_id, event.index), event)
        elif isinstance(event, ev.FileUploaded):
            self._versioned(self.uploads, (event.output_id, event.index), event)
        for e in effects:
            if isinstance(e, fx.DownloadFile):
                self.downloads[(e.input_id, e.index)] = File(e.bucket, e.key)
            elif isinstance(e, fx.UploadFile):
                self.uploads[(e.output_id, e.index)] = File(e.bucket, e.key)
        for t in transitions:
            if t.machine == "input":
                self._input(t)
            elif t.machine == "output":
                self._output(t, effects)

    def stop(self) -> None:
        self.emit.close()

    @staticmethod
    def _versioned(table: dict, key: tuple[int, int],
                   done: ev.FileDownloaded | ev.FileUploaded) -> None:
        f = table.get(key)
        if f is not None:
            table[key] = File(f.bucket, f.key, done.etag, done.size, done.sha256)

    def _input(self, t: Transition) -> None:
        if t.trigger == InEv.DOWNLOAD_DONE:
            files = sorted((k, f) for k, f in self.downloads.items() if k[0] == t.serial)
            self.inputs[t.fragment] = tuple(f for _, f in files)
            self.inputs.move_to_end(t.fragment)
            while len(self.inputs) > REMEMBERED_INPUTS:
                self.inputs.popitem(last=False)
        if t.dest in INPUT.terminal or t.dest == In.DEAD_LETTERING:
            for key in [k for k in self.downloads if k[0] == t.serial]:
                del self.downloads[key]

    def _output(self, t: Transition, effects: list[fx.Effect]) -> None:
        if t.trigger == "new":
            model = self.core.outputs.get(t.serial)
            if model is None:  # refused on arrival (and forgotten): only a FAIL follows
                self.outputs[t.serial] = (t.fragment, (), 0)
                return
            self.outputs[t.serial] = (t.fragment, tuple(model.predecessors), len(model.files))
            self._send("START", t.serial)
        elif t.serial not in self.outputs:
            return
        elif t.dest == Out.RECORDED:
            self._send("COMPLETE", t.serial)
            self._forget(t.serial)
        elif t.dest == Out.FAILED:
            error = next((e.message for e in effects if isinstance(e, fx.Log)
                          and e.fragment == t.fragment and e.level == "error"), "failed")
            self._send("FAIL", t.serial, error)
            self._forget(t.serial)

    def _send(self, state: str, serial: int, error: str = "") -> None:
        fragment_id, predecessors, count = self.outputs[serial]
        inputs = tuple(f for p in dict.fromkeys(predecessors) for f in self.inputs.get(p, ()))
        outputs = tuple(self.uploads[(serial, i)] for i in range(count)
                        if (serial, i) in self.uploads)
        self.emit(RunRecord(state, datetime.now(UTC).isoformat(), fragment_id, predecessors,
                            inputs, outputs, error))

    def _forget(self, serial: int) -> None:
        self.outputs.pop(serial, None)
        for key in [k for k in self.uploads if k[0] == serial]:
            del self.uploads[key]


class Emitter:
    """A worker thread that builds OpenLineage events and hands them to the transport."""

    def __init__(self, settings: Any, metrics: Metrics | None = None,
                 client: Any = None):
        self.namespace = settings.openlineage_namespace
        self.step = settings.iterum_name
        self.pipeline = settings.pipeline_hash
        self.metrics = metrics
        self.client = client or make_client(settings)
        self.queue: queue.Queue[RunRecord | None] = queue.Queue(QUEUE_LIMIT)
        self.failures = 0
        self.thread = threading.Thread(target=self._run, name="openlineage", daemon=True)
        self.thread.start()

    def __call__(self, record: RunRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            self._count("dropped")

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Send what is queued (up to ``timeout``), then stop the worker."""
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self.thread.join(timeout)
        try:
            self.client.close(timeout)
        except Exception as err:  # a transport that cannot close cleanly is not fatal
            log.debug("closing the OpenLineage client: %s", err)

    def _run(self) -> None:
        while (record := self.queue.get()) is not None:
            try:
                self.client.emit(build_event(record, self.namespace, self.step, self.pipeline))
            except Exception as err:  # the backend is optional: never fatal
                self.failures += 1
                self._count("failed")
                if self.failures == 1 or self.failures % 100 == 0:
                    log.warning("OpenLineage event not emitted (%d so far): %s",
                                self.failures, err, extra={"error": str(err)})
            else:
                self._count("emitted")

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.openlineage.labels(result).inc()


def make_client(settings: Any) -> Any:
    """An OpenLineageClient with the transport the settings ask for."""
    try:
        from openlineage.client import OpenLineageClient
    except ImportError:
        raise RuntimeError("SIDECAR_OPENLINEAGE needs the openlineage extra: pip install "
                           "'iterum-sidecar[openlineage]'") from None
    kind = settings.openlineage
    if kind == "console":
        from openlineage.client.transport.console import ConsoleConfig, ConsoleTransport

        transport: Any = ConsoleTransport(ConsoleConfig())
    elif kind == "file":
        from openlineage.client.transport.file import FileConfig, FileTransport

        transport = FileTransport(FileConfig(log_file_path=settings.openlineage_url,
                                             append=True))
    else:
        from openlineage.client.transport.http import HttpConfig, HttpTransport

        params: dict[str, Any] = {"url": settings.openlineage_url}
        if settings.openlineage_api_key:
            params["auth"] = {"type": "api_key", "apiKey": settings.openlineage_api_key}
        transport = HttpTransport(HttpConfig.from_dict(params))
    return OpenLineageClient(transport=transport)


def run_id(namespace: str, step: str, fragment_id: str) -> str:
    """Deterministic, like the output ids (§16.15): a re-run reports on the same run."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"iterum:{namespace}:{step}:{fragment_id}"))


@functools.cache
def _fragment_facet() -> Any:
    """The custom run facet (made once, on first use: openlineage is an optional extra)."""
    import attr
    from openlineage.client.facet_v2 import RunFacet

    @attr.define
    class IterumFragmentRunFacet(RunFacet):
        fragmentId: str
        predecessors: list[str]
        transformationStep: str

        @staticmethod
        def _get_schema() -> str:
            return FACET_SCHEMA

    return IterumFragmentRunFacet


@functools.cache
def _file_facet() -> Any:
    """The custom dataset facet with the file's SHA-256 (and size, inputs included)."""
    import attr
    from openlineage.client.facet_v2 import DatasetFacet

    @attr.define
    class IterumFileDatasetFacet(DatasetFacet):
        sha256: str
        size: int

        @staticmethod
        def _get_schema() -> str:
            return FILE_FACET_SCHEMA

    return IterumFileDatasetFacet


def build_event(r: RunRecord, namespace: str, step: str, pipeline: str) -> Any:
    from openlineage.client.event_v2 import (
        InputDataset,
        Job,
        OutputDataset,
        Run,
        RunEvent,
        RunState,
    )
    from openlineage.client.facet_v2 import (
        dataset_version_dataset,
        error_message_run,
        job_type_job,
        output_statistics_output_dataset,
        parent_run,
    )

    def version(f: File) -> dict[str, Any]:
        facets: dict[str, Any] = ({"version": dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=f.etag)} if f.etag else {})
        if f.sha256:
            facets["iterum_file"] = _file_facet()(sha256=f.sha256, size=f.size or 0)
        return facets

    run_facets: dict[str, Any] = {
        "parent": parent_run.ParentRunFacet(
            run=parent_run.Run(runId=run_id(namespace, "pipeline", pipeline)),
            job=parent_run.Job(namespace=namespace, name=pipeline)),
        "iterum_fragment": _fragment_facet()(
            fragmentId=r.fragment_id, predecessors=list(r.predecessors),
            transformationStep=step),
    }
    if r.error:
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=r.error, programmingLanguage="python")
    complete = r.state == "COMPLETE"
    return RunEvent(
        eventType=getattr(RunState, r.state),
        eventTime=r.time,
        producer=PRODUCER,
        run=Run(runId=run_id(namespace, step, r.fragment_id), facets=run_facets),
        job=Job(namespace=namespace, name=step, facets={
            "jobType": job_type_job.JobTypeJobFacet(processingType="BATCH",
                                                    integration="ITERUM", jobType="STEP")}),
        inputs=[InputDataset(namespace=f"s3://{f.bucket}", name=f.key, facets=version(f))
                for f in r.inputs],
        outputs=[OutputDataset(
            namespace=f"s3://{f.bucket}", name=f.key, facets=version(f),
            outputFacets={"outputStatistics":
                          output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                              size=f.size, fileCount=1)} if complete and f.size is not None
            else {})
            for f in r.outputs],
    )


def observer(settings: Any, core: Core, metrics: Metrics) -> LineageObserver:
    """The OpenLineage observer for a Runner, with its emitter (and its thread)."""
    emitter = Emitter(settings, metrics)
    log.info("OpenLineage: %s transport, job %s/%s", settings.openlineage,
             settings.openlineage_namespace, settings.iterum_name)
    return LineageObserver(core, emitter)
